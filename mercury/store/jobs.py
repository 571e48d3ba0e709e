"""Jobs: the only interface between stages. Created by routing in its transaction, claimed
by a later stage with a lease; a lease that expires (its owner died) is taken over."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session

from mercury.store.models import JobInstanceRow, JobRow

JobKind = Literal["dispatch", "process", "notify"]
Priority = Literal["urgent", "normal", "offpeak"]

# urgent and normal interleave 2:1 (mercure's scheme): of every three claims, two go to
# urgent work when there is some.
URGENT_SHARE = 2


@dataclass(frozen=True)
class JobSpec:
    """A job routing wants created; `instances` are the SOP Instance UIDs it works on."""

    kind: JobKind
    rule: str
    scope: Literal["series", "study"]
    study_uid: str
    series_uid: str | None
    instances: Sequence[str]
    priority: Priority = "normal"
    target: str | None = None
    targets: Sequence[str] = ()
    modules: Sequence[str] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def create_jobs(
    session: Session, specs: Iterable[JobSpec], *, now: datetime, decision_id: int | None
) -> list[str]:
    """Insert the jobs and their instance references in the caller's transaction."""
    ids: list[str] = []
    rows: list[dict[str, Any]] = []
    links: list[dict[str, str]] = []
    for spec in specs:
        job_id = uuid.uuid4().hex
        ids.append(job_id)
        rows.append(
            {
                "id": job_id,
                "kind": spec.kind,
                "state": "queued",
                "rule": spec.rule,
                "scope": spec.scope,
                "series_uid": spec.series_uid,
                "study_uid": spec.study_uid,
                "target": spec.target,
                "targets": list(spec.targets),
                "modules": list(spec.modules),
                "settings": spec.settings,
                "priority": spec.priority,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
                "decision_id": decision_id,
                "details": spec.details,
            }
        )
        links.extend({"job_id": job_id, "sop_instance_uid": uid} for uid in spec.instances)
    if rows:
        session.execute(insert(JobRow), rows)
    if links:
        session.execute(insert(JobInstanceRow), links)
    return ids


