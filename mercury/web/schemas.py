"""The shapes of the REST API's answers and request bodies (they make its OpenAPI spec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from mercury.web.accounts import MAX_PASSWORD, MIN_PASSWORD, Role
from mercury.web.params import PlainText, ShortText, UserName
from mercury.web.timeutil import aware

T = TypeVar("T")

UtcTime = Annotated[datetime, AfterValidator(aware)]


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text") from None
    return value


Password = Annotated[
    str,
    StringConstraints(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD),
    AfterValidator(_encodable),
]


class Request(BaseModel):
    """A request body: unknown keys are refused (a misspelt key must not pass unnoticed)."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int = Field(description="Items matching the filters, on every page.")
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )


# -- health -----------------------------------------------------------------------------


class DatabaseHealth(BaseModel):
    reachable: bool
    error: str | None = None


class SpoolHealth(BaseModel):
    path: str
    free_bytes: int | None
    reserve_bytes: int
    ok: bool
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    appliance_name: str
    database: DatabaseHealth
    spool: SpoolHealth
    services: dict[str, str] = Field(
        description="Services of this mercury process and their state (empty when the web "
        "service runs on its own)."
    )


# -- series, studies, decisions, jobs, events -------------------------------------------


class SeriesSummary(BaseModel):
    series_uid: str
    study_uid: str
    modality: str
    series_description: str
    series_number: str
    instance_count: int
    duplicate_count: int
    bytes: int
    first_received_at: UtcTime
    last_received_at: UtcTime
    state: str
    completed_at: UtcTime | None
    completion_reason: str | None
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: str | None


class Instance(BaseModel):
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    size: int
    received_at: UtcTime
    calling_ae: str
    called_ae: str
    peer_host: str
    association_id: str
    duplicate_count: int
    route_round: int


class RuleOutcome(BaseModel):
    rule: str
    fired: bool
    tags_read: list[str]
    missing: list[str] = Field(default_factory=list)
    error: str | None = None
    variant: dict[str, Any] | None = None


class Decision(BaseModel):
    id: int
    decided_at: UtcTime
    scope: str
    series_uid: str | None
    study_uid: str
    round: int
    reason: str
    triggered: list[str]
    discarded: bool
    jobs: list[str]
    rules: list[RuleOutcome] = Field(
        description="Each rule evaluated: fired or not, the tags it read."
    )
    details: dict[str, Any]


class JobSummary(BaseModel):
    id: str
    kind: str
    state: str
    rule: str
    scope: str
    series_uid: str | None
    study_uid: str
    targets: list[str]
    modules: list[str]
    priority: str
    attempts: int
    next_attempt_at: UtcTime
    created_at: UtcTime
    updated_at: UtcTime
    last_error: str | None
    cancel_requested: bool
    deliveries: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Per target: instances by delivery status."
    )


class Event(BaseModel):
    id: int
    time: UtcTime
    stage: str
    kind: str
    severity: str
    message: str
    study_uid: str | None
    series_uid: str | None
    sop_instance_uid: str | None
    association_id: str | None
    details: dict[str, Any]


StageName = Literal["received", "complete", "routed", "processed", "delivered"]


class StageTime(BaseModel):
    stage: StageName
    at: UtcTime | None = Field(description="When the stage was reached; null while pending.")
    seconds: float | None = Field(description="Latency of this stage (see docs/api.md).")
    state: str = Field(description="done, pending, failed or skipped.")


class Timeline(BaseModel):
    stages: list[StageTime]
    total_seconds: float | None = Field(
        description="From the first image received to the last stage reached."
    )
    events: list[Event]


class SeriesDetail(SeriesSummary):
    tags: dict[str, Any]
    expected_count: int | None
    route_round: int
    instances: list[Instance]
    instances_shown: int
    decisions: list[Decision]
    jobs: list[JobSummary]
    timeline: Timeline


class StudySummary(BaseModel):
    study_uid: str
    patient_id: str
    patient_name: str
    accession_number: str
    study_date: str
    study_description: str
    series_count: int
    instance_count: int
    first_received_at: UtcTime
    last_received_at: UtcTime
    state: str
    completed_at: UtcTime | None
    completion_reason: str | None
    pending_rules: list[str]


class StudyDetail(StudySummary):
    series: list[SeriesSummary]
    decisions: list[Decision]
    jobs: list[JobSummary]
    events: list[Event]


class Attempt(BaseModel):
    attempt: int
    target: str
    owner: str
    outcome: str
    sent: int
    warnings: int
    failed: int
    error: str | None
    started_at: UtcTime
    ended_at: UtcTime


class Delivery(BaseModel):
    target: str
    sop_instance_uid: str
    status: str
    code: int | None
    message: str
    attempt: int
    sent_at: UtcTime
    commitment: str | None


