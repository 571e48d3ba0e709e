"""The index: SQLAlchemy models. Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

UID = String(64)
AE = String(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class AssociationRow(Base):
    """One DICOM association: who sent, when, how it ended, what it delivered."""

    __tablename__ = "associations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    receiver_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    calling_ae: Mapped[str] = mapped_column(AE)
    called_ae: Mapped[str] = mapped_column(AE)
    peer_host: Mapped[str] = mapped_column(String(64))
    peer_port: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    close_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)


class StudyRow(Base):
    """A study as received so far."""

    __tablename__ = "studies"

    study_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(128), default="")
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime]
    last_received_at: Mapped[datetime] = mapped_column(index=True)
    # Study-level routing: rules waiting for the study to complete, and its outcome.
    pending_rules: Mapped[list[str]] = mapped_column(JSON, default=list)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    completion_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    state: Mapped[str] = mapped_column(String(16), default="receiving", index=True)


class SeriesRow(Base):
    """A series as received so far, with the tag set rules are evaluated on."""

    __tablename__ = "series"

    series_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_description: Mapped[str] = mapped_column(String(128), default="")
    series_number: Mapped[str] = mapped_column(String(16), default="")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_received_at: Mapped[datetime]
    last_received_at: Mapped[datetime] = mapped_column(index=True)
    last_association_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # Routing state (written by the router): completion and late arrivals.
    expected_count: Mapped[int | None] = mapped_column(Integer, default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    completion_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    route_round: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="receiving", index=True)


class SeriesVariantRow(Base):
    """One distinct tag set seen among the images of a series (the values that are not
    per-image identity or timing: see index_writer.variant_digest). Rules with
    ``evaluate_on: every_instance`` are evaluated on each; the first image's set is one."""

    __tablename__ = "series_variants"

    series_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    digest: Mapped[str] = mapped_column(String(32), primary_key=True)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The first image that carried this tag set, and when it arrived.
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    received_at: Mapped[datetime]


class InstanceRow(Base):
    """One stored SOP instance and where its bytes are."""

    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_unrouted", "route_round", "series_uid"),)

    sop_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    series_uid: Mapped[str] = mapped_column(UID, index=True)
    study_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax: Mapped[str] = mapped_column(UID)
    path: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str] = mapped_column(AE)
    called_ae: Mapped[str] = mapped_column(AE)
    peer_host: Mapped[str] = mapped_column(String(64))
    association_id: Mapped[str] = mapped_column(String(32), index=True)
    received_at: Mapped[datetime]
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    # 0 until routing has taken the instance into a decision; a late or re-sent instance
    # is 0 again, which is how the router finds late arrivals without races.
    route_round: Mapped[int] = mapped_column(Integer, default=0)


class EventRow(Base):
    """The journal: one row per thing that happened, written with the state change it describes."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_time", "time"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    stage: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(48), index=True)
    severity: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    study_uid: Mapped[str | None] = mapped_column(UID, default=None)
    series_uid: Mapped[str | None] = mapped_column(UID, default=None, index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID, default=None)
    association_id: Mapped[str | None] = mapped_column(String(32), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DecisionRow(Base):
    """What routing decided for a series or study, and why (the rules that fired, the tags
    each one read); written in the transaction that creates the jobs."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    scope: Mapped[str] = mapped_column(String(8))
    series_uid: Mapped[str | None] = mapped_column(UID, default=None, index=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    round: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(32))
    triggered: Mapped[list[str]] = mapped_column(JSON, default=list)
    discarded: Mapped[bool] = mapped_column(default=False)
    jobs: Mapped[list[str]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class JobRow(Base):
    """A unit of work for a later stage (dispatch, process, notify): the only interface
    between stages. Claimed with a lease; an expired lease is taken over."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "kind", "state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    rule: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(8))
    series_uid: Mapped[str | None] = mapped_column(UID, default=None, index=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    target: Mapped[str | None] = mapped_column(String(64), default=None)
    modules: Mapped[list[str]] = mapped_column(JSON, default=list)
    targets: Mapped[list[str]] = mapped_column(JSON, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    decision_id: Mapped[int | None] = mapped_column(Integer, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set by `mercury jobs cancel` (or the UI) while a job runs: its worker stops it.
    cancel_requested: Mapped[bool] = mapped_column(default=False)


class JobInstanceRow(Base):
    """The stored instances a job works on: references, never copies."""

    __tablename__ = "job_instances"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)


# Tables of later stages live in their own modules; importing them here registers them on
# Base.metadata for Alembic and for every user of the index.
from mercury.store import delivery_models as _delivery_models  # noqa: E402, F401
from mercury.store import notify_models as _notify_models  # noqa: E402, F401
from mercury.store import process_models as _process_models  # noqa: E402, F401
from mercury.store import web_models as _web_models  # noqa: E402, F401
