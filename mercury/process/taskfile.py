"""task.json, exactly as mercure writes it, so a module written for mercure reads ours.

mercure's model of the file forbids unknown top-level keys, and modules read its fields
by mercure's names, so the shape here follows mercure field for field: nothing of
mercury's own goes in. Everything is built from plain values (the rule, the module, the
tag dict of the first image) so the processor decides where they come from.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from mercury import __version__
from mercury.config.models import Module, Rule
from mercury.store.models import SeriesRow, StudyRow

TASK_FILE = "task.json"

TASK_KEYS: tuple[str, ...] = ("id", "info", "dispatch", "process", "study", "nomad_info")
"""The top-level keys of mercure's task.json, all of them and nothing else."""

UNKNOWN = "UNKNOWN"
"""What mercure writes for a patient or sender field the images do not carry."""

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # mercure's study times: local time, to the second

UidType = Literal["series", "study"]


def merge_settings(
    module_settings: Mapping[str, Any], rule_settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings a step sees: the module's, overridden key by key by the rule's (a
    shallow update, as mercure does: a nested mapping in the rule replaces the module's)."""
    merged = dict(module_settings)
    merged.update(rule_settings)
    return merged


def _json_text(value: Mapping[str, Any]) -> str:
    """mercure keeps these module fields as JSON text, and the empty string for none."""
    return json.dumps(value) if value else ""


def module_config(module: Module) -> dict[str, Any]:
    """The module's configuration as mercure dumps it into task.json: mercure's field names
    only, with environment, docker_arguments and additional_volumes as JSON text (the
    reverse of what the importer parses); mercury-only fields are left out."""
    volumes = {host: mount.model_dump() for host, mount in module.additional_volumes.items()}
    return {
        "docker_tag": module.docker_tag,
        "additional_volumes": _json_text(volumes),
        "environment": _json_text(module.environment),
        "docker_arguments": _json_text(module.docker_arguments),
        "settings": dict(module.settings),
        "contact": module.contact,
        "comment": module.comment,
        "constraints": "",
        "resources": "",
        "requires_root": module.requires_root,
        "requires_persistence": module.requires_persistence,
        "persistence_folder_name": module.persistence_folder_name or "",
        "network_enabled": module.network_enabled,
    }


def task_info(
    *,
    rule: Rule,
    rule_name: str,
    triggered_rules: Sequence[str],
    uid: str,
    uid_type: UidType,
    tags: Mapping[str, str],
    appliance_name: str,
    server: str | None = None,
    version: str = __version__,
) -> dict[str, Any]:
    """The ``info`` section: the rule, the series or study, and the patient and sender as
    the first image's tag dict has them (UNKNOWN when absent, as in mercure)."""
    triggered = dict.fromkeys(triggered_rules, True)
    triggered.setdefault(rule_name, True)
    return {
        "action": rule.action,
        "uid": uid,
        "uid_type": uid_type,
        "triggered_rules": triggered,
        "applied_rule": rule_name,
        "patient_name": tags.get("PatientName", UNKNOWN),
        "mrn": tags.get("PatientID", UNKNOWN),
        "acc": tags.get("AccessionNumber", UNKNOWN),
        "sender_address": tags.get("SenderAddress", UNKNOWN),
        "sender_aet": tags.get("SenderAET", UNKNOWN),
        "receiver_aet": tags.get("ReceiverAET", UNKNOWN),
        "device_serial_number": tags.get("DeviceSerialNumber", UNKNOWN),
        "mercure_version": version,
        "mercure_appliance": appliance_name,
        "mercure_server": server if server is not None else socket.gethostname(),
        "fail_stage": None,
    }


def dispatch_info(targets: Sequence[str], series_uid: str | None) -> dict[str, Any]:
    """The ``dispatch`` section of a ``both`` rule's task: where the results will go."""
    return {
        "target_name": list(targets),
        "status": {},
        "retries": None,
        "next_retry_at": None,
        "series_uid": series_uid,
    }


def _local_time(moment: datetime) -> str:
    return moment.astimezone().strftime(_TIME_FORMAT)


def study_info(study: StudyRow, series: Sequence[SeriesRow], rule: Rule) -> dict[str, Any]:
    """The ``study`` section of a study task, from the index: the completion condition the
    rule set, and the series that arrived (in order of arrival)."""
    arrived = sorted(series, key=lambda row: row.first_received_at)
    return {
        "study_uid": study.study_uid,
        "complete_trigger": rule.study_trigger_condition,
        "complete_required_series": rule.study_trigger_series,
        "creation_time": _local_time(study.first_received_at),
        "last_receive_time": _local_time(study.last_received_at),
        "received_series": [row.series_description for row in arrived],
        "received_series_uid": [row.series_uid for row in arrived],
        "complete_force": study.completion_reason == "force",
        "complete_force_action": rule.study_force_completion_action,
    }


def process_info(
    *,
    module_name: str,
    module: Module,
    rule_settings: Mapping[str, Any],
    retain_input_images: bool,
) -> dict[str, Any]:
    """The ``process`` section of one step: the module, its merged settings, and ``output``
    null (mercure fills it from result.json after the run, never before)."""
    return {
        "module_name": module_name,
        "module_config": module_config(module),
        "settings": merge_settings(module.settings, rule_settings),
        "retain_input_images": retain_input_images,
        "output": None,
    }


def build_task(
    *,
    job_id: str,
    rule_name: str,
    rule: Rule,
    triggered_rules: Sequence[str],
    uid: str,
    uid_type: UidType,
    tags: Mapping[str, str],
    module_name: str,
    module: Module,
    step: int = 0,
    rule_settings: Mapping[str, Any] | None = None,
    study: Mapping[str, Any] | None = None,
    appliance_name: str = "mercury",
    server: str | None = None,
    version: str = __version__,
) -> dict[str, Any]:
    """The task.json of one step of a processing job.

    ``tags`` is the tag dict of the job's first image (SeriesRow.tags). ``rule_settings``
    are the rule's settings for this step; None takes them from ``rule`` (a mapping applies
    to every step, a list gives the step-th mapping). ``study`` is :func:`study_info`'s
    result, required for study tasks and ignored for series tasks. ``dispatch`` is filled
    for ``both`` rules only, with the rule's targets.
    """
    if uid_type == "study" and study is None:
        raise ValueError("a study task needs the study section (see study_info)")
    if rule_settings is None:
        rule_settings = rule.settings_for_step(step)
    dispatch: dict[str, Any] = {}
    if rule.action == "both":
        series_uid = uid if uid_type == "series" else tags.get("SeriesInstanceUID")
        dispatch = dispatch_info(rule.target, series_uid)
    return {
        "id": job_id,
        "info": task_info(
            rule=rule,
            rule_name=rule_name,
            triggered_rules=triggered_rules,
            uid=uid,
            uid_type=uid_type,
            tags=tags,
            appliance_name=appliance_name,
            server=server,
            version=version,
        ),
        "dispatch": dispatch,
        "process": process_info(
            module_name=module_name,
            module=module,
            rule_settings=rule_settings,
            retain_input_images=rule.processing_retain_images,
        ),
        "study": dict(study) if uid_type == "study" and study is not None else {},
        "nomad_info": None,
    }


def write_task(folder: Path, task: Mapping[str, Any]) -> Path:
    """Write ``task.json`` into ``folder`` (replacing one a previous step left there)."""
    unknown = set(task) - set(TASK_KEYS)
    if unknown:
        raise ValueError(f"task.json may not have these keys (mercure refuses them): {unknown}")
    path = folder / TASK_FILE
    path.write_text(json.dumps(task, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
