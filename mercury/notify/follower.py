"""Following the journal: RECEIVED and ERROR notifications from events other stages
already write, so that the receiver, the dispatcher and the processor know nothing of
notifications.

- ``series.received`` (the index writer, in the transaction of a series' first image):
  the rules are evaluated on the series' tags; each rule that fires and notifies on
  reception gets a notify job with event ``received``.
- ``job.failed`` (the dispatcher or the processor, with the job's final state): the
  failed job's rule, if it notifies on errors, gets a notify job with event ``error``.

The follower's place is a row of ``journal_cursors``, written in the transaction that
creates the jobs, with a compare-and-set on its revision: after a crash nothing is
announced twice, and two followers (two mercury processes) never act on one event.

Event ids come from a sequence; on PostgreSQL a transaction can commit a lower id after
a higher one is visible. A missing id is therefore a *gap* that may still fill: the
follower acts on the events after it (remembering them in ``done``) but keeps its
position before the gap until the event appears or ``gap_wait`` seconds have passed (a
rolled-back transaction leaves a gap for good).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mercury.config.rules import Rule
from mercury.notify.triggers import on_error, on_reception
from mercury.route.ruleset import RuleSet
from mercury.store.jobs import JobSpec, Priority, create_jobs
from mercury.store.models import EventRow, JobRow, SeriesRow, utcnow
from mercury.store.notify_models import JournalCursorRow

log = logging.getLogger("mercury.notify")

CURSOR = "notifier"
KINDS = ("series.received", "job.failed")
BATCH = 500
GAP_WAIT = 30.0
"""Seconds a missing event id may take to appear before the follower moves past it."""
MAX_GAP = 10_000
"""A jump in ids larger than this is not waited for (events removed by the clean-up)."""
FAILING_KINDS = ("dispatch", "process")
"""Jobs whose failure is announced; a failed notification announces nothing."""


class _CursorMoved(Exception):
    """Another follower wrote the cursor since we read it."""


def notify_priority(rule: Rule) -> Priority:
    """Notifications keep a rule's urgency but never wait for the off-peak window."""
    return "urgent" if rule.priority == "urgent" else "normal"


