"""Converting mercure's mercure.json (0.4.x) into a mercury configuration.

Everything mercury can honour is carried over; everything else is listed as an
:class:`UnmappedField` with the reason, so the administrator knows exactly what to
check. Input that cannot be converted at all (not JSON, wrong types, an unknown target
type) raises :class:`ConfigError` located in mercure.json's own key names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mercury.config.base import SKIP_REFERENCES
from mercury.config.errors import (
    ConfigError,
    ConfigIssue,
    in_file_order,
    issues_from_validation_error,
    located,
)
from mercury.config.issues import Loc
from mercury.config.load import parse_document, read_text
from mercury.config.mercure_entries import Findings, UnmappedField, map_module, map_rule, map_target
from mercury.config.models import MercuryConfig
from mercury.config.references import reference_issues
from mercury.config.yaml_io import LineIndex

__all__ = ["ImportResult", "UnmappedField", "import_mercure", "import_mercure_file"]

_TIMINGS = (
    "series_complete_trigger",
    "study_complete_trigger",
    "study_forcecomplete_trigger",
    "router_scan_interval",
    "dispatcher_scan_interval",
    "cleaner_scan_interval",
    "retention",
    "emergency_clean_percentage",
    "retry_delay",
    "retry_max",
    "offpeak_start",
    "offpeak_end",
)

MAPPED: dict[str, Loc] = {
    "appliance_name": ("appliance_name",),
    "appliance_color": ("appliance_color",),
    "port": ("receiver", "port"),
    "accept_compressed_images": ("receiver", "accept_compressed"),
    "phi_notifications": ("notifications", "phi"),
    "email_notification_from": ("notifications", "email_from"),
    "webhook_certificate_location": ("notifications", "webhook_ca_bundle"),
    "processing_runtime": ("processing", "runtime"),
    "support_root_modules": ("processing", "support_root_modules"),
    "persistence_folder": ("processing", "persistence_folder"),
    **{key: ("timings", key) for key in _TIMINGS},
}
"""mercure's top-level keys and where mercury keeps them."""

STAGE_FOLDERS = (
    "incoming_folder",
    "studies_folder",
    "outgoing_folder",
    "success_folder",
    "error_folder",
    "discard_folder",
    "processing_folder",
    "jobs_folder",
)

_METRICS = "mercury publishes its metrics for Prometheus (/metrics)"
_JOURNAL = "mercury records every event in its own journal (the database); no bookkeeper is needed"
NOT_MAPPED: dict[str, str] = {
    "bookkeeper": _JOURNAL,
    "bookkeeper_api_key": _JOURNAL,
    "graphite_ip": f"{_METRICS}, not to Graphite",
    "graphite_port": f"{_METRICS}, not to Graphite",
    "influxdb_host": f"{_METRICS}, not to InfluxDB",
    "influxdb_org": f"{_METRICS}, not to InfluxDB",
    "influxdb_token": f"{_METRICS}, not to InfluxDB",
    "influxdb_bucket": f"{_METRICS}, not to InfluxDB",
    "features": "mercure's feature switches have no counterpart in mercury",
    "processing_logs": "mercury keeps the log of every module run with its job",
    "server_time": "mercury uses the host's time zone",
    "local_time": "mercury uses the host's time zone",
    "dicom_retrieve": "query/retrieve from DICOM nodes is not supported by mercury yet",
}
"""mercure's top-level keys mercury deliberately does not carry over, and why."""


@dataclass(frozen=True)
class ImportResult:
    """The converted configuration and every mercure field it does not carry over."""

    config: MercuryConfig
    unmapped: list[UnmappedField]


def _put(tree: dict[str, Any], loc: Loc, value: Any) -> None:
    for part in loc[:-1]:
        tree = tree.setdefault(str(part), {})
    tree[str(loc[-1])] = value


def to_mercure_location(loc: Loc) -> Loc:
    """Our key path for an imported value -> the key path it came from in mercure.json."""
    if loc[:2] == ("receiver", "additional_tags"):
        return ("dicom_receiver", "additional_tags", *loc[2:])
    for mercure_key, ours in MAPPED.items():
        if loc[: len(ours)] == ours:
            return (mercure_key, *loc[len(ours) :])
    return loc


