"""The notifier: claims notify jobs with a lease, renders the rule's templates, delivers
by webhook and/or e-mail in worker threads, and retries with exponential backoff up to
``notifications.retries`` times.

Every attempt is journaled per channel (``notification.sent`` or ``notification.failed``)
in the transaction that moves the job on: succeeded, retried later, or failed. A channel
that was delivered is not sent again when the other one is retried; one that was refused
for good (a broken template, an HTTP 4xx answer, an SMTP 5xx) is not retried.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from mercury.config.models import MercuryConfig
from mercury.config.rules import Rule
from mercury.dispatch.retry import Backoff
from mercury.notify import email, webhook
from mercury.notify.context import load_occasion
from mercury.notify.errors import DeliveryFailed
from mercury.notify.templates import (
    TemplateProblem,
    email_body,
    email_subject,
    template_variables,
    webhook_payload,
)
from mercury.store.jobs import Claimer, finish_job, retry_later
from mercury.store.journal import record
from mercury.store.models import JobRow, utcnow

log = logging.getLogger("mercury.notify")

Clock = Callable[[], datetime]
Channel = Literal["webhook", "email"]

LEASE = timedelta(minutes=5)
"""Longer than any attempt can take (both channels' timeouts), so it is never renewed."""
WORKERS = 4
RETRY_BASE = 10.0
RETRY_FACTOR = 2.0
RETRY_JITTER = 0.2
CHANNEL_NAMES: dict[str, str] = {"webhook": "webhook", "email": "e-mail"}


@dataclass
class _Job:
    """A claimed notify job as its worker sees it."""

    id: str
    rule: str
    scope: str
    study_uid: str
    series_uid: str | None
    attempts: int
    details: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.details.get("event") or "completed").upper()


@dataclass
class Attempt:
    """One channel's try: delivered, or why not and whether a retry may help."""

    channel: Channel
    to: str
    ok: bool
    message: str
    permanent: bool = False


class _LeaseLost(Exception):
    pass


@dataclass
class _Plan:
    channels: list[tuple[Channel, str]] = field(default_factory=list)
    problem: str | None = None


