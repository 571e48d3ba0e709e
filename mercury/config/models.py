"""The configuration file, as pydantic models.

Each top-level section is its own model so a later stage adds a section by adding one
field to :class:`MercuryConfig`. Rules, targets and modules keep mercure's field names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mercury.config.base import (
    AE_TITLE_PATTERN,
    BASE_DIR,
    HH_MM_PATTERN,
    SKIP_REFERENCES,
    LocalPath,
    Name,
    Seconds,
    Secret,
    Section,
)
from mercury.config.dispatch import DispatchConfig
from mercury.config.issues import raise_if_any
from mercury.config.modules import Module
from mercury.config.operations import RetentionConfig, WebConfig
from mercury.config.references import reference_issues
from mercury.config.rules import CompletionCondition, Rule
from mercury.config.targets import Target

__all__ = [
    "AE_TITLE_PATTERN",
    "AllowedCaller",
    "DispatchConfig",
    "MercuryConfig",
    "Module",
    "NotificationsConfig",
    "ProcessingConfig",
    "ReceiverConfig",
    "RetentionConfig",
    "Rule",
    "Section",
    "StorageConfig",
    "Target",
    "TimingsConfig",
    "WebConfig",
    "mask_password",
]

_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?):///(.*)$")


class AllowedCaller(Section):
    """One entry of the receiver's allow-list; an association must match at least one entry."""

    ae_title: str | None = Field(
        default=None, description="Calling AE title; omitted means any AE title."
    )
    address: str | None = Field(
        default=None,
        description="Sender IP address or network in CIDR notation (10.0.0.0/8); "
        "omitted means any.",
    )


class ReceiverConfig(Section):
    """The DICOM C-STORE/C-ECHO receiver."""

    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=11112, ge=1, le=65535, description="DICOM port.")
    ae_titles: list[str] = Field(
        default_factory=lambda: ["MERCURY"],
        description="Called AE titles this receiver answers to; an empty list accepts any.",
    )
    allowed_callers: list[AllowedCaller] = Field(
        default_factory=list,
        description="Allow-list of callers; empty means every caller is accepted.",
    )
    accept_compressed: bool = Field(
        default=True, description="Accept compressed transfer syntaxes (JPEG, JPEG 2000, RLE, ...)."
    )
    transfer_syntaxes: list[str] = Field(
        default_factory=list,
        description="Explicit list of accepted transfer syntax UIDs; empty means all known ones.",
    )
    max_pdu: int = Field(
        default=262144,
        ge=0,
        description="Largest PDU we accept, in bytes (0 = unlimited).",
    )
    max_associations: int = Field(default=64, ge=1, description="Concurrent associations.")
    acse_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for association PDUs."
    )
    network_timeout: float = Field(
        default=300.0, gt=0, description="Seconds of silence before an association is aborted."
    )
    additional_tags: dict[str, str] = Field(
        default_factory=dict,
        description="Extra tags to index: name -> DICOM keyword or (gggg,eeee) tag.",
    )

    @field_validator("ae_titles")
    @classmethod
    def _check_ae_titles(cls, value: list[str]) -> list[str]:
        for title in value:
            if not re.match(AE_TITLE_PATTERN, title) or not title.strip():
                raise ValueError(
                    f"{title!r} is not a valid AE title (1-16 characters, no backslash)"
                )
        return value