def in_window(now: datetime, start: str, end: str) -> bool:
    """Whether local wall time ``now`` falls in [start, end); end before start wraps midnight."""
    begin, finish = _clock(start), _clock(end)
    current = now.time().replace(tzinfo=None)
    if begin <= finish:
        return begin <= current < finish
    return current >= begin or current < finish


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@dataclass
class Claimer:
    """Claims jobs of one kind for one owner, with the urgent/normal interleave and the
    off-peak window; keeps the interleave position between calls."""

    kind: JobKind
    owner: str
    lease: timedelta = timedelta(minutes=5)
    _turn: int = 0

    def claim(
        self,
        session: Session,
        *,
        now: datetime,
        offpeak_open: bool,
        limit: int = 1,
        skip_targets: Collection[str] = (),
        admit: Callable[[JobRow], bool] | None = None,
    ) -> list[JobRow]:
        """Take up to ``limit`` runnable jobs (queued and due, or with an expired lease),
        leaving alone jobs for ``skip_targets`` (held, down, or at their parallel limit) and
        jobs ``admit`` refuses (a module at its limit, no free GPU)."""
        claimed: list[JobRow] = []
        while len(claimed) < limit:
            order = self._priority_order(offpeak_open)
            job = None
            for priority in order:
                job = self._take_one(session, now, priority, skip_targets, admit)
                if job is not None:
                    break
            if job is None:
                break
            self._turn += 1
            claimed.append(job)
        return claimed

    def _priority_order(self, offpeak_open: bool) -> list[str]:
        urgent_turn = self._turn % (URGENT_SHARE + 1) < URGENT_SHARE
        order = ["urgent", "normal"] if urgent_turn else ["normal", "urgent"]
        if offpeak_open:
            order.append("offpeak")
        return order

    def _take_one(
        self,
        session: Session,
        now: datetime,
        priority: str,
        skip_targets: Collection[str] = (),
        admit: Callable[[JobRow], bool] | None = None,
    ) -> JobRow | None:
        runnable = or_(
            and_(JobRow.state == "queued", JobRow.next_attempt_at <= now),
            and_(JobRow.state == "running", JobRow.lease_expires_at < now),
        )
        conditions = [JobRow.kind == self.kind, JobRow.priority == priority, runnable]
        if skip_targets:
            conditions.append(or_(JobRow.target.is_(None), JobRow.target.not_in(skip_targets)))
        candidates = session.scalars(
            select(JobRow)
            .where(*conditions)
            .order_by(JobRow.next_attempt_at, JobRow.created_at)
            .limit(1 if admit is None else 50)
        ).all()
        candidate = next((job for job in candidates if admit is None or admit(job)), None)
        if candidate is None:
            return None
        # Compare-and-set on the row as read: another claimer that got there first wins.
        taken = session.execute(
            update(JobRow)
            .where(
                JobRow.id == candidate.id,
                JobRow.state == candidate.state,
                JobRow.updated_at == candidate.updated_at,
            )
            .values(
                state="running",
                lease_owner=self.owner,
                lease_expires_at=now + self.lease,
                attempts=JobRow.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return self._take_one(session, now, priority, skip_targets, admit)
        session.refresh(candidate)
        return candidate


def renew_lease(
    session: Session, job_id: str, owner: str, *, now: datetime, lease: timedelta
) -> bool:
    """Extend a lease we still hold; False when it was taken over (stop working on it)."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == "running")
        .values(lease_expires_at=now + lease, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish_job(
    session: Session,
    job_id: str,
    owner: str,
    *,
    now: datetime,
    state: Literal["succeeded", "failed", "cancelled"],
    error: str | None = None,
) -> bool:
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.lease_owner == owner)
        .values(
            state=state, last_error=error, lease_owner=None, lease_expires_at=None, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def retry_later(
    session: Session, job_id: str, owner: str, *, now: datetime, at: datetime, error: str
) -> bool:
    """Give the job back to the queue for another attempt at ``at``."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.lease_owner == owner)
        .values(
            state="queued",
            next_attempt_at=at,
            last_error=error,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def job_instances(session: Session, job_id: str) -> list[str]:
    return list(
        session.scalars(
            select(JobInstanceRow.sop_instance_uid)
            .where(JobInstanceRow.job_id == job_id)
            .order_by(JobInstanceRow.sop_instance_uid)
        )
    )


def requeue(session: Session, job_id: str, *, now: datetime, by: str) -> JobRow | None:
    """Send a failed (or cancelled) job again from scratch: attempts reset, due now.
    None when there is no such job; ValueError when it is still queued or running."""
    job = session.get(JobRow, job_id)
    if job is None:
        return None
    if job.state in ("queued", "running"):
        raise ValueError(
            f"job {job_id} is {job.state}; only failed, cancelled or finished jobs can be retried"
        )
    previous = job.state
    job.state = "queued"
    job.cancel_requested = False
    job.attempts = 0
    job.next_attempt_at = now
    job.lease_owner = None
    job.lease_expires_at = None
    job.updated_at = now
    details = dict(job.details or {})
    details["retried_by"] = by
    details["retried_from"] = previous
    job.details = details
    return job


def find_job(session: Session, prefix: str) -> JobRow | None:
    """A job by its id or an unambiguous prefix of it (as the CLI shows short ids)."""
    exact = session.get(JobRow, prefix)
    if exact is not None or len(prefix) < 4:
        return exact
    matches = list(session.scalars(select(JobRow).where(JobRow.id.startswith(prefix)).limit(2)))
    return matches[0] if len(matches) == 1 else None


def request_cancel(session: Session, job_id: str, *, now: datetime, by: str) -> str:
    """Cancel a job: a queued one at once, a running one by asking its worker (which stops
    the send or the module and records it). Returns the state the job is now in."""
    job = session.get(JobRow, job_id)
    if job is None:
        raise LookupError(job_id)
    if job.state in ("succeeded", "failed", "cancelled"):
        raise ValueError(f"job {job_id} has already {job.state}; nothing to cancel")
    details = dict(job.details or {})
    details["cancelled_by"] = by
    job.details = details
    job.updated_at = now
    if job.state == "queued":
        job.state = "cancelled"
        job.last_error = f"cancelled by {by}"
        return "cancelled"
    job.cancel_requested = True
    return "cancelling"


def cancel_requests(session: Session, owner: str, kind: JobKind) -> list[str]:
    """Running jobs of this owner that someone asked to cancel."""
    return list(
        session.scalars(
            select(JobRow.id).where(
                JobRow.kind == kind,
                JobRow.state == "running",
                JobRow.lease_owner == owner,
                JobRow.cancel_requested.is_(True),
            )
        )
    )