class JournalFollower:
    """Call :meth:`poll` on a timer; each call reads what the journal gained since."""

    def __init__(
        self,
        engine: Engine,
        rules: RuleSet,
        *,
        name: str = CURSOR,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        gap_wait: float = GAP_WAIT,
        batch: int = BATCH,
    ) -> None:
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.rules = rules
        self.name = name
        self.clock = clock
        self.monotonic = monotonic
        self.gap_wait = gap_wait
        self.batch = batch
        # What this process knows beyond the stored cursor; rebuilt from the cursor
        # whenever its revision is not the one we wrote last.
        self._revision: int | None = None
        self._scanned = 0
        self._gaps: dict[int, float] = {}

    def poll(self) -> list[str]:
        """Act on the new events; returns the ids of the notify jobs created."""
        try:
            return self._poll()
        except _CursorMoved:
            self._revision = None
            return []
        except Exception:
            self._revision = None  # start again from the stored cursor
            raise

    def _poll(self) -> list[str]:
        now = self.clock()
        with self.sessions.begin() as session:
            cursor = session.get(JournalCursorRow, self.name)
            if cursor is None:
                self._create_cursor(session, now)
                return []
            if cursor.revision != self._revision:
                self._scanned = cursor.position
                self._gaps = {}
            position = cursor.position
            done = set(cursor.done)
            gaps = dict(self._gaps)
            rows = list(
                session.scalars(
                    select(EventRow)
                    .where(EventRow.id > self._scanned)
                    .order_by(EventRow.id)
                    .limit(self.batch)
                )
            )
            filled: list[EventRow] = []
            if gaps:
                filled = list(session.scalars(select(EventRow).where(EventRow.id.in_(gaps))))
            tick = self.monotonic()
            self._note_gaps(rows, gaps, tick)
            for row in filled:
                gaps.pop(row.id, None)
            scanned = rows[-1].id if rows else self._scanned

            created: list[str] = []
            for row in sorted([*filled, *rows], key=lambda r: r.id):
                if row.kind not in KINDS or row.id in done or row.id <= position:
                    continue
                specs = self._specs(session, row)
                created += create_jobs(session, specs, now=now, decision_id=None)
                done.add(row.id)

            for gap in [gap for gap, seen in gaps.items() if tick - seen >= self.gap_wait]:
                del gaps[gap]
                log.debug("journal event %d never appeared; moving past it", gap)
            new_position = min(gaps) - 1 if gaps else max(scanned, position)
            new_done = sorted(i for i in done if i > new_position)
            revision = cursor.revision
            if new_position != position or new_done != sorted(cursor.done):
                moved = session.execute(
                    update(JournalCursorRow)
                    .where(
                        JournalCursorRow.name == self.name,
                        JournalCursorRow.revision == cursor.revision,
                    )
                    .values(
                        position=new_position, done=new_done, revision=revision + 1, updated_at=now
                    )
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    raise _CursorMoved
                revision += 1
        self._revision = revision
        self._scanned = scanned
        self._gaps = gaps
        return created

    def _create_cursor(self, session: Session, now: datetime) -> None:
        """No cursor (removed by hand): follow from the present end of the journal."""
        end = session.scalar(select(func.max(EventRow.id))) or 0
        session.add(
            JournalCursorRow(name=self.name, position=end, done=[], revision=0, updated_at=now)
        )
        try:
            session.flush()
        except IntegrityError:  # another follower created it first
            raise _CursorMoved from None
        log.info("journal follower %s starts after event %d", self.name, end)

    def _note_gaps(self, rows: Sequence[EventRow], gaps: dict[int, float], tick: float) -> None:
        expected = self._scanned + 1
        for row in rows:
            if row.id > expected:
                if row.id - expected > MAX_GAP:
                    log.warning(
                        "journal events %d to %d are missing (removed?); not waiting for them",
                        expected,
                        row.id - 1,
                    )
                else:
                    for missing in range(expected, row.id):
                        gaps.setdefault(missing, tick)
            expected = row.id + 1

    # -- events to notify jobs --------------------------------------------------------------

    def _specs(self, session: Session, event: EventRow) -> list[JobSpec]:
        if event.kind == "series.received":
            return self._received(session, event)
        return self._failed(session, event)

    def _received(self, session: Session, event: EventRow) -> list[JobSpec]:
        series = session.get(SeriesRow, event.series_uid) if event.series_uid else None
        if series is None:
            return []
        selection = self.rules.select({k: str(v) for k, v in (series.tags or {}).items()})
        if selection.discarded:
            return []
        specs = []
        for name in selection.triggered:
            rule = self.rules.rule(name)
            if rule.action == "discard" or not on_reception(rule):
                continue
            specs.append(
                JobSpec(
                    kind="notify",
                    rule=name,
                    scope="series",
                    study_uid=series.study_uid,
                    series_uid=series.series_uid,
                    instances=(),
                    priority=notify_priority(rule),
                    details={"event": "received", "journal_event": event.id},
                )
            )
        return specs

    def _failed(self, session: Session, event: EventRow) -> list[JobSpec]:
        job_id = (event.details or {}).get("job")
        job = session.get(JobRow, job_id) if isinstance(job_id, str) else None
        if job is None or job.kind not in FAILING_KINDS:
            return []
        rule = self.rules.config.rules.get(job.rule)
        if rule is None or not on_error(rule):
            return []
        return [
            JobSpec(
                kind="notify",
                rule=job.rule,
                scope="study" if job.scope == "study" else "series",
                study_uid=job.study_uid,
                series_uid=job.series_uid,
                instances=(),
                priority=notify_priority(rule),
                details={
                    "event": "error",
                    "source_job": job.id,
                    "text": job.last_error or event.message,
                    "journal_event": event.id,
                },
            )
        ]