def mask_password(url: str) -> str:
    """The URL with its password (if any) replaced, for reprs and messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class StorageConfig(Section):
    """Where image files (the spool) and the index (the database) live."""

    spool: LocalPath = Field(
        default=Path("spool"), validate_default=True, description="Spool folder for image files."
    )
    database: str = Field(
        default="sqlite:///mercury.db",
        validate_default=True,
        description="SQLAlchemy database URL: sqlite:///path (default) or postgresql://...; a "
        "relative SQLite path is relative to this file.",
    )
    reserve_mb: int = Field(
        default=1024,
        ge=0,
        description="Free space (MiB) the receiver keeps on the spool's disk; below it, "
        "it refuses.",
    )
    durability: Literal["full", "normal"] = Field(
        default="full",
        description=(
            "full: fsync image files and the database on every acknowledgement; normal: fsync "
            "image files, let SQLite sync its log at checkpoints (survives a crash, not a power "
            "loss)."
        ),
    )

    @field_validator("database")
    @classmethod
    def _resolve_sqlite_path(cls, value: str, info: ValidationInfo) -> str:
        base = info.context.get(BASE_DIR) if isinstance(info.context, dict) else None
        match = _SQLITE_URL.match(value)
        if not isinstance(base, Path) or match is None:
            return value
        driver, rest = match.groups()
        path, sep, query = rest.partition("?")
        if not path or path == ":memory:" or path.startswith("file:"):
            return value
        resolved = Path(path).expanduser()
        if not resolved.is_absolute():
            resolved = base / resolved
        return f"{driver}:///{resolved}{sep}{query}"

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (mask_password(value) if name == "database" else value)


class TimingsConfig(Section):
    """Timings, in seconds, with mercure's names and defaults."""

    series_complete_trigger: Seconds = Field(
        default=60,
        gt=0,
        description="Quiet period after the last image before a series is complete.",
    )
    series_complete_on: list[CompletionCondition] = Field(
        default_factory=lambda: list[CompletionCondition](["quiet"]),
        min_length=1,
        description="Default completion conditions for rules that set none: quiet, "
        "association_end, expected_count (any one suffices). mercure knows only quiet.",
    )
    study_complete_trigger: Seconds = Field(
        default=900,
        gt=0,
        description="Quiet period after the last series before a study is complete.",
    )
    study_forcecomplete_trigger: Seconds = Field(
        default=5400,
        gt=0,
        description="After this long, an incomplete study gets its rule's force-completion action.",
    )
    router_scan_interval: Seconds = Field(
        default=1, gt=0, description="How often the router looks for complete series."
    )
    dispatcher_scan_interval: Seconds = Field(
        default=1, gt=0, description="How often the dispatcher looks for jobs to send."
    )
    cleaner_scan_interval: Seconds = Field(
        default=60, gt=0, description="How often the cleaner looks for expired data."
    )
    retention: Seconds = Field(
        default=259200, ge=0, description="How long finished jobs' files are kept (3 days)."
    )
    emergency_clean_percentage: int = Field(
        default=90,
        ge=0,
        le=100,
        description="Disk use (percent) above which finished jobs are deleted before retention.",
    )
    retry_delay: Seconds = Field(
        default=900, ge=0, description="Wait before retrying a failed send."
    )
    retry_max: int = Field(default=5, ge=0, description="Retries before a send is given up.")
    offpeak_start: str = Field(
        default="22:00",
        pattern=HH_MM_PATTERN,
        description="Start of the off-peak window (HH:MM, local).",
    )
    offpeak_end: str = Field(
        default="06:00",
        pattern=HH_MM_PATTERN,
        description="End of the off-peak window; before the start means it wraps past midnight.",
    )


class ProcessingConfig(Section):
    """How processing modules are run."""

    runtime: str | None = Field(
        default=None,
        description="Docker runtime for module containers, such as `nvidia`; null uses the "
        "default.",
    )
    support_root_modules: bool = Field(
        default=False, description="Allow modules with `requires_root` to run as root."
    )
    persistence_folder: LocalPath = Field(
        default=Path("persistence"),
        validate_default=True,
        description="Folder holding the persistent folders of modules with `requires_persistence`.",
    )
    workers: int = Field(
        default=2, ge=1, description="Module runs at the same time, in all (mercury only)."
    )
    gpus: list[str] = Field(
        default_factory=list,
        description='GPU indices this box may give to modules, such as ["0", "1"]; a module '
        "with `gpus: 1` waits for a free one and sees only it (mercury only).",
    )
    work_folder: LocalPath | None = Field(
        default=None,
        description="Where run folders (input, output, logs) are made; null: `runs` inside the "
        "spool, on the same disk so inputs are hard links, not copies.",
    )
    docker_url: str | None = Field(
        default=None,
        description="Docker Engine API address, such as unix:///run/docker.sock or a Podman "
        "socket; null uses DOCKER_HOST or the default.",
    )
    lease: Seconds = Field(
        default=60,
        ge=1,
        description="A processing job's lease, renewed while the module runs; a crashed "
        "processor's jobs are taken over this long after it died.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Attempts of a job whose run was interrupted (mercury stopped, the Docker "
        "engine unreachable) before it fails. A module that fails or times out fails its job "
        "at once; `mercury jobs retry` runs it again.",
    )