class Notifier:
    """One process's notification delivery; :meth:`tick` is called on a timer."""

    def __init__(
        self,
        engine: Engine,
        config: MercuryConfig,
        *,
        owner: str | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        workers: int = WORKERS,
    ) -> None:
        self.config = config
        self.settings = config.notifications
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:notify"
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.claimer = Claimer("notify", self.owner, LEASE)
        self.backoff = Backoff(
            base=RETRY_BASE,
            factor=RETRY_FACTOR,
            cap=max(RETRY_BASE, float(config.timings.retry_delay)),
            jitter=RETRY_JITTER,
            max_retries=self.settings.retries,
            max_age=None,
        )
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="mercury-notify")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._stopping = threading.Event()

    def describe(self) -> str:
        count = sum(1 for rule in self.config.rules.values() if _channels(rule).channels)
        return f"notifier for {count} rule{'s' if count != 1 else ''} with a webhook or e-mail"

    # -- the timer ------------------------------------------------------------------------

    def tick(self) -> int:
        """Claim due notify jobs while workers are free; returns how many were started."""
        started = 0
        while not self._stopping.is_set():
            with self._lock:
                if len(self._running) >= self.workers:
                    break
            now = self.clock()
            with self.sessions.begin() as session:
                claimed = self.claimer.claim(session, now=now, offpeak_open=True, limit=1)
                if not claimed:
                    break
                job = _Job(
                    id=claimed[0].id,
                    rule=claimed[0].rule,
                    scope=claimed[0].scope,
                    study_uid=claimed[0].study_uid,
                    series_uid=claimed[0].series_uid,
                    attempts=claimed[0].attempts,
                    details=dict(claimed[0].details or {}),
                )
                if claimed[0].cancel_requested:
                    self._cancelled(session, job, now)
                    continue
            with self._lock:
                self._running.add(job.id)
            self.pool.submit(self._work, job)
            started += 1
        return started

    def busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def close(self, grace: float = 30.0) -> None:
        """Stop claiming and let the deliveries under way finish (each is bounded by its
        timeouts); a job still running after ``grace`` is taken over once its lease ends."""
        self._stopping.set()
        deadline = time.monotonic() + grace
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one job --------------------------------------------------------------------------

    def _work(self, job: _Job) -> None:
        try:
            self._deliver(job)
        except Exception:
            log.exception("notify job %s failed unexpectedly; it is retried", job.id)
            self._give_back(job)
        finally:
            with self._lock:
                self._running.discard(job.id)

    def _deliver(self, job: _Job) -> None:
        rule = self.config.rules.get(job.rule)
        plan = (
            _channels(rule)
            if rule is not None
            else _Plan(problem=f"rule {job.rule!r} is no longer in the configuration")
        )
        if plan.problem is not None or not plan.channels:
            self._conclude(job, [], problem=plan.problem)
            return
        assert rule is not None
        with self.sessions() as session:
            occasion = load_occasion(
                session,
                job_id=job.id,
                rule=job.rule,
                study_uid=job.study_uid,
                series_uid=job.series_uid,
                details=job.details,
            )
        variables = template_variables(occasion, phi=self.settings.phi)
        if job.attempts == 1:  # new, or sent again by `mercury jobs retry`: try refusals again
            job.details.pop("refused", None)
        settled = set(job.details.get("delivered", [])) | set(job.details.get("refused", {}))
        attempts = [
            self._attempt(rule, channel, to, variables)
            for channel, to in plan.channels
            if channel not in settled
        ]
        self._conclude(job, attempts)

    def _attempt(self, rule: Rule, channel: Channel, to: str, variables: dict[str, Any]) -> Attempt:
        try:
            if channel == "webhook":
                payload = webhook_payload(rule, variables)
                answer = webhook.post(
                    rule.notification_webhook.strip(),
                    payload,
                    ca_bundle=self.settings.webhook_ca_bundle,
                )
            else:
                message = email.build_message(
                    sender=self.settings.email_from,
                    to=email.recipients(rule.notification_email),
                    subject=email_subject(self.config.appliance_name, variables),
                    body=email_body(rule, variables),
                    subtype=rule.notification_email_type,
                )
                answer = email.send(self.settings, message)
        except TemplateProblem as problem:
            return Attempt(channel, to, False, f"template problem in {problem}", permanent=True)
        except DeliveryFailed as failure:
            return Attempt(channel, to, False, failure.message, permanent=failure.permanent)
        except Exception as error:  # a bug must not lose the notification
            log.exception("delivering a notification by %s failed unexpectedly", channel)
            return Attempt(channel, to, False, f"internal error: {error!r}")
        return Attempt(channel, to, True, answer)

    # -- recording the outcome --------------------------------------------------------------

    def _conclude(
        self, job: _Job, attempts: Sequence[Attempt], *, problem: str | None = None
    ) -> None:
        """One transaction: the job's next state, its details, and a journal entry per
        attempt (or one saying why nothing was sent)."""
        now = self.clock()
        details = dict(job.details)
        delivered = list(details.get("delivered", []))
        refused = dict(details.get("refused", {}))
        for attempt in attempts:
            if attempt.ok:
                delivered.append(attempt.channel)
            elif attempt.permanent:
                refused[attempt.channel] = attempt.message
        details["delivered"], details["refused"] = delivered, refused
        retrying = [a for a in attempts if not a.ok and not a.permanent]
        gives_up = self.backoff.gives_up(job.attempts, now, now)
        retry_at: datetime | None = None
        if retrying and not gives_up:
            retry_at = now + timedelta(seconds=self.backoff.delay(job.attempts, self.rng))
        reasons = [problem] if problem else []
        reasons += [f"{channel}: {why}" for channel, why in refused.items()]
        reasons += [f"{a.channel}: {a.message}" for a in retrying]
        try:
            with self.sessions.begin() as session:
                session.execute(
                    update(JobRow)
                    .where(JobRow.id == job.id, JobRow.lease_owner == self.owner)
                    .values(details=details)
                    .execution_options(synchronize_session=False)
                )
                if retry_at is not None:
                    moved = retry_later(
                        session, job.id, self.owner, now=now, at=retry_at, error="; ".join(reasons)
                    )
                else:
                    state: Literal["failed", "succeeded"] = "failed" if reasons else "succeeded"
                    error = "; ".join(reasons) or None
                    moved = finish_job(
                        session, job.id, self.owner, now=now, state=state, error=error
                    )
                if not moved:
                    raise _LeaseLost
                if problem is not None:
                    self._journal_problem(session, job, problem)
                elif not attempts and not delivered:
                    self._journal_nothing(session, job)
                for attempt in attempts:
                    self._journal_attempt(session, job, attempt, retry_at, now)
        except _LeaseLost:  # taken over: its new owner delivers and records the outcome
            log.warning("lost the lease of notify job %s; its outcome is not recorded", job.id)

    def _where(self, job: _Job) -> dict[str, Any]:
        return {"study_uid": job.study_uid, "series_uid": job.series_uid}

    def _journal_attempt(
        self,
        session: Session,
        job: _Job,
        attempt: Attempt,
        retry_at: datetime | None,
        now: datetime,
    ) -> None:
        how = CHANNEL_NAMES[attempt.channel]
        details: dict[str, Any] = {
            "job": job.id,
            "rule": job.rule,
            "event": job.event,
            "channel": attempt.channel,
            "to": attempt.to,
            "attempt": job.attempts,
        }
        if source := job.details.get("source_job"):
            details["source_job"] = source
        if attempt.ok:
            record(
                session,
                stage="notify",
                kind="notification.sent",
                message=f"Rule {job.rule}: {job.event} notification sent by {how} to "
                f"{attempt.to} ({attempt.message})",
                details={**details, "answer": attempt.message},
                **self._where(job),
            )
            return
        final = attempt.permanent or retry_at is None
        if attempt.permanent:
            outcome = "failed for good"
        elif retry_at is None:
            outcome = f"failed after {job.attempts} attempt{'s' if job.attempts != 1 else ''}"
        else:
            wait = (retry_at - now).total_seconds()
            outcome = f"failed (attempt {job.attempts}); retry in {wait:.0f} s"
        details.update({"error": attempt.message, "final": final})
        if retry_at is not None and not attempt.permanent:
            details["retry_at"] = retry_at.isoformat()
        hint = f". Send it again with `mercury jobs retry {job.id[:8]}`." if final else ""
        record(
            session,
            stage="notify",
            kind="notification.failed",
            severity="error" if final else "warning",
            message=f"Rule {job.rule}: {job.event} notification by {how} to {attempt.to} "
            f"{outcome}: {attempt.message}{hint}",
            details=details,
            **self._where(job),
        )

    def _journal_problem(self, session: Session, job: _Job, problem: str) -> None:
        record(
            session,
            stage="notify",
            kind="notification.failed",
            severity="error",
            message=f"{job.event} notification of rule {job.rule} not sent: {problem}",
            details={
                "job": job.id,
                "rule": job.rule,
                "event": job.event,
                "error": problem,
                "final": True,
            },
            **self._where(job),
        )

    def _journal_nothing(self, session: Session, job: _Job) -> None:
        record(
            session,
            stage="notify",
            kind="notification.skipped",
            message=f"Rule {job.rule} has no webhook or e-mail address: {job.event} "
            "notification not sent",
            details={"job": job.id, "rule": job.rule, "event": job.event},
            **self._where(job),
        )

    def _cancelled(self, session: Session, job: _Job, now: datetime) -> None:
        if finish_job(session, job.id, self.owner, now=now, state="cancelled", error="cancelled"):
            record(
                session,
                stage="notify",
                kind="job.cancelled",
                severity="warning",
                message=f"Notify job {job.id[:8]} cancelled by "
                f"{job.details.get('cancelled_by', 'an operator')}",
                details={"job": job.id},
                **self._where(job),
            )

    def _give_back(self, job: _Job) -> None:
        now = self.clock()
        try:
            with self.sessions.begin() as session:
                retry_later(
                    session,
                    job.id,
                    self.owner,
                    now=now,
                    at=now + timedelta(seconds=self.backoff.delay(job.attempts, self.rng)),
                    error="internal error",
                )
        except Exception:
            log.exception("could not give notify job %s back; its lease will expire", job.id)


def _channels(rule: Rule) -> _Plan:
    """Where the rule's notifications go, with what the journal shows of each address."""
    plan = _Plan()
    url = rule.notification_webhook.strip()
    if url:
        plan.channels.append(("webhook", webhook.describe_url(url)))
    addresses = email.recipients(rule.notification_email)
    if addresses:
        plan.channels.append(("email", ", ".join(addresses)))
    return plan
