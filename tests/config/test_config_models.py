"""The models on their own: names, secrets, normalisation, direct construction."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mercury.config import MercuryConfig, load_config
from mercury.config.base import NAME_PATTERN
from mercury.config.errors import issues_from_validation_error
from mercury.config.models import StorageConfig
from mercury.config.rules import Rule
from tests.config.support import FULL

SECRETS = ("web-token-123", "sftp-password-456", "xnat-password-789", "s3-secret-000")

valid_names = st.from_regex(NAME_PATTERN, fullmatch=True)
invalid_names = st.text(min_size=0, max_size=20).filter(
    lambda name: re.fullmatch(NAME_PATTERN, name) is None
)


def test_secrets_stay_out_of_repr_str_and_json() -> None:
    config = load_config(FULL)
    for text in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        for secret in SECRETS:
            assert secret not in text
    assert "**********" in config.model_dump_json()


def test_database_password_is_masked_in_repr() -> None:
    storage = StorageConfig(database="postgresql+psycopg://mercury:s3cr3t@db:5432/mercury")
    assert "s3cr3t" not in repr(storage)
    assert "postgresql+psycopg://mercury:***@db:5432/mercury" in repr(storage)
    assert storage.database.endswith("mercury:s3cr3t@db:5432/mercury")


def test_validation_error_text_never_echoes_input() -> None:
    with pytest.raises(ValidationError) as caught:
        MercuryConfig.model_validate(
            {
                "targets": {
                    "x": {
                        "target_type": "xnat",
                        "project_id": "p",
                        "host": "h",
                        "user": "u",
                        "password": ["leaked-secret"],
                    }
                }
            }
        )
    assert "leaked-secret" not in str(caught.value)


@given(valid_names)
def test_valid_names_are_accepted(name: str) -> None:
    config = MercuryConfig.model_validate(
        {
            "targets": {name: {"target_type": "dummy"}},
            "rules": {name: {"target": name}},
            "modules": {name: {"docker_tag": "a/b"}},
        }
    )
    assert config.rules[name].target == [name]


@given(invalid_names)
def test_invalid_names_are_rejected_with_their_location(name: str) -> None:
    data: dict[str, Any] = {"targets": {name: {"target_type": "dummy"}}}
    with pytest.raises(ValidationError) as caught:
        MercuryConfig.model_validate(data)
    issues = issues_from_validation_error(caught.value, data, root=MercuryConfig)
    assert [issue.location for issue in issues] == [f"targets.{name}"]
    assert (
        issues[0].message == f"{name!r} is not a valid name: use only letters, digits, '_' and '-'"
    )


@pytest.mark.parametrize(
    ("given_value", "stored"),
    [("pacs", ["pacs"]), ("", []), (None, []), (["a", "b"], ["a", "b"])],
)
def test_rule_names_accept_mercure_spellings(given_value: Any, stored: list[str]) -> None:
    rule = Rule.model_validate(
        {"target": given_value, "disabled": True, "dynamic_routing_allowed_targets": given_value}
    )
    assert rule.target == stored
    assert rule.dynamic_routing_allowed_targets == stored


def test_rule_defaults_match_mercure() -> None:
    rule = Rule(disabled=True)
    assert (rule.rule, rule.action, rule.action_trigger, rule.priority) == (
        "False",
        "route",
        "series",
        "normal",
    )
    assert rule.notification_trigger_reception
    assert rule.notification_trigger_completion
    assert rule.notification_trigger_error
    assert not rule.notification_trigger_completion_on_request
    assert rule.study_force_completion_action == "discard"
    assert (rule.stop_after, rule.evaluate_on) == (False, "first_instance")
    assert rule.conditional_alternate_target is None


def test_settings_for_step() -> None:
    shared = Rule(disabled=True, processing_settings={"a": 1})
    assert shared.settings_for_step(0) == shared.settings_for_step(3) == {"a": 1}
    per_step = Rule(disabled=True, processing_settings=[{"a": 1}, {"b": 2}])
    assert [per_step.settings_for_step(i) for i in range(3)] == [{"a": 1}, {"b": 2}, {}]


def test_direct_construction_checks_references() -> None:
    data = {
        "targets": {"pacs": {"target_type": "dummy"}},
        "rules": {"ct_rule": {"target": "pacs2"}},
    }
    with pytest.raises(ValidationError) as caught:
        MercuryConfig.model_validate(data)
    issues = issues_from_validation_error(caught.value, data, root=MercuryConfig)
    assert [str(issue) for issue in issues] == [
        "rules.ct_rule.target: unknown target 'pacs2'; did you mean 'pacs'?"
    ]


def test_assignment_is_validated() -> None:
    config = MercuryConfig()
    with pytest.raises(ValidationError):
        config.receiver.port = 0
