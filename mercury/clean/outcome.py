"""A series' outcome from its index rows, and how long its images are kept for it: pure
functions, so the rules that decide what may be deleted are tested without a database.

Outcomes:

- ``pending``: still receiving, not complete, not routed, an instance not yet taken into a
  routing decision (route_round 0), a study rule still waiting for the study, or a job
  queued or running. Pending data is never removed, not even by the emergency clean.
- ``success``: every job that used the series (or its study) succeeded.
- ``discard``: routing decided, and created no job for it (a discard rule, no rule fired,
  or only rules that needed nothing from its images).
- ``error``: every job finished, and one of them failed or was cancelled.

The outcome's time (``since``) is when it was recorded: the last job's finish, or the
routing decision when that came later (a late arrival's round that created no job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from mercury.config.models import MercuryConfig

OutcomeKind = Literal["pending", "success", "discard", "error"]
FINISHED_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})
FAILED_JOB_STATES = frozenset({"failed", "cancelled"})
ROUTED_SERIES_STATES = frozenset({"routed", "discarded"})
# The emergency clean removes finished data in this order (oldest first within each).
EMERGENCY_ORDER: tuple[OutcomeKind, ...] = ("success", "discard", "error")


@dataclass(frozen=True)
class JobFact:
    """What the outcome needs of one job: its state and when it last changed."""

    id: str
    kind: str
    state: str
    updated_at: datetime


@dataclass(frozen=True)
class SeriesFacts:
    """The index rows of one series that decide its outcome."""

    series_uid: str
    study_uid: str
    state: str
    completed_at: datetime | None
    route_round: int
    unrouted: int = 0
    """Instances with route_round 0: received, not yet taken into a decision."""
    decided_at: datetime | None = None
    """The latest routing decision for the series."""
    discarded: bool = False
    """Whether that decision discarded the series."""
    study_waiting: bool = False
    """Study rules still waiting for the series' study to complete."""
    jobs: Sequence[JobFact] = ()
    """Every job that works on the series: its own, its study's, and those made from
    their results."""


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    since: datetime | None
    why: str
    """For pending: what it waits for; otherwise how the outcome came about."""

    @property
    def finished(self) -> bool:
        return self.kind != "pending"


def _pending(why: str) -> Outcome:
    return Outcome("pending", None, why)


def classify(facts: SeriesFacts) -> Outcome:
    """The outcome of a series from its rows (see the module's description)."""
    if facts.state not in ROUTED_SERIES_STATES:
        return _pending(f"series is {facts.state}")
    if facts.completed_at is None or facts.route_round == 0 or facts.decided_at is None:
        return _pending("not routed yet")
    if facts.unrouted:
        return _pending(f"{facts.unrouted} instance(s) not routed yet")
    if facts.study_waiting:
        return _pending("a study rule waits for the study to complete")
    unfinished = [job for job in facts.jobs if job.state not in FINISHED_JOB_STATES]
    if unfinished:
        job = unfinished[0]
        return _pending(f"{job.kind} job {job.id[:8]} is {job.state}")
    since = max([facts.decided_at, *(job.updated_at for job in facts.jobs)])
    failed = [job for job in facts.jobs if job.state in FAILED_JOB_STATES]
    if failed:
        job = failed[0]
        return Outcome("error", since, f"{job.kind} job {job.id[:8]} {job.state}")
    if facts.jobs:
        return Outcome("success", since, f"{len(facts.jobs)} job(s) succeeded")
    why = "discarded by routing" if facts.discarded else "routed with nothing to do"
    return Outcome("discard", since, why)


@dataclass(frozen=True)
class Retention:
    """Seconds images are kept per outcome, and index rows after the images are gone."""

    success: float
    discard: float
    error: float
    index_rows: float

    @classmethod
    def from_config(cls, config: MercuryConfig) -> Retention:
        settings = config.retention
        success = settings.success if settings.success is not None else config.timings.retention
        return cls(success, settings.discard, settings.error, settings.index_rows)

    def seconds(self, kind: OutcomeKind) -> float | None:
        """How long images with this outcome are kept; None: kept (pending)."""
        if kind == "pending":
            return None
        return float(getattr(self, kind))

    @property
    def shortest(self) -> float:
        return min(self.success, self.discard, self.error)

    def expires_at(self, outcome: Outcome) -> datetime | None:
        seconds = self.seconds(outcome.kind)
        if seconds is None or outcome.since is None:
            return None
        return outcome.since + timedelta(seconds=seconds)

    def due(self, outcome: Outcome, now: datetime) -> bool:
        """Whether the retention of this outcome has passed."""
        expires = self.expires_at(outcome)
        return expires is not None and expires <= now


def emergency_rank(outcome: Outcome) -> tuple[int, datetime]:
    """Sort key of the emergency clean: success, then discard, then error; oldest first."""
    assert outcome.finished
    assert outcome.since is not None
    return EMERGENCY_ORDER.index(outcome.kind), outcome.since


def describe_seconds(seconds: float) -> str:
    """A retention for people: "3 days", "12 hours", "90 s"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} s"
