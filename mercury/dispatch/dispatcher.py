"""The dispatcher: claims dispatch jobs with a lease, sends each to its targets in a worker
thread, records the delivery proof per instance, retries with backoff, and keeps every
target's circuit breaker.

Every state change is one transaction: a target's delivery rows, its attempt record, its
circuit state and the journal entries go together; the job's next state goes with its own
journal entry. A dispatcher killed at any point leaves a running job whose lease expires;
the next dispatcher takes it over and sends what the index does not show as delivered.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from mercury.config.models import MercuryConfig
from mercury.dispatch.base import (
    DispatchError,
    InstanceResult,
    Origin,
    OutgoingInstance,
    Sender,
    SenderContext,
    Shipment,
    TargetUnreachable,
)
from mercury.dispatch.outcome import TargetAttempt, summarise, verdict
from mercury.dispatch.records import (
    delivered_uids,
    load_instances,
    write_attempt,
    write_deliveries,
)
from mercury.dispatch.registry import UnsupportedTarget, create_sender
from mercury.dispatch.retry import resolve
from mercury.store import target_state
from mercury.store.jobs import (
    Claimer,
    cancel_requests,
    finish_job,
    in_window,
    renew_lease,
    retry_later,
)
from mercury.store.journal import record
from mercury.store.models import JobRow, utcnow
from mercury.store.spool import Spool

log = logging.getLogger("mercury.dispatch")

Clock = Callable[[], datetime]


@dataclass
class _Running:
    """A claimed job as its worker sees it."""

    id: str
    targets: list[str]
    attempts: int
    created_at: datetime
    details: dict[str, Any]
    study_uid: str
    series_uid: str | None
    rule: str
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_requested: bool = False
    future: Future[None] | None = None


class Dispatcher:
    """One dispatcher process's worth of sending. ``tick()`` is called on a timer; the
    sends themselves run in a thread pool of ``dispatch.workers`` threads."""

    def __init__(
        self,
        engine: Engine,
        config: MercuryConfig,
        spool: Spool,
        *,
        owner: str | None = None,
        clock: Clock = utcnow,
        senders: Mapping[str, Sender] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.settings = config.dispatch
        self.spool = spool
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:dispatch"
        self.sessions = sessionmaker(engine)
        self.lease = timedelta(seconds=self.settings.lease)
        self.claimer = Claimer("dispatch", self.owner, self.lease)
        self.senders: dict[str, Sender] = dict(senders or {})
        self.unusable: dict[str, str] = {}
        self._build_senders()
        self.pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="mercury-send")
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._probing: set[str] = set()
        self._stopping = threading.Event()
        self._renewed_at = time.monotonic()
        self.wakeup: Callable[[], None] | None = None
        """Called from a worker thread when a job ends (the service wakes its timer)."""

    # -- set-up ---------------------------------------------------------------------------

    def _build_senders(self) -> None:
        receiver_titles = self.config.receiver.ae_titles
        context = SenderContext(
            default_ae_title=receiver_titles[0] if receiver_titles else "MERCURY",
            work_folder=self.spool.root / "work",
            extra={"commitment_port": self.settings.storage_commitment_port},
        )
        for name, target in self.config.targets.items():
            if name in self.senders or target.direction == "pull":
                continue
            try:
                self.senders[name] = create_sender(name, target, context)
            except UnsupportedTarget as exc:
                self.unusable[name] = str(exc)
            except Exception as exc:  # a broken TLS file, say: that target waits, others run
                self.unusable[name] = f"target {name!r} cannot be used: {exc}"
        for reason in self.unusable.values():
            log.warning("%s", reason)

    def describe(self) -> str:
        ready = len(self.senders)
        text = f"dispatcher for {ready} target{'s' if ready != 1 else ''}"
        if self.unusable:
            text += f" ({len(self.unusable)} waiting: {', '.join(sorted(self.unusable))})"
        return text

    # -- the timer ------------------------------------------------------------------------

    def tick(self) -> int:
        """Renew leases, start due probes, claim and start as many jobs as there is room
        for; returns how many jobs were started."""
        if self._stopping.is_set():
            return 0
        now = self.clock()
        self._renew_leases(now)
        self._watch_cancellations()
        self._start_probes(now)
        return self._claim(now)

    def _watch_cancellations(self) -> None:
        with self._lock:
            if not self._running:
                return
        with self.sessions() as session:
            wanted = cancel_requests(session, self.owner, "dispatch")
        with self._lock:
            for job_id in wanted:
                job = self._running.get(job_id)
                if job is not None:
                    job.cancel_requested = True
                    job.cancel.set()

    def busy(self) -> bool:
        with self._lock:
            return bool(self._running or self._probing)

    def close(self, grace: float = 30.0) -> None:
        """Stop claiming, ask running sends to stop at the next instance, wait for them."""
        self._stopping.set()
        with self._lock:
            for job in self._running.values():
                job.cancel.set()
        deadline = time.monotonic() + grace
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- claiming -------------------------------------------------------------------------

    def _limit(self, target: str) -> int:
        config = self.config.targets.get(target)
        if config is not None and config.max_parallel is not None:
            return config.max_parallel
        return self.settings.max_parallel_per_target

    def _skipped_targets(self, blocked: Mapping[str, str]) -> set[str]:
        with self._lock:
            counts: dict[str, int] = {}
            for job in self._running.values():
                for target in job.targets:
                    counts[target] = counts.get(target, 0) + 1
        full = {target for target, count in counts.items() if count >= self._limit(target)}
        return full | set(blocked) | set(self.unusable)

    def _claim(self, now: datetime) -> int:
        started = 0
        offpeak = in_window(
            now.astimezone(), self.config.timings.offpeak_start, self.config.timings.offpeak_end
        )
        while True:
            with self._lock:
                if len(self._running) + len(self._probing) >= self.settings.workers:
                    break
            with self.sessions.begin() as session:
                skip = self._skipped_targets(target_state.unavailable(session))
                claimed = self.claimer.claim(
                    session, now=now, offpeak_open=offpeak, limit=1, skip_targets=skip
                )
                if not claimed:
                    break
                job = self._running_job(claimed[0])
                if claimed[0].cancel_requested:  # asked while its previous owner was dead
                    self._cancelled(session, job, now)
                    continue
                record(
                    session,
                    stage="dispatch",
                    kind="job.claimed",
                    message=f"Dispatch job {job.id[:8]} attempt {job.attempts} to "
                    f"{', '.join(job.targets)}",
                    study_uid=job.study_uid,
                    series_uid=job.series_uid,
                    details={"job": job.id, "attempt": job.attempts, "owner": self.owner},
                )
            with self._lock:
                self._running[job.id] = job
            job.future = self.pool.submit(self._work, job)
            started += 1
        return started

    @staticmethod
    def _running_job(row: JobRow) -> _Running:
        targets = [row.target] if row.target else list(row.targets or [])
        return _Running(
            id=row.id,
            targets=targets,
            attempts=row.attempts,
            created_at=row.created_at,
            details=dict(row.details or {}),
            study_uid=row.study_uid,
            series_uid=row.series_uid,
            rule=row.rule,
        )

    def _renew_leases(self, now: datetime) -> None:
        if time.monotonic() - self._renewed_at < self.lease.total_seconds() / 3:
            return
        self._renewed_at = time.monotonic()
        with self._lock:
            jobs = list(self._running.values())
        for job in jobs:
            with self.sessions.begin() as session:
                if not renew_lease(session, job.id, self.owner, now=now, lease=self.lease):
                    log.warning("lost the lease of job %s; stopping its send", job.id)
                    job.cancel.set()

    # -- the circuit breaker's probes -----------------------------------------------------

    def _start_probes(self, now: datetime) -> None:
        with self.sessions.begin() as session:
            due = [name for name in target_state.probes_due(session, now) if name in self.senders]
        for name in due:
            with self._lock:
                if name in self._probing:
                    continue
                self._probing.add(name)
            self.pool.submit(self._probe, name)

    def _probe(self, name: str) -> None:
        try:
            try:
                result = self.senders[name].probe()
                ok, message = result.ok, result.message
            except Exception as exc:
                ok, message = False, f"probe failed: {exc}"
            now = self.clock()
            with self.sessions.begin() as session:
                if ok:
                    target_state.note_success(session, name, now=now, via="probe")
                else:
                    target_state.probe_failed(
                        session,
                        name,
                        message,
                        now=now,
                        probe_interval=self.settings.circuit_probe_interval,
                    )
        except Exception:
            log.exception("probing target %s failed", name)
        finally:
            with self._lock:
                self._probing.discard(name)

    # -- one job --------------------------------------------------------------------------

    def _work(self, job: _Running) -> None:
        try:
            self._send_job(job)
        except Exception as exc:
            log.exception("dispatch job %s failed unexpectedly", job.id)
            self._give_back(job, f"internal error: {exc!r}")
        finally:
            with self._lock:
                self._running.pop(job.id, None)
            if self.wakeup is not None:
                self.wakeup()  # a slot is free: claim the next job now, not at the next tick

    def _send_job(self, job: _Running) -> None:
        with self.sessions() as session:
            instances, missing, origin = load_instances(session, job.id, self.spool, job.details)
        delivered_to = list(job.details.get("delivered_to", []))
        attempts: list[TargetAttempt] = []
        for target in job.targets:
            if target in delivered_to:
                continue
            if job.cancel.is_set():
                break
            attempts.append(self._send_to(job, target, instances, missing, origin))
        if job.cancel.is_set():
            if job.cancel_requested:
                with self.sessions.begin() as session:
                    self._cancelled(session, job, self.clock())
            elif self._stopping.is_set():
                self._give_back(job, None)
            return
        self._finish(job, attempts)

    def _cancelled(self, session: Session, job: _Running, now: datetime) -> None:
        if finish_job(session, job.id, self.owner, now=now, state="cancelled", error="cancelled"):
            record(
                session,
                stage="dispatch",
                kind="job.cancelled",
                severity="warning",
                message=f"Dispatch job {job.id[:8]} cancelled by "
                f"{job.details.get('cancelled_by', 'an operator')}",
                study_uid=job.study_uid,
                series_uid=job.series_uid,
                details={"job": job.id},
            )

    def _send_to(
        self,
        job: _Running,
        target: str,
        instances: Sequence[OutgoingInstance],
        missing: Sequence[str],
        origin: Origin,
    ) -> TargetAttempt:
        started = self.clock()
        with self.sessions.begin() as session:
            blocked = target_state.unavailable(session).get(target)
            already = delivered_uids(session, job.id, target)
        sender = self.senders.get(target)
        if target not in self.config.targets:
            summary = TargetAttempt(
                target, "unreachable", error=f"target {target!r} is not in the configuration"
            )
            self._record_attempt(job, target, started, summary, [], [], count=False)
            return summary
        if sender is None or blocked is not None:
            reason = self.unusable.get(target) or f"target {target} is {blocked}"
            return TargetAttempt(target, "deferred", error=reason)

        results: list[InstanceResult] = [
            InstanceResult(uid, "failed", message="no longer stored: removed from the index")
            for uid in missing
        ]
        to_send: list[OutgoingInstance] = []
        for item in instances:
            if sender.resumable and item.sop_instance_uid in already:
                continue
            if not item.path.exists():
                results.append(
                    InstanceResult(
                        item.sop_instance_uid,
                        "failed",
                        message=f"file missing from the spool: {item.path}",
                    )
                )
                continue
            to_send.append(item)

        error: str | None = None
        unreachable = False
        commitments = []
        notes: list[str] = []
        if to_send:
            shipment = Shipment(job.id, target, to_send, origin, job.attempts, job.cancel)
            try:
                report = sender.send(shipment)
                results.extend(report.results)
                commitments, notes = report.commitments, report.notes
            except TargetUnreachable as exc:
                results.extend(exc.results)
                error, unreachable = str(exc) or type(exc).__name__, True
            except DispatchError as exc:
                results.extend(exc.results)
                error = str(exc) or type(exc).__name__
            except Exception as exc:
                log.exception("sender of target %s failed", target)
                error = f"unexpected error in the {target} sender: {exc!r}"
            answered = {result.sop_instance_uid for result in results}
            if error is None and any(i.sop_instance_uid not in answered for i in to_send):
                error = "the sender did not report on every instance"
        summary = summarise(target, results, error)
        if unreachable:
            summary = replace(summary, outcome="unreachable")
        elif job.cancel.is_set() and error is None and summary.outcome != "delivered":
            summary = replace(summary, outcome="broken", error="stopped: lease lost or shutdown")
        self._record_attempt(job, target, started, summary, results, commitments, notes=notes)
        return summary

    def _record_attempt(
        self,
        job: _Running,
        target: str,
        started: datetime,
        summary: TargetAttempt,
        results: Sequence[InstanceResult],
        commitments: Sequence[Any],
        *,
        count: bool = True,
        notes: Sequence[str] = (),
    ) -> None:
        now = self.clock()
        with self.sessions.begin() as session:
            write_deliveries(session, job.id, target, job.attempts, results, commitments, now)
            write_attempt(session, job.id, job.attempts, self.owner, started, now, summary)
            if count and summary.outcome in ("unreachable", "broken"):
                target_state.note_failure(
                    session,
                    target,
                    summary.error or summary.outcome,
                    now=now,
                    threshold=self.settings.circuit_failures,
                    probe_interval=self.settings.circuit_probe_interval,
                )
            elif count and (summary.sent or summary.warnings or summary.outcome == "delivered"):
                target_state.note_success(session, target, now=now)
            self._journal_attempt(session, job, target, started, now, summary, commitments, notes)
            if summary.done:
                delivered = list(job.details.get("delivered_to", []))
                if target not in delivered:
                    delivered.append(target)
                job.details["delivered_to"] = delivered
                session.execute(
                    update(JobRow)
                    .where(JobRow.id == job.id, JobRow.lease_owner == self.owner)
                    .values(details=job.details)
                    .execution_options(synchronize_session=False)
                )

    @staticmethod
    def _journal_attempt(
        session: Session,
        job: _Running,
        target: str,
        started: datetime,
        now: datetime,
        summary: TargetAttempt,
        commitments: Sequence[Any],
        notes: Sequence[str],
    ) -> None:
        seconds = (now - started).total_seconds()
        counts = f"{summary.sent} sent"
        if summary.warnings:
            counts += f", {summary.warnings} with warnings"
        if summary.failed:
            counts += f", {summary.failed} failed"
        details: dict[str, Any] = {
            "job": job.id,
            "target": target,
            "attempt": job.attempts,
            "outcome": summary.outcome,
            "sent": summary.sent,
            "warnings": summary.warnings,
            "failed": summary.failed,
            "seconds": round(seconds, 3),
        }
        if notes:
            details["notes"] = list(notes)
        if commitments:
            committed = sum(1 for c in commitments if c.committed)
            details["committed"] = committed
            details["not_committed"] = len(commitments) - committed
        if summary.outcome == "delivered":
            kind, severity = "dispatch.sent", "info"
            message = f"Sent to {target}: {counts} in {seconds:.1f} s"
        else:
            kind, severity = "dispatch.failed", "warning"
            message = f"Sending to {target} {summary.outcome}: {counts}; {summary.error}"
        record(
            session,
            stage="dispatch",
            kind=kind,
            severity=severity,
            message=message,
            study_uid=job.study_uid,
            series_uid=job.series_uid,
            details=details,
        )
        if commitments and details["not_committed"]:
            record(
                session,
                stage="dispatch",
                kind="dispatch.not_committed",
                severity="warning",
                message=f"{target} did not commit {details['not_committed']} of "
                f"{len(commitments)} instances",
                study_uid=job.study_uid,
                series_uid=job.series_uid,
                details={"job": job.id, "target": target},
            )

    def _finish(self, job: _Running, attempts: Sequence[TargetAttempt]) -> None:
        now = self.clock()
        pending = [a for a in attempts if not a.done]
        target_config = self.config.targets.get(pending[0].target) if pending else None
        backoff = resolve(self.config, target_config)
        created = (
            job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=now.tzinfo)
        )
        decision = verdict(attempts, gives_up=backoff.gives_up(job.attempts, created, now))
        where = {"study_uid": job.study_uid, "series_uid": job.series_uid}
        reason = "; ".join(f"{a.target}: {a.error}" for a in attempts if a.error) or None
        with self.sessions.begin() as session:
            if decision == "succeeded":
                if not finish_job(session, job.id, self.owner, now=now, state="succeeded"):
                    return
                record(
                    session,
                    stage="dispatch",
                    kind="job.succeeded",
                    message=f"Dispatch job {job.id[:8]} delivered to {', '.join(job.targets)}",
                    details={"job": job.id, "attempts": job.attempts},
                    **where,
                )
            elif decision == "failed":
                if not finish_job(
                    session, job.id, self.owner, now=now, state="failed", error=reason
                ):
                    return
                record(
                    session,
                    stage="dispatch",
                    kind="job.failed",
                    severity="error",
                    message=f"Dispatch job {job.id[:8]} failed after {job.attempts} "
                    f"attempt{'s' if job.attempts != 1 else ''}: {reason}. "
                    f"Resend with `mercury jobs retry {job.id[:8]}`.",
                    details={"job": job.id, "attempts": job.attempts},
                    **where,
                )
            elif decision == "wait":
                wait = timedelta(seconds=self.settings.circuit_probe_interval)
                if not self._requeue(
                    session, job, at=now + wait, now=now, refund=True, error=reason
                ):
                    return
                record(
                    session,
                    stage="dispatch",
                    kind="job.waiting",
                    message=f"Dispatch job {job.id[:8]} waits: {reason}",
                    details={"job": job.id},
                    **where,
                )
            else:
                delay = backoff.delay(job.attempts, self.rng)
                at = now + timedelta(seconds=delay)
                if not retry_later(
                    session, job.id, self.owner, now=now, at=at, error=reason or "failed"
                ):
                    return
                record(
                    session,
                    stage="dispatch",
                    kind="job.retry_scheduled",
                    severity="warning",
                    message=f"Dispatch job {job.id[:8]} attempt {job.attempts} failed; "
                    f"retry in {delay:.0f} s ({reason})",
                    details={"job": job.id, "attempt": job.attempts, "retry_at": at.isoformat()},
                    **where,
                )

    def _requeue(
        self,
        session: Session,
        job: _Running,
        *,
        at: datetime,
        now: datetime,
        refund: bool,
        error: str | None,
    ) -> bool:
        values: dict[str, Any] = {
            "state": "queued",
            "next_attempt_at": at,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if refund:
            values["attempts"] = JobRow.attempts - 1
        if error:
            values["last_error"] = error
        result = session.execute(
            update(JobRow)
            .where(JobRow.id == job.id, JobRow.lease_owner == self.owner)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def _give_back(self, job: _Running, error: str | None) -> None:
        """Return a job we stopped working on (shutdown, internal error) to the queue."""
        now = self.clock()
        try:
            with self.sessions.begin() as session:
                self._requeue(session, job, at=now, now=now, refund=error is None, error=error)
        except Exception:
            log.exception("could not give job %s back; its lease will expire", job.id)
