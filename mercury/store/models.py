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


class InstanceRow(Base):
    """One stored SOP instance and where its bytes are."""

    __tablename__ = "instances"

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
