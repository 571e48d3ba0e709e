"""Saving: round trips, readable stable output, atomic replacement."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mercury.config import MercuryConfig, config_from_data, dump_config, load_config, save_config
from mercury.config.base import NAME_PATTERN
from mercury.config.yaml_io import load_yaml
from tests.config.support import FULL


def test_round_trip_through_another_folder(tmp_path: Path) -> None:
    original = load_config(FULL)
    target = tmp_path / "elsewhere" / "mercury.yaml"
    save_config(original, target)
    assert load_config(target) == original


def test_round_trip_with_every_default_written(tmp_path: Path) -> None:
    original = load_config(FULL)
    save_config(original, tmp_path / "full.yaml", include_defaults=True)
    assert load_config(tmp_path / "full.yaml") == original
    text = (tmp_path / "full.yaml").read_text()
    assert "max_associations: 64" in text
    assert "evaluate_on: first_instance" in text


def test_secrets_are_written_out() -> None:
    text = dump_config(load_config(FULL))
    for secret in ("web-token-123", "sftp-password-456", "xnat-password-789", "s3-secret-000"):
        assert secret in text
    assert "*****" not in text


def test_output_order_is_stable_and_readable() -> None:
    config = load_config(FULL)
    text = dump_config(config)
    assert text == dump_config(load_config(FULL))
    data, _ = load_yaml(text)
    assert list(data) == [
        "appliance_name",
        "appliance_color",
        "receiver",
        "storage",
        "timings",
        "processing",
        "notifications",
        "targets",
        "modules",
        "rules",
    ]
    assert list(data["rules"]) == ["ct_head", "mr_study", "catch_all"]
    assert list(data["targets"]["pacs"]) == ["target_type", "ip", "port", "aet_target", "contact"]
    assert (
        "  ct_head:\n    rule: tags.Modality == 'CT' and 'HEAD' in tags.BodyPartExamined\n" in text
    )
    assert "    target: [web, bucket]\n" in text
    assert "    notification_payload_body: |\n      Study {{ acc }}\n      done\n" in text
    assert "  series_complete_trigger: 30\n" in text  # not 30.0
    assert "offpeak_start: '21:00'" in text  # quoted for YAML 1.1 readers too


def test_defaults_are_left_out() -> None:
    assert dump_config(MercuryConfig()).splitlines()[-1] == "{}"
    text = dump_config(MercuryConfig.model_validate({"receiver": {"port": 104}}))
    assert text.endswith("receiver:\n  port: 104\n")


def test_new_file_is_private_and_nothing_is_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "mercury.yaml"
    save_config(load_config(FULL), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["mercury.yaml"]


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "mercury.yaml"
    path.write_text("{}\n")
    path.chmod(0o640)
    save_config(load_config(FULL), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "test-router" in path.read_text()


def test_failed_save_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mercury.yaml"
    path.write_text("appliance_name: old\n")

    def broken_replace(source: Any, destination: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        save_config(load_config(FULL), path)
    assert path.read_text() == "appliance_name: old\n"
    assert os.listdir(tmp_path) == ["mercury.yaml"]


tricky_text = st.one_of(
    st.sampled_from(["yes", "no", "on", "22:00", "06:00", "null", "~", "1e3", "0x10", "010", ""]),
    st.sampled_from(["'quoted'", '"double"', "a: b", "- item", "#hash", "multi\nline\n", " pad "]),
    st.text(max_size=30),
)
names = st.from_regex(NAME_PATTERN, fullmatch=True)


@settings(max_examples=60)
@given(
    name=names,
    comment=tricky_text,
    expression=tricky_text,
    port=st.integers(min_value=1, max_value=65535),
    retention=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    password=st.text(min_size=1, max_size=20),
)
def test_any_config_survives_save_and_load(
    *,
    name: str,
    comment: str,
    expression: str,
    port: int,
    retention: float,
    password: str,
) -> None:
    config = MercuryConfig.model_validate(
        {
            "appliance_name": comment,
            "timings": {"retention": retention},
            "targets": {
                name: {
                    "target_type": "sftp",
                    "folder": "/x",
                    "user": "u",
                    "host": "h",
                    "password": password,
                    "comment": comment,
                },
                "pacs": {"target_type": "dicom", "ip": "h", "port": port, "aet_target": "PACS"},
            },
            "rules": {
                name: {
                    "rule": f"tags.SeriesDescription == {expression!r}",
                    "target": [name, "pacs"],
                    "comment": comment,
                }
            },
        }
    )
    text = dump_config(config)
    yaml.safe_load(text)  # also readable by a plain YAML 1.1 parser
    data, _ = load_yaml(text)
    assert config_from_data(data, source="round trip") == config
