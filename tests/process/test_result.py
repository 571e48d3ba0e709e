"""result.json: parsing (never fatal) and dynamic routing (only what the rule allows)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mercury.config.models import Rule
from mercury.process import result as result_module
from mercury.process.result import (
    Notification,
    RoutingDecision,
    RoutingRequest,
    apply_routing,
    parse_result,
    read_result,
)


def _parse(value: Any) -> result_module.ModuleResult:
    return parse_result(json.dumps(value))


def test_notification_and_routing_are_read() -> None:
    parsed = _parse(
        {
            "score": 0.93,
            "__mercure_notification": {"text": "nodule found", "requested": True},
            "__mercure_routing": {"target": ["pacs", "ai", "pacs"]},
        }
    )
    assert parsed.problems == ()
    assert parsed.data is not None
    assert parsed.data["score"] == 0.93
    assert parsed.notification == Notification(text="nodule found", requested=True)
    assert parsed.routing == RoutingRequest(targets=("pacs", "ai"))


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        ({"discard": True}, RoutingRequest(discard=True)),
        ({"target": "pacs"}, RoutingRequest(targets=("pacs",))),
        ({"use_alternate_target": True}, RoutingRequest(use_alternate_target=True)),
    ],
)
def test_routing_forms(routing: dict[str, Any], expected: RoutingRequest) -> None:
    parsed = _parse({"__mercure_routing": routing})
    assert parsed.routing == expected
    assert parsed.problems == ()


def test_no_reserved_keys() -> None:
    parsed = _parse({"findings": []})
    assert parsed.notification is None
    assert parsed.routing is None
    assert parsed.problems == ()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON at line 1, column 2"),
        ("[1, 2]", "must hold a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("", "not valid JSON"),
    ],
)
def test_malformed_files_are_reported(content: str | bytes, problem: str) -> None:
    parsed = parse_result(content)
    assert parsed.data is None
    assert len(parsed.problems) == 1
    assert problem in parsed.problems[0]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"__mercure_routing": "pacs"}, "__mercure_routing must be one of"),
        ({"__mercure_routing": {}}, "exactly one of"),
        ({"__mercure_routing": {"discard": True, "target": "x"}}, "exactly one of"),
        ({"__mercure_routing": {"target": 5}}, "target must be a target name"),
        ({"__mercure_routing": {"target": []}}, "target must be a target name"),
        ({"__mercure_routing": {"discard": "yes"}}, "discard must be true"),
        ({"__mercure_notification": "hello"}, "must be an object"),
    ],
)
def test_malformed_reserved_keys_are_reported(value: dict[str, Any], problem: str) -> None:
    parsed = _parse(value)
    assert parsed.data == value  # the rest of the file is still there
    assert parsed.routing is None
    assert any(problem in text for text in parsed.problems), parsed.problems


def test_notification_fields_are_checked() -> None:
    parsed = _parse({"__mercure_notification": {"text": 5, "requested": "yes"}})
    assert parsed.notification == Notification(text="", requested=False)
    assert len(parsed.problems) == 2


def test_read_result_from_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_result(tmp_path) == result_module.ModuleResult()
    (tmp_path / "result.json").write_text('{"__mercure_routing": {"discard": true}}')
    assert read_result(tmp_path).routing == RoutingRequest(discard=True)
    monkeypatch.setattr(result_module, "MAX_RESULT_BYTES", 10)
    assert "larger than" in read_result(tmp_path).problems[0]
    (tmp_path / "result.json").unlink()
    os.symlink("/etc/hostname", tmp_path / "result.json")
    assert "not a regular file" in read_result(tmp_path).problems[0]


def _rule(**fields: Any) -> Rule:
    base: dict[str, Any] = {
        "rule": "True",
        "action": "both",
        "target": ["pacs"],
        "processing_module": ["ai"],
        "dynamic_routing": True,
    }
    return Rule.model_validate(base | fields)


def test_without_a_request_the_rule_decides() -> None:
    assert apply_routing(_rule(), None) == RoutingDecision(targets=("pacs",))
    process = _rule(action="process", target=[])
    assert apply_routing(process, None) == RoutingDecision(targets=())


def test_requests_are_ignored_without_dynamic_routing() -> None:
    decision = apply_routing(_rule(dynamic_routing=False), RoutingRequest(discard=True))
    assert decision.targets == ("pacs",)
    assert not decision.discard
    assert "does not enable dynamic_routing: ignored" in decision.messages[0]


def test_discard_and_alternate_target() -> None:
    assert apply_routing(_rule(), RoutingRequest(discard=True)) == RoutingDecision(
        targets=(), discard=True, from_module=True
    )
    alternate = RoutingRequest(use_alternate_target=True)
    decision = apply_routing(_rule(conditional_alternate_target="review"), alternate)
    assert decision == RoutingDecision(targets=("review",), from_module=True)
    decision = apply_routing(_rule(), alternate)
    assert decision.targets == ("pacs",)
    assert "no conditional_alternate_target" in decision.messages[0]


def test_requested_targets_must_be_allowed() -> None:
    rule = _rule(dynamic_routing_allowed_targets=["ai_store", "review"])
    decision = apply_routing(rule, RoutingRequest(targets=("review", "X")))
    assert decision.targets == ("review",)
    assert decision.from_module
    assert decision.messages == (
        "module asked for target X, which is not in dynamic_routing_allowed_targets: ignored",
    )
    refused = apply_routing(rule, RoutingRequest(targets=("X",)))
    assert refused.targets == ("pacs",)
    assert not refused.from_module
    assert refused.messages[-1] == "no requested target is allowed: the rule's targets are used"


def test_empty_allow_list_allows_every_defined_target() -> None:
    decision = apply_routing(
        _rule(), RoutingRequest(targets=("ai_store", "typo")), defined_targets={"pacs", "ai_store"}
    )
    assert decision.targets == ("ai_store",)
    assert decision.messages == ("module asked for target typo, which is not defined: ignored",)
    process = _rule(action="process", target=[])
    assert apply_routing(process, RoutingRequest(targets=("ai_store",))).targets == ("ai_store",)