class NotificationsConfig(Section):
    """Settings shared by every rule's webhook and e-mail notifications."""

    email_from: str = Field(
        default="mercury@localhost", description="Sender address of notification e-mails."
    )
    phi: bool = Field(
        default=False,
        description="Put patient name, MRN and accession number into notifications (otherwise "
        "they read UNKNOWN).",
    )
    webhook_ca_bundle: LocalPath | None = Field(
        default=None,
        description="CA certificates (PEM) used to verify webhook servers; null uses the system's.",
    )
    smtp_host: str = Field(default="localhost", description="SMTP server for e-mail.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port.")
    smtp_user: str | None = Field(default=None, description="SMTP login; null: no login.")
    smtp_password: Secret | None = Field(default=None, description="SMTP password.")
    smtp_starttls: bool = Field(default=False, description="Upgrade the connection with STARTTLS.")
    retries: int = Field(
        default=5, ge=0, description="Retries of a failed webhook or e-mail delivery."
    )


class MercuryConfig(Section):
    """The whole configuration file."""

    appliance_name: str = Field(default="mercury", description="Shown in the UI and notifications.")
    appliance_color: str | None = Field(
        default=None,
        description="Colour of the UI header, to tell appliances apart; null uses the default.",
    )
    receiver: ReceiverConfig = Field(
        default_factory=ReceiverConfig,
        description="The DICOM receiver: address, port, AE titles, who may send.",
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Where image files and the database live."
    )
    timings: TimingsConfig = Field(
        default_factory=TimingsConfig,
        description="Completion, scan, retry and retention timings; the off-peak window.",
    )
    processing: ProcessingConfig = Field(
        default_factory=ProcessingConfig, description="How processing modules are run."
    )
    dispatch: DispatchConfig = Field(
        default_factory=DispatchConfig,
        description="How jobs are sent to targets: parallelism, retries, circuit breaker.",
    )
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig,
        description="Settings shared by all notifications.",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="How long finished work is kept; the emergency clean.",
    )
    web: WebConfig = Field(default_factory=WebConfig, description="The web interface and REST API.")
    targets: dict[Name, Target] = Field(
        default_factory=dict, description="Dispatch targets by name."
    )
    modules: dict[Name, Module] = Field(
        default_factory=dict, description="Processing modules by name."
    )
    rules: dict[Name, Rule] = Field(
        default_factory=dict,
        description="Rules by name, evaluated in the order they appear in the file.",
    )

    @model_validator(mode="before")
    @classmethod
    def _validate_absent_sections(cls, data: Any) -> Any:
        """Validate missing sections from `{}` too, so their default paths get resolved."""
        if not isinstance(data, dict):
            return data
        missing = [name for name in _SECTION_FIELDS if name not in data]
        return {**data, **{name: {} for name in missing}} if missing else data

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> MercuryConfig:
        """Rules may only name targets and modules that exist."""
        if isinstance(info.context, dict) and info.context.get(SKIP_REFERENCES):
            return self
        rules = {name: rule.model_dump() for name, rule in self.rules.items()}
        raise_if_any(
            reference_issues({"targets": self.targets, "modules": self.modules, "rules": rules})
        )
        return self


_SECTION_FIELDS = tuple(
    name
    for name, field in MercuryConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
)
