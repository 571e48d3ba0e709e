"""Index tables of the dispatch stage: per-instance delivery records, the reason of every
attempt, and each target's circuit and hold state (shared by every dispatcher process)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mercury.store.models import UID, Base, utcnow


class DeliveryRow(Base):
    """What one target answered for one instance of one job: the delivery proof."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_instance", "sop_instance_uid"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    status: Mapped[str] = mapped_column(String(8))
    code: Mapped[int | None] = mapped_column(Integer, default=None)
    message: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    commitment: Mapped[str | None] = mapped_column(String(12), default=None)
    commitment_reason: Mapped[str | None] = mapped_column(Text, default=None)
    commitment_at: Mapped[datetime | None] = mapped_column(default=None)


class JobAttemptRow(Base):
    """One attempt of a job at one target, with its outcome and the reason it failed."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    sent: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class TargetStateRow(Base):
    """A target's circuit breaker and manual hold; a missing row means closed and not held."""

    __tablename__ = "target_states"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    circuit: Mapped[str] = mapped_column(String(8), default="closed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(default=None)
    next_probe_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_success_at: Mapped[datetime | None] = mapped_column(default=None)
    held: Mapped[bool] = mapped_column(default=False)
    held_reason: Mapped[str] = mapped_column(Text, default="")
    held_by: Mapped[str] = mapped_column(String(64), default="")
    held_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
