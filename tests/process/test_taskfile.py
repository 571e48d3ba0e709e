"""task.json: mercure's exact key set, and the values a module reads from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mercury import __version__
from mercury.config.mercure_entries import Findings, map_module
from mercury.config.models import Module, Rule
from mercury.process.taskfile import (
    TASK_KEYS,
    build_task,
    merge_settings,
    module_config,
    study_info,
    write_task,
)
from mercury.store.models import SeriesRow, StudyRow

KEYS = json.loads((Path(__file__).parent / "fixtures" / "mercure_task_keys.json").read_text())

TAGS = {
    "SeriesInstanceUID": "1.2.3.4",
    "StudyInstanceUID": "1.2.3",
    "PatientName": "Doe^Jane",
    "PatientID": "MRN42",
    "AccessionNumber": "ACC7",
    "SenderAddress": "10.0.0.5",
    "SenderAET": "MODALITY",
    "ReceiverAET": "MERCURY",
    "DeviceSerialNumber": "SN-1",
}


def _module(**fields: Any) -> Module:
    base: dict[str, Any] = {"docker_tag": "org/blur:1", "settings": {"sigma": 1, "mode": "fast"}}
    return Module.model_validate(base | fields)


def _check_keys(task: dict[str, Any]) -> None:
    assert list(task) == KEYS["task"]
    assert tuple(task) == TASK_KEYS
    assert list(task["info"]) == KEYS["info"]
    assert list(task["process"]) == KEYS["process"]
    assert list(task["process"]["module_config"]) == KEYS["module_config"]


def test_series_task_has_mercures_keys_and_values() -> None:
    rule = Rule(rule="True", action="process", processing_module=["blur"])
    module = _module(environment={"MODEL": "v2"})
    task = build_task(
        job_id="job1",
        rule_name="ct_blur",
        rule=rule,
        triggered_rules=["other", "ct_blur"],
        uid="1.2.3.4",
        uid_type="series",
        tags=TAGS,
        module_name="blur",
        module=module,
        appliance_name="box-a",
        server="host-a",
    )
    _check_keys(task)
    assert task["id"] == "job1"
    assert task["dispatch"] == {}
    assert task["study"] == {}
    assert task["nomad_info"] is None
    assert task["info"] == {
        "action": "process",
        "uid": "1.2.3.4",
        "uid_type": "series",
        "triggered_rules": {"other": True, "ct_blur": True},
        "applied_rule": "ct_blur",
        "patient_name": "Doe^Jane",
        "mrn": "MRN42",
        "acc": "ACC7",
        "sender_address": "10.0.0.5",
        "sender_aet": "MODALITY",
        "receiver_aet": "MERCURY",
        "device_serial_number": "SN-1",
        "mercure_version": __version__,
        "mercure_appliance": "box-a",
        "mercure_server": "host-a",
        "fail_stage": None,
    }
    process = task["process"]
    assert process["module_name"] == "blur"
    assert process["settings"] == {"sigma": 1, "mode": "fast"}
    assert process["retain_input_images"] is False
    assert process["output"] is None
    assert process["module_config"]["environment"] == '{"MODEL": "v2"}'
    # Plain JSON all through: what a module's json.load gets back is what we built.
    assert json.loads(json.dumps(task)) == task


def test_missing_tags_read_unknown() -> None:
    rule = Rule(rule="True", action="process", processing_module=["blur"])
    task = build_task(
        job_id="j",
        rule_name="r",
        rule=rule,
        triggered_rules=[],
        uid="1.2",
        uid_type="series",
        tags={},
        module_name="blur",
        module=_module(),
    )
    info = task["info"]
    assert info["triggered_rules"] == {"r": True}
    for key in ("patient_name", "mrn", "acc", "sender_aet", "device_serial_number"):
        assert info[key] == "UNKNOWN"


def test_module_config_is_mercures_text_fields_and_imports_back() -> None:
    module = _module(
        environment={"A": "1"},
        docker_arguments={"mem_limit": "4g", "shm_size": "1g"},
        additional_volumes={"/models": {"bind": "/opt/models", "mode": "ro"}},
        requires_persistence=True,
        persistence_folder_name="blur-state",
        contact="ops@example.org",
    )
    config = module_config(module)
    assert json.loads(config["environment"]) == {"A": "1"}
    assert json.loads(config["docker_arguments"]) == {"mem_limit": "4g", "shm_size": "1g"}
    assert json.loads(config["additional_volumes"]) == {
        "/models": {"bind": "/opt/models", "mode": "ro"}
    }
    assert config["constraints"] == config["resources"] == ""
    # mercury's importer reads this dump back into the same module.
    findings = Findings()
    mapped = map_module("blur", config, findings)
    assert mapped is not None
    assert Module.model_validate(mapped) == module
    assert {field.path for field in findings.unmapped} == {
        "modules.blur.constraints",
        "modules.blur.resources",
    }
    assert not findings.problems


def test_empty_text_fields_are_empty_strings() -> None:
    config = module_config(Module(runner="local", command=["run"]))
    assert config["environment"] == config["docker_arguments"] == ""
    assert config["additional_volumes"] == ""
    assert config["docker_tag"] == ""
    assert config["persistence_folder_name"] == ""
    assert "command" not in config
    assert "runner" not in config
    assert "timeout" not in config


def _study_rows() -> tuple[StudyRow, list[SeriesRow]]:
    first = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
    last = datetime(2026, 3, 1, 10, 20, 0, tzinfo=UTC)
    study = StudyRow(
        study_uid="1.2.3",
        first_received_at=first,
        last_received_at=last,
        completion_reason="force",
    )
    series = [
        SeriesRow(
            series_uid="1.2.3.5",
            study_uid="1.2.3",
            series_description="Sag T1",
            first_received_at=last,
            last_received_at=last,
        ),
        SeriesRow(
            series_uid="1.2.3.4",
            study_uid="1.2.3",
            series_description="Axial T2",
            first_received_at=first,
            last_received_at=first,
        ),
    ]
    return study, series


def test_study_task_for_a_both_rule() -> None:
    rule = Rule(
        rule="True",
        action="both",
        action_trigger="study",
        target=["pacs", "archive"],
        processing_module=["blur"],
        processing_retain_images=True,
        study_trigger_condition="received_series",
        study_trigger_series="'Axial T2' and 'Sag T1'",
        study_force_completion_action="proceed",
    )
    study, series = _study_rows()
    section = study_info(study, series, rule)
    task = build_task(
        job_id="job2",
        rule_name="mr_study",
        rule=rule,
        triggered_rules=["mr_study"],
        uid="1.2.3",
        uid_type="study",
        tags=TAGS,
        module_name="blur",
        module=_module(),
        study=section,
    )
    _check_keys(task)
    assert list(task["dispatch"]) == KEYS["dispatch"]
    assert task["dispatch"] == {
        "target_name": ["pacs", "archive"],
        "status": {},
        "retries": None,
        "next_retry_at": None,
        "series_uid": "1.2.3.4",
    }
    assert list(task["study"]) == KEYS["study"]
    study_section = task["study"]
    assert study_section["study_uid"] == "1.2.3"
    assert study_section["complete_trigger"] == "received_series"
    assert study_section["complete_required_series"] == "'Axial T2' and 'Sag T1'"
    assert study_section["received_series"] == ["Axial T2", "Sag T1"]
    assert study_section["received_series_uid"] == ["1.2.3.4", "1.2.3.5"]
    assert study_section["complete_force"] is True
    assert study_section["complete_force_action"] == "proceed"
    local_first = study.first_received_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert study_section["creation_time"] == local_first
    assert task["info"]["uid_type"] == "study"
    assert task["info"]["action"] == "both"
    assert task["process"]["retain_input_images"] is True


def test_study_task_needs_its_study_section() -> None:
    rule = Rule(rule="True", action="process", processing_module=["blur"], action_trigger="study")
    with pytest.raises(ValueError, match="study section"):
        build_task(
            job_id="j",
            rule_name="r",
            rule=rule,
            triggered_rules=[],
            uid="1.2.3",
            uid_type="study",
            tags=TAGS,
            module_name="blur",
            module=_module(),
        )


def _step_settings(rule: Rule, step: int, module: Module) -> dict[str, Any]:
    task = build_task(
        job_id="j",
        rule_name="chain",
        rule=rule,
        triggered_rules=["chain"],
        uid="1.2.3.4",
        uid_type="series",
        tags=TAGS,
        module_name=f"m{step}",
        module=module,
        step=step,
    )
    settings: dict[str, Any] = task["process"]["settings"]
    return settings


def test_chain_steps_get_their_own_settings() -> None:
    module = _module(settings={"sigma": 1, "model": {"name": "a", "size": 3}})
    per_step = Rule(
        rule="True",
        action="process",
        processing_module=["m0", "m1", "m2"],
        processing_settings=[{"sigma": 2}, {"model": {"name": "b"}, "extra": True}],
    )
    assert _step_settings(per_step, 0, module) == {"sigma": 2, "model": {"name": "a", "size": 3}}
    # A shallow update, as mercure does: the rule's nested mapping replaces the module's.
    assert _step_settings(per_step, 1, module) == {
        "sigma": 1,
        "model": {"name": "b"},
        "extra": True,
    }
    # No entry for the third step: the module's own settings.
    assert _step_settings(per_step, 2, module) == {"sigma": 1, "model": {"name": "a", "size": 3}}
    every_step = Rule(
        rule="True",
        action="process",
        processing_module=["m0", "m1"],
        processing_settings={"sigma": 5},
    )
    for step in (0, 1):
        assert _step_settings(every_step, step, module)["sigma"] == 5


def test_settings_from_the_job_override_the_rule() -> None:
    rule = Rule(rule="True", action="process", processing_module=["blur"])
    task = build_task(
        job_id="j",
        rule_name="r",
        rule=rule,
        triggered_rules=[],
        uid="1.2",
        uid_type="series",
        tags=TAGS,
        module_name="blur",
        module=_module(),
        rule_settings={"sigma": 3},
    )
    assert task["process"]["settings"] == {"sigma": 3, "mode": "fast"}
    assert merge_settings({"a": 1}, {}) == {"a": 1}


def test_write_task(tmp_path: Path) -> None:
    rule = Rule(rule="True", action="process", processing_module=["blur"])
    task = build_task(
        job_id="j",
        rule_name="r",
        rule=rule,
        triggered_rules=[],
        uid="1.2",
        uid_type="series",
        tags={"PatientName": "Müller^Jörg"},
        module_name="blur",
        module=_module(),
    )
    path = write_task(tmp_path, task)
    assert path == tmp_path / "task.json"
    assert json.loads(path.read_text(encoding="utf-8")) == task
    with pytest.raises(ValueError, match="mercure refuses"):
        write_task(tmp_path, {**task, "mercury": {}})