def _storage(data: Mapping[str, Any], data_dir: Path | None) -> dict[str, Any]:
    """Spool and database: under ``data_dir``, or next to mercure's incoming folder."""
    if data_dir is None:
        incoming = data.get("incoming_folder")
        if not isinstance(incoming, str) or not incoming.strip():
            return {}
        data_dir = Path(incoming).parent
    return {"spool": str(data_dir / "spool"), "database": f"sqlite:///{data_dir / 'mercury.db'}"}


def _dicom_receiver(value: Any, ours: dict[str, Any], findings: Findings) -> None:
    if not isinstance(value, Mapping):
        findings.problem(("dicom_receiver",), "must be an object")
        return
    for key, item in value.items():
        if key != "additional_tags":
            findings.drop(("dicom_receiver", key), item, "not a receiver setting mercury knows")
        elif isinstance(item, Mapping):
            # mercure maps keyword -> example value; mercury maps name -> keyword
            _put(ours, ("receiver", "additional_tags"), {str(k): str(k) for k in item})
        else:
            findings.problem(("dicom_receiver", "additional_tags"), "must be an object")


def _entries(kind: str, value: Any, ours: dict[str, Any], findings: Findings) -> None:
    mapper = {"targets": map_target, "rules": map_rule, "modules": map_module}[kind]
    if not isinstance(value, Mapping):
        findings.problem((kind,), f"must be an object of {kind} by name")
        return
    converted: dict[str, Any] = {}
    for name, entry in value.items():
        mapped = mapper(str(name), entry, findings)
        if mapped is not None:
            converted[str(name)] = mapped
    ours[kind] = converted


def _top_level(key: str, value: Any, ours: dict[str, Any], findings: Findings, spool: str) -> None:
    if key in ("targets", "rules", "modules"):
        _entries(key, value, ours, findings)
    elif key == "dicom_receiver":
        _dicom_receiver(value, ours, findings)
    elif key in MAPPED:
        if value is not None and value != "":
            _put(ours, MAPPED[key], value)
    elif key == "process_runner":
        if value not in ("docker", "", None):
            reason = "mercury runs modules with docker (or as local commands), not on Nomad"
            findings.drop((key,), value, f"{reason}; modules were imported with the docker runner")
    elif key in STAGE_FOLDERS:
        reason = (
            "mercury keeps state in a spool and a database, not in per-stage folders "
            f"(spool: {spool})"
        )
        findings.drop((key,), value, reason)
    elif key in NOT_MAPPED:
        findings.drop((key,), value, NOT_MAPPED[key])
    else:
        findings.drop((key,), value, "not a mercure 0.4 setting mercury knows; dropped")


def import_mercure(
    data: Any,
    *,
    data_dir: Path | None = None,
    source: str = "mercure.json",
    lines: LineIndex | None = None,
) -> ImportResult:
    """Convert parsed mercure.json data into a :class:`MercuryConfig`.

    ``data_dir`` puts the spool (``DIR/spool``) and the SQLite database
    (``DIR/mercury.db``) there; without it they go next to mercure's incoming folder.
    Raises :class:`ConfigError` when the input cannot be converted.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(source, [ConfigIssue("", "the top level must be a JSON object")])
    findings = Findings()
    storage = _storage(data, data_dir)
    ours: dict[str, Any] = {"receiver": {"ae_titles": []}}  # mercure answers to any AE title
    if storage:
        ours["storage"] = storage
    spool = storage.get("spool", "mercury's default")
    for key, value in data.items():
        _top_level(str(key), value, ours, findings, spool)

    issues = [located(loc, message, lines=lines) for loc, message in findings.problems]
    config: MercuryConfig | None = None
    try:
        config = MercuryConfig.model_validate(ours, context={SKIP_REFERENCES: True})
    except ValidationError as error:
        issues.extend(
            issues_from_validation_error(
                error, ours, root=MercuryConfig, lines=lines, rename=to_mercure_location
            )
        )
    issues.extend(located(loc, message, lines=lines) for loc, message in reference_issues(ours))
    if issues or config is None:
        raise ConfigError(source, in_file_order(issues))
    return ImportResult(config, findings.unmapped)


def import_mercure_file(path: Path, *, data_dir: Path | None = None) -> ImportResult:
    """Read mercure.json at ``path`` (as JSON, errors with line and column) and convert it."""
    data, lines = parse_document(read_text(path), source=str(path), as_json=True)
    return import_mercure(data, data_dir=data_dir, source=str(path), lines=lines)