class ModuleRun(BaseModel):
    attempt: int
    step: int
    module: str
    runner: str
    run_id: str
    status: str
    exit_code: int | None
    message: str
    started_at: UtcTime
    ended_at: UtcTime | None
    seconds: float | None
    gpus: list[str]


class JobDetail(JobSummary):
    decision_id: int | None
    instance_count: int
    details: dict[str, Any]
    attempt_log: list[Attempt]
    delivery_log: list[Delivery] = Field(description="Per-instance deliveries (the first 1000).")
    module_runs: list[ModuleRun]


class JobAction(BaseModel):
    job: JobSummary
    message: str


# -- targets ----------------------------------------------------------------------------


class TargetInfo(BaseModel):
    name: str
    type: str
    circuit: str = Field(description="closed (up) or open (down: its jobs wait for a probe).")
    consecutive_failures: int
    held: bool
    held_by: str
    held_reason: str
    held_at: UtcTime | None
    last_error: str | None
    last_success_at: UtcTime | None
    opened_at: UtcTime | None
    next_probe_at: UtcTime | None


class HoldRequest(Request):
    reason: ShortText = Field(default="", description="Why, for the journal and the UI.")


class TargetAction(BaseModel):
    target: TargetInfo
    changed: bool = Field(description="False when it already was held (or not held).")


class ForceComplete(BaseModel):
    study_uid: str
    pending_rules: list[str]
    message: str


# -- configuration ----------------------------------------------------------------------


class ConfigIssueOut(BaseModel):
    location: str = Field(description="Key path such as rules.ct.target; empty for the file.")
    message: str
    line: int | None
    column: int | None


class RestartNoteOut(BaseModel):
    section: str
    services: list[str]
    message: str


class ConfigCurrent(BaseModel):
    path: str
    version: int | None = Field(description="The newest version recorded in the index.")
    file_error: str | None = Field(
        description="Why the file on disk does not load (edited by hand); the configuration "
        "shown is the last one that did."
    )
    config: dict[str, Any] = Field(description="Every setting; secrets masked.")


class ConfigSubmission(Request):
    text: Annotated[PlainText, StringConstraints(max_length=2 * 2**20)] = Field(
        description="The whole configuration file: YAML, or JSON when the file is .json."
    )
    comment: ShortText = Field(default="", description="Why, for the version history.")


class Validation(BaseModel):
    valid: bool
    errors: list[ConfigIssueOut]
    restart_required: list[RestartNoteOut] = Field(
        description="If applied: changes that wait for a restart."
    )
    reloads: list[str] = Field(
        description="If applied: services a running mercury restarts with it."
    )


class Applied(BaseModel):
    version: int | None = Field(description="The new version; the current one when unchanged.")
    changed: bool
    restart_required: list[RestartNoteOut]
    reloads: list[str] = Field(
        description="Services a running `mercury serve` restarts with the new configuration "
        "within seconds."
    )
    sections: list[str] = Field(description="Top-level sections that changed.")


class VersionSummary(BaseModel):
    version: int
    created_at: UtcTime
    author: str
    comment: str
    source: str = Field(description="api, restore, or file (the file as found on disk).")
    restored_from: int | None
    digest: str


class VersionDetail(VersionSummary):
    text: str


class VersionDiff(BaseModel):
    version: int
    against: int
    diff: str = Field(description="Unified diff from version `against` to `version`.")


class RestoreRequest(Request):
    comment: ShortText = ""


# -- users, sessions, tokens ------------------------------------------------------------


class LoginRequest(Request):
    name: Annotated[PlainText, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(max_length=MAX_PASSWORD), AfterValidator(_encodable)]


class Me(BaseModel):
    name: str
    role: Role
    via: Literal["session", "token"]
    csrf_token: str | None = Field(
        description="Send as X-CSRF-Token with every cookie-authenticated request that "
        "changes something; null for token requests."
    )


class LoginAnswer(Me):
    expires_at: UtcTime


class PasswordChange(Request):
    current_password: Annotated[
        str, StringConstraints(max_length=MAX_PASSWORD), AfterValidator(_encodable)
    ]
    new_password: Password


class UserOut(BaseModel):
    name: str
    role: str
    enabled: bool
    created_at: UtcTime
    updated_at: UtcTime
    last_login_at: UtcTime | None


class UserCreate(Request):
    name: UserName
    password: Password
    role: Role = "viewer"
    enabled: bool = True


class UserPatch(Request):
    role: Role | None = None
    enabled: bool | None = None
    password: Password | None = None


class TokenCreate(Request):
    description: ShortText = ""
    user: UserName | None = Field(
        default=None, description="Whose token (admins only); default: the caller's."
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(BaseModel):
    id: str
    user: str
    description: str
    created_by: str
    created_at: UtcTime
    last_used_at: UtcTime | None
    expires_at: UtcTime | None
    revoked_at: UtcTime | None


class NewToken(TokenOut):
    token: str = Field(description="Shown once: only its hash is kept.")
