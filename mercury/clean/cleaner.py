"""The cleaner: removes the images of finished series once the retention of their outcome
has passed, or earlier when the spool's disk is too full (the emergency clean).

Cleaning a series happens in two steps so that a crash at any instant leaves nothing the
index misdescribes:

1. one transaction marks the series ``cleaning``, after checking again, with the series
   row held, that its outcome is recorded and (for retention) due;
2. its files are removed (instance files, then its jobs' run and results folders when
   nothing needs them any more), then a second transaction marks it ``cleaned`` and
   journals ``series.cleaned`` with what was removed and why.

A series found ``cleaning`` (the cleaner stopped between the two) is finished first on
the next scan. The emergency clean (:mod:`mercury.clean.emergency`) uses the same two
steps; index rows expire in :mod:`mercury.clean.expiry`; job folders are judged in
:mod:`mercury.clean.folders`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mercury.clean.emergency import Emergency
from mercury.clean.expiry import expire_index
from mercury.clean.facts import (
    SeriesInfo,
    aware,
    chunks,
    facts_for,
    load_facts,
    one_series,
    series_infos,
    series_query,
)
from mercury.clean.files import DiskUsage, clock_marker, disk_usage, park_files, prune_empty
from mercury.clean.folders import JobFolders
from mercury.clean.outcome import (
    ROUTED_SERIES_STATES,
    Outcome,
    Retention,
    classify,
    describe_seconds,
    emergency_rank,
)
from mercury.clean.record import CLEANED, CLEANING, human_bytes, journal
from mercury.clean.report import (
    Candidate,
    Cleaned,
    CleanReport,
    EmergencyReport,
    Listener,
    Quiet,
    Reason,
)
from mercury.config.models import MercuryConfig
from mercury.store.jobs import in_window
from mercury.store.models import InstanceRow, SeriesRow, utcnow
from mercury.store.spool import Spool

log = logging.getLogger("mercury.clean")

Clock = Callable[[], datetime]

PAGE = 200


class _Abandon(Exception):
    """Roll the transaction back: the series is not (or no longer) to be cleaned."""


class Cleaner:
    """One scan at a time (:meth:`scan`); the service calls it on a timer."""

    def __init__(
        self,
        engine: Engine,
        config: MercuryConfig,
        spool: Spool,
        *,
        clock: Clock = utcnow,
        usage: Callable[[], DiskUsage] | None = None,
    ) -> None:
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.config = config
        self.spool = spool
        self.clock = clock
        self.retention = Retention.from_config(config)
        self.threshold = float(config.timings.emergency_clean_percentage)
        self.folders = JobFolders(spool.root, config.processing.work_folder or spool.root / "runs")
        self._usage = usage or (lambda: disk_usage(spool.root))
        self._stopping = threading.Event()
        self.emergency_clean = Emergency(self)

    def describe(self) -> str:
        r = self.retention
        window = " (off-peak only)" if self.config.retention.offpeak_only else ""
        return (
            f"cleaner: success kept {describe_seconds(r.success)}, discard "
            f"{describe_seconds(r.discard)}, error {describe_seconds(r.error)}{window}; "
            f"emergency clean above {self.threshold:g}% disk use"
        )

    def stop(self) -> None:
        """Stop after the series being cleaned (a scan in progress ends early)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def usage(self) -> DiskUsage:
        return self._usage()

    def offpeak_open(self, now: datetime) -> bool:
        timings = self.config.timings
        return in_window(now.astimezone(), timings.offpeak_start, timings.offpeak_end)

    def window_open(self, now: datetime) -> bool:
        """Whether retention may clean now (``retention.offpeak_only``)."""
        return not self.config.retention.offpeak_only or self.offpeak_open(now)

    # -- one scan -------------------------------------------------------------------------

    def scan(self, *, anytime: bool = False, listener: Listener | None = None) -> CleanReport:
        """Finish interrupted cleans, clean what is due (in the off-peak window when so
        configured, or ``anytime``), run the emergency clean when the disk is too full,
        expire old index rows, remove job folders nothing needs any more."""
        listener = listener or Quiet()
        report = CleanReport()
        now = self.clock()
        for item in self.resume():
            report.cleaned.append(item)
            report.resumed += 1
            listener.cleaned(item)
        if anytime or self.window_open(now):
            report.retention_ran = True
            due = self.due(now)
            listener.planned("retention", len(due))
            for candidate in due:
                if self._stopping.is_set():
                    return report
                cleaned = self.clean(candidate)
                if cleaned is not None:
                    report.cleaned.append(cleaned)
                    listener.cleaned(cleaned)
        report.emergency = self.emergency(report=report, listener=listener)
        if self._stopping.is_set():
            return report
        if report.retention_ran:
            report.index = expire_index(
                self.sessions, now, self.retention.index_rows, self._stopping
            )
        report.folders = self.folders.sweep(self.sessions, self.clock)
        return report

    # -- what is due ----------------------------------------------------------------------

    def _pages(self, query: Any) -> Iterable[list[tuple[SeriesInfo, Outcome]]]:
        with self.sessions() as session:
            uids = list(session.scalars(query))
        for part in chunks(uids, PAGE):
            with self.sessions() as session:
                infos = series_infos(session, series_query().where(SeriesRow.series_uid.in_(part)))
                facts = load_facts(session, infos)
            yield [(info, classify(facts[info.series_uid])) for info in infos]

    def due(self, now: datetime) -> list[Candidate]:
        """Series whose retention for their outcome has passed, the longest expired first."""
        cutoff = aware(now) - timedelta(seconds=self.retention.shortest)
        query = select(SeriesRow.series_uid).where(
            SeriesRow.state.in_(ROUTED_SERIES_STATES), SeriesRow.completed_at <= cutoff
        )
        found: list[Candidate] = []
        for page in self._pages(query):
            for info, outcome in page:
                if self.retention.due(outcome, now):
                    expires = self.retention.expires_at(outcome)
                    found.append(Candidate(info, outcome, "retention", expires))
        found.sort(key=lambda c: (c.expires_at or now, c.info.series_uid))
        return found

    def finished(self) -> list[Candidate]:
        """Every finished series not cleaned yet, in the emergency clean's order: success,
        then discard, then error; oldest outcome first within each."""
        query = select(SeriesRow.series_uid).where(SeriesRow.state.in_(ROUTED_SERIES_STATES))
        found: list[Candidate] = []
        for page in self._pages(query):
            found.extend(
                Candidate(info, outcome, "emergency", self.retention.expires_at(outcome))
                for info, outcome in page
                if outcome.finished
            )
        found.sort(key=lambda c: (*emergency_rank(c.outcome), c.info.series_uid))
        return found

    def preview(self, *, anytime: bool = True, below: float | None = None) -> list[Candidate]:
        """What a scan would remove now, without removing anything (the emergency part is
        estimated from the series' sizes in the index)."""
        now = self.clock()
        chosen = self.due(now) if anytime or self.window_open(now) else []
        return chosen + self.emergency_preview(
            below=below, skip={c.info.series_uid for c in chosen}
        )

    def emergency_preview(
        self, *, below: float | None = None, skip: set[str] | None = None
    ) -> list[Candidate]:
        """What the emergency clean would remove now (see :class:`Emergency`)."""
        return self.emergency_clean.preview(below=below, skip=skip)

    def emergency(
        self,
        *,
        below: float | None = None,
        report: CleanReport | None = None,
        listener: Listener | None = None,
    ) -> EmergencyReport | None:
        """Run the emergency clean if the disk is above ``below`` (by default
        timings.emergency_clean_percentage); see :class:`Emergency`."""
        return self.emergency_clean.run(below=below, report=report, listener=listener)

    def infos(self, uids: set[str]) -> list[SeriesInfo]:
        infos: list[SeriesInfo] = []
        for part in chunks(sorted(uids), PAGE):
            with self.sessions() as session:
                infos.extend(
                    series_infos(session, series_query().where(SeriesRow.series_uid.in_(part)))
                )
        return infos

    # -- cleaning one series --------------------------------------------------------------

    def clean(self, candidate: Candidate, details: dict[str, Any] | None = None) -> Cleaned | None:
        """Both steps for one series; None when it is no longer to be cleaned."""
        if not self.begin(candidate):
            return None
        return self.complete(
            candidate.info.series_uid,
            reason=candidate.reason,
            outcome=candidate.outcome,
            details=details,
        )

    def begin(self, candidate: Candidate) -> bool:
        """Step 1: mark the series ``cleaning`` in one transaction, if its outcome (read
        again with the row held) still allows it."""
        uid = candidate.info.series_uid
        now = self.clock()
        try:
            with self.sessions.begin() as session:
                # The update comes first: it holds the series row (and on SQLite the write
                # lock) so routing cannot change it under the checks that follow.
                marked = session.execute(
                    update(SeriesRow)
                    .where(
                        SeriesRow.series_uid == uid,
                        SeriesRow.state.in_(ROUTED_SERIES_STATES),
                    )
                    .values(state=CLEANING)
                    .execution_options(synchronize_session=False)
                )
                if marked.rowcount != 1:  # type: ignore[attr-defined]
                    raise _Abandon
                info = one_series(session, uid)
                assert info is not None
                outcome = classify(facts_for(session, info, state=candidate.info.state))
                if not outcome.finished:
                    raise _Abandon
                if candidate.reason == "retention" and not self.retention.due(outcome, now):
                    raise _Abandon
        except _Abandon:
            return False
        return True

    def complete(
        self,
        series_uid: str,
        *,
        reason: Reason,
        outcome: Outcome,
        resumed: bool = False,
        details: dict[str, Any] | None = None,
    ) -> Cleaned | None:
        """Step 2: remove the files of a series marked ``cleaning``, then mark it
        ``cleaned`` and journal it. Safe to run again after a crash at any point."""
        with self.sessions() as session:
            info = one_series(session, series_uid)
            if info is None or info.state != CLEANING:
                return None
            files = {
                uid: self.spool.absolute(path)
                for uid, path in session.execute(
                    select(InstanceRow.sop_instance_uid, InstanceRow.path).where(
                        InstanceRow.series_uid == series_uid, InstanceRow.route_round > 0
                    )
                )
            }
            jobs = facts_for(session, info, state="routed").jobs
        removal = park_files(files, self.spool.tmp_dir, clock_marker(self.spool.tmp_dir))
        folders = self.folders.remove_for_series(self.sessions, series_uid, jobs)
        item = Cleaned(
            series_uid=series_uid,
            study_uid=info.study_uid,
            description=info.description,
            outcome=outcome.kind,
            reason=reason,
            folders=folders.removed,
            resumed=resumed,
        )
        now = self.clock()
        with self.sessions.begin() as session:
            done = session.execute(
                update(SeriesRow)
                .where(SeriesRow.series_uid == series_uid, SeriesRow.state == CLEANING)
                .values(state=CLEANED)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            state = (
                CLEANED
                if done
                else session.scalar(
                    select(SeriesRow.state).where(SeriesRow.series_uid == series_uid)
                )
            )
            # Instances received again while the files were being removed keep their file.
            wanted = set(
                session.scalars(
                    select(InstanceRow.sop_instance_uid).where(
                        InstanceRow.series_uid == series_uid, InstanceRow.route_round == 0
                    )
                )
            )
            item.files, freed = removal.settle(wanted)
            item.bytes = freed + folders.bytes
            item.kept = len(removal.kept)
            item.reopened = not done and state != CLEANED
            if done or item.reopened:
                self._journal_cleaned(
                    session,
                    item,
                    outcome,
                    now,
                    {
                        **(details or {}),
                        "missing": removal.missing,
                        "folders_kept": folders.kept,
                        "errors": (removal.errors + folders.errors)[:50],
                    },
                )
        prune_empty({path.parent for path in files.values()}, self.spool.data_dir)
        if not done and not item.reopened:
            return None  # another cleaner finished it
        return item

    def _journal_cleaned(
        self,
        session: Session,
        item: Cleaned,
        outcome: Outcome,
        now: datetime,
        extra: dict[str, Any],
    ) -> None:
        retention = self.retention.seconds(outcome.kind)
        if item.reason == "emergency":
            why = "emergency clean: the spool's disk is too full"
        else:
            age = describe_seconds(retention or 0)
            why = f"{outcome.kind}, kept {age}"
        message = (
            f"Removed {item.files} image(s) ({human_bytes(item.bytes)}) of series "
            f"{item.description!r}: {why}"
        )
        if item.folders:
            message += f"; {len(item.folders)} job folder(s)"
        if item.kept:
            message += f"; {item.kept} image(s) received again meanwhile are kept"
        if item.reopened:
            message += "; late images re-opened the series meanwhile"
        details: dict[str, Any] = {
            "reason": item.reason,
            "outcome": outcome.kind,
            "why": outcome.why,
            "since": outcome.since.isoformat() if outcome.since else None,
            "retention": retention,
            "files": item.files,
            "bytes": item.bytes,
            "kept": item.kept,
            "folders": item.folders,
            "resumed": item.resumed,
            **extra,
        }
        journal(
            session,
            now,
            kind="series.cleaned",
            message=message,
            study_uid=item.study_uid,
            series_uid=item.series_uid,
            details=details,
        )

    def resume(self) -> list[Cleaned]:
        """Finish the series a previous scan left ``cleaning``."""
        now = self.clock()
        with self.sessions() as session:
            infos = series_infos(session, series_query().where(SeriesRow.state == CLEANING))
            outcomes = {
                info.series_uid: classify(facts_for(session, info, state="routed"))
                for info in infos
            }
        finished: list[Cleaned] = []
        for info in infos:
            outcome = outcomes[info.series_uid]
            reason: Reason = "retention" if self.retention.due(outcome, now) else "emergency"
            log.info("finishing the interrupted clean of series %s", info.series_uid)
            item = self.complete(info.series_uid, reason=reason, outcome=outcome, resumed=True)
            if item is not None:
                finished.append(item)
        return finished
