"""Importing mercure.json: exact output for realistic files, clear errors for broken ones."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mercury.config import (
    ConfigError,
    UnmappedField,
    dump_config,
    import_mercure,
    import_mercure_file,
    load_config,
    save_config,
)
from mercury.config.targets import DicomTarget, SftpTarget
from tests.config.support import EXPECTED, MERCURE, mercure_data

JOURNAL = "mercury records every event in its own journal (the database); no bookkeeper is needed"
GRAPHITE = "mercury publishes its metrics for Prometheus (/metrics), not to Graphite"
INFLUX = "mercury publishes its metrics for Prometheus (/metrics), not to InfluxDB"
FEATURES = "mercure's feature switches have no counterpart in mercury"
LOGS = "mercury keeps the log of every module run with its job"
TIMEZONE = "mercury uses the host's time zone"
UNSUPPORTED = "kept, but not yet supported by mercury's dispatcher: its jobs wait, journaled"
NOMAD_CONSTRAINTS = "Nomad job constraints; mercury does not run modules on Nomad; dropped"
NOMAD_RESOURCES = "Nomad job resources; mercury does not run modules on Nomad; dropped"
DOCKER_ARGUMENT = (
    "not in mercure's allow-list of docker arguments (resource and runtime settings only); dropped"
)
STAGES = (
    "incoming",
    "studies",
    "outgoing",
    "success",
    "error",
    "discard",
    "processing",
)


def stage_folders(root: str, spool: str, jobs: bool = True) -> list[UnmappedField]:
    reason = (
        f"mercury keeps state in a spool and a database, not in per-stage folders (spool: {spool})"
    )
    names = [*STAGES, "jobs"] if jobs else list(STAGES)
    return [UnmappedField(f"{name}_folder", f"{root}/{name}", reason) for name in names]


def metrics(graphite_ip: str, influx: tuple[str, str, str, str]) -> list[UnmappedField]:
    host, org, token, bucket = influx
    return [
        UnmappedField("graphite_ip", graphite_ip, GRAPHITE),
        UnmappedField("graphite_port", 2003, GRAPHITE),
        UnmappedField("influxdb_host", host, INFLUX),
        UnmappedField("influxdb_org", org, INFLUX),
        UnmappedField("influxdb_token", token, INFLUX),
        UnmappedField("influxdb_bucket", bucket, INFLUX),
    ]


def test_default_mercure_json() -> None:
    result = import_mercure_file(MERCURE / "default_mercure.json")
    assert dump_config(result.config) == (EXPECTED / "default.yaml").read_text()
    config = result.config
    assert config.receiver.port == 11112
    assert config.receiver.ae_titles == []  # mercure answers to any called AE title
    assert config.receiver.accept_compressed is False
    assert config.timings.model_dump() == {
        "series_complete_trigger": 60,
        "series_complete_on": ["quiet"],
        "study_complete_trigger": 900,
        "study_forcecomplete_trigger": 5400,
        "router_scan_interval": 1,
        "dispatcher_scan_interval": 1,
        "cleaner_scan_interval": 60,
        "retention": 259200,
        "emergency_clean_percentage": 90,
        "retry_delay": 900,
        "retry_max": 5,
        "offpeak_start": "22:00",
        "offpeak_end": "06:00",
    }
    assert (config.targets, config.rules, config.modules) == ({}, {}, {})
    assert result.unmapped == [
        *stage_folders("/opt/mercure/data", "/opt/mercure/data/spool"),
        UnmappedField("bookkeeper", "0.0.0.0:8080", JOURNAL),
        UnmappedField("bookkeeper_api_key", "**********", JOURNAL),
        *metrics("", ("", "", "", "")),
        UnmappedField("features", {}, FEATURES),
        UnmappedField("processing_logs", {"discard_logs": False}, LOGS),
    ]


def test_hospital_mercure_json_every_target_and_rule_option() -> None:
    result = import_mercure_file(MERCURE / "hospital_mercure.json")
    assert dump_config(result.config) == (EXPECTED / "hospital.yaml").read_text()
    config = result.config
    assert list(config.rules) == list(mercure_data("hospital")["rules"])  # order kept
    legacy = config.targets["pacs"]
    assert isinstance(legacy, DicomTarget)  # no target_type in mercure means dicom
    assert legacy.port == 104
    sftp = config.targets["research_sftp"]
    assert isinstance(sftp, SftpTarget)
    assert sftp.password is not None
    assert sftp.password.get_secret_value() == "sftp-pw"
    assert config.receiver.additional_tags == {"StudyDate": "StudyDate", "PatientAge": "PatientAge"}
    assert config.notifications.phi is True
    assert config.processing.runtime == "nvidia"
    knee = config.rules["mr_knee_study"]
    assert knee.processing_module == ["anonymizer", "knee_seg"]
    assert knee.settings_for_step(1) == {"model": "v2", "laterality": "auto"}
    assert config.rules["ct_stroke"].conditional_alternate_target == "pacs_tls"
    assert config.rules["mr_knee_study"].conditional_alternate_target is None
    assert all(module.runner == "docker" for module in config.modules.values())
    assert result.unmapped == [
        *stage_folders("/data/mercure", "/data/mercure/spool"),
        UnmappedField("bookkeeper", "bookkeeper:8080", JOURNAL),
        UnmappedField("bookkeeper_api_key", "**********", JOURNAL),
        *metrics("10.20.0.5", ("", "", "", "")),
        UnmappedField("features", {"dummy_target": True}, FEATURES),
        UnmappedField("processing_logs", {"discard_logs": False, "logs_file_store": None}, LOGS),
        UnmappedField("server_time", "UTC", TIMEZONE),
        UnmappedField("local_time", "Europe/Berlin", TIMEZONE),
        UnmappedField("targets.archive_rsync", "rsync", UNSUPPORTED),
        UnmappedField("targets.xnat_research", "xnat", UNSUPPORTED),
        UnmappedField("modules.stroke_ai.constraints", "", NOMAD_CONSTRAINTS),
        UnmappedField("modules.stroke_ai.resources", "", NOMAD_RESOURCES),
    ]


def test_research_mercure_json_modules_and_leftovers() -> None:
    result = import_mercure_file(MERCURE / "research_mercure.json", data_dir=Path("/srv/mercury"))
    assert dump_config(result.config) == (EXPECTED / "research.yaml").read_text()
    brain = result.config.modules["brain_seg"]
    assert brain.additional_volumes["/srv/models/brain"].mode == "ro"
    assert brain.environment == {
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "8",
        "DEBUG": "False",
    }
    assert brain.docker_arguments == {"mem_limit": "16g", "shm_size": "2g", "runtime": "nvidia"}
    assert result.config.modules["report_gen"].environment == {}
    assert result.unmapped == [
        *stage_folders("/opt/mercure/data", "/srv/mercury/spool", jobs=False),
        UnmappedField("bookkeeper", "0.0.0.0:8080", JOURNAL),
        *metrics("", ("http://influx:8086", "lab", "**********", "mercure")),
        UnmappedField(
            "process_runner",
            "nomad",
            "mercury runs modules with docker (or as local commands), not on Nomad; modules "
            "were imported with the docker runner",
        ),
        UnmappedField(
            "dicom_retrieve",
            {"dicom_nodes": [], "destination_folders": []},
            "query/retrieve from DICOM nodes is not supported by mercury yet",
        ),
        UnmappedField(
            "lab_inventory_number", "GPU-07", "not a mercure 0.4 setting mercury knows; dropped"
        ),
        UnmappedField(
            "targets.lab_store.exclude_pattern",
            "*.nii",
            "not a setting of folder targets in mercury; dropped",
        ),
        UnmappedField(
            "rules.brain_mri.notification_trigger_experimental",
            True,
            "not a rule setting mercury knows; dropped",
        ),
        UnmappedField(
            "modules.brain_seg.environment.NESTED",
            {"a": 1},
            "environment values must be text; dropped",
        ),
        UnmappedField("modules.brain_seg.docker_arguments.privileged", True, DOCKER_ARGUMENT),
        UnmappedField("modules.brain_seg.docker_arguments.network_mode", "host", DOCKER_ARGUMENT),
        UnmappedField(
            "modules.brain_seg.constraints",
            'constraint { attribute = "${meta.gpu}" value = "true" }',
            NOMAD_CONSTRAINTS,
        ),
        UnmappedField(
            "modules.brain_seg.resources", "resources { memory = 16000 }", NOMAD_RESOURCES
        ),
        UnmappedField(
            "modules.report_gen.environment",
            '{"REPORT_LANG": "en",}',
            "not valid JSON (Expecting property name enclosed in double quotes at line 1, "
            "column 22); dropped, add it again by hand",
        ),
        UnmappedField(
            "modules.report_gen.docker_arguments",
            '["--gpus", "all"]',
            "must be a JSON object; dropped, add it again by hand",
        ),
        UnmappedField(
            "modules.legacy_tool.gpu_slots", 1, "not a module setting mercury knows; dropped"
        ),
    ]


@pytest.mark.parametrize("name", ["default", "hospital"])
def test_imported_config_saves_and_loads_back(tmp_path: Path, name: str) -> None:
    result = import_mercure(mercure_data(name))
    save_config(result.config, tmp_path / "mercury.yaml")
    assert load_config(tmp_path / "mercury.yaml") == result.config


def test_paths_mercure_did_not_set_are_relative_to_the_written_file(tmp_path: Path) -> None:
    result = import_mercure(mercure_data("research"))  # has no persistence_folder
    assert result.config.processing.persistence_folder == Path("persistence")
    save_config(result.config, tmp_path / "mercury.yaml")
    loaded = load_config(tmp_path / "mercury.yaml")
    assert loaded.processing.persistence_folder == tmp_path / "persistence"
    assert loaded.modules == result.config.modules
    assert loaded.rules == result.config.rules


def test_secrets_stay_out_of_the_result_repr() -> None:
    text = repr(import_mercure(mercure_data("hospital")))
    for secret in ("sftp-pw", "xnat-pw", "s3-secret-key", "orthanc-basic-pw", "vna-token"):
        assert secret not in text
    assert "c2VjcmV0LWJvb2trZWVwZXIta2V5" not in text  # the masked bookkeeper key


def test_data_dir_puts_spool_and_database_there(tmp_path: Path) -> None:
    result = import_mercure(mercure_data("default"), data_dir=tmp_path / "data")
    assert result.config.storage.spool == tmp_path / "data" / "spool"
    assert result.config.storage.database == f"sqlite:///{tmp_path / 'data' / 'mercury.db'}"


def test_minimal_input_keeps_mercury_defaults() -> None:
    result = import_mercure({"targets": {"t": {"ip": "h", "port": "104", "aet_target": "T"}}})
    assert result.unmapped == []
    assert result.config.storage.database == "sqlite:///mercury.db"
    assert result.config.targets["t"].target_type == "dicom"


def broken(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "mercure.json"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        import_mercure_file(path)
    assert caught.value.source == str(path)
    return [str(issue) for issue in caught.value.issues]


def test_bad_json_is_reported_with_line_and_column(tmp_path: Path) -> None:
    assert broken(tmp_path, '{\n  "port": 104\n  "targets": {}\n}\n') == [
        "not valid JSON: Expecting ',' delimiter (line 3, column 3)"
    ]


def test_wrong_types_are_located_in_mercure_terms(tmp_path: Path) -> None:
    issues = broken(
        tmp_path,
        """\
        {
          "port": "eleven",
          "retry_max": "five",
          "offpeak_start": "late",
          "dicom_receiver": {"additional_tags": ["StudyDate"]},
          "targets": {
            "pacs": {"ip": "10.0.0.1", "port": "one-o-four", "aet_target": "PACS"},
            "my pacs": {"target_type": "dummy"},
            "ftp": {"target_type": "ftp", "host": "x"},
            "listy": []
          },
          "rules": {"r": {"target": "nope", "priority": "asap"}},
          "modules": {"m": {"docker_tag": "a/b", "requires_root": "sometimes"}}
        }
        """,
    )
    assert issues == [
        "port: must be a whole number (got 'eleven') (line 2, column 11)",
        "retry_max: must be a whole number (got 'five') (line 3, column 16)",
        "offpeak_start: must be a time of day as HH:MM, 00:00 to 23:59 (got 'late') "
        "(line 4, column 20)",
        "dicom_receiver.additional_tags: must be an object (line 5, column 41)",
        "targets.pacs.port: must be a whole number (got 'one-o-four') (line 7, column 40)",
        "targets.my pacs: 'my pacs' is not a valid name: use only letters, digits, '_' and '-' "
        "(line 8, column 5)",
        "targets.ftp.target_type: unknown target type 'ftp'; expected one of: dicom, dicomtls, "
        "dicomweb, sftp, rsync, xnat, s3, folder, dummy (line 9, column 28)",
        "targets.listy: must be an object of target settings (line 10, column 14)",
        "rules.r.target: unknown target 'nope'; defined targets: ftp, my pacs, pacs "
        "(line 12, column 29)",
        "rules.r.priority: must be one of: normal, urgent, offpeak (got 'asap') "
        "(line 12, column 49)",
        "modules.m.requires_root: must be true or false (got 'sometimes') (line 13, column 59)",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "the top level must be a JSON object"),
        ({"targets": []}, "targets: must be an object of targets by name"),
        ({"dicom_receiver": "x"}, "dicom_receiver: must be an object"),
    ],
)
def test_malformed_structure(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        import_mercure(data)
    assert [str(issue) for issue in caught.value.issues] == [message]
    assert str(caught.value) == f"mercure.json: {message}"


def test_json_string_fields_accept_real_objects() -> None:
    module = {"docker_tag": "a/b", "environment": {"A": "1"}, "additional_volumes": "  "}
    result = import_mercure({"modules": {"m": module}})
    assert result.config.modules["m"].environment == {"A": "1"}
    assert result.config.modules["m"].additional_volumes == {}


def test_non_text_json_field_is_reported() -> None:
    result = import_mercure({"modules": {"m": {"docker_tag": "a/b", "environment": 5}}})
    assert result.unmapped == [
        UnmappedField(
            "modules.m.environment", 5, "must be JSON text; dropped, add it again by hand"
        )
    ]


def test_round_trip_of_mercure_fixture_file_is_valid_json() -> None:
    for name in ("default", "hospital", "research"):
        json.loads((MERCURE / f"{name}_mercure.json").read_text())
