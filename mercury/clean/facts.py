"""Reading what the outcome of a series depends on from the index, a page of series at a
time (a handful of queries per page, not per series)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from mercury.clean.outcome import JobFact, SeriesFacts
from mercury.store.models import (
    DecisionRow,
    InstanceRow,
    JobInstanceRow,
    JobRow,
    SeriesRow,
    StudyRow,
)

CHUNK = 500


@dataclass(frozen=True)
class SeriesInfo:
    """A series as the cleaner lists it."""

    series_uid: str
    study_uid: str
    state: str
    completed_at: datetime | None
    route_round: int
    description: str
    instances: int
    bytes: int


def aware(moment: datetime) -> datetime:
    """A time from the index in UTC (SQLite gives them back without a time zone)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


SeriesColumns = Select[str, str, str, datetime | None, int, str, int, int]


def series_query() -> SeriesColumns:
    return select(
        SeriesRow.series_uid,
        SeriesRow.study_uid,
        SeriesRow.state,
        SeriesRow.completed_at,
        SeriesRow.route_round,
        SeriesRow.series_description,
        SeriesRow.instance_count,
        SeriesRow.bytes,
    )


def series_infos(session: Session, query: SeriesColumns) -> list[SeriesInfo]:
    infos = []
    for row in session.execute(query):
        info = SeriesInfo(*row)
        if info.completed_at is not None:
            info = replace(info, completed_at=aware(info.completed_at))
        infos.append(info)
    return infos


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _job_fact(row: Any) -> JobFact:
    return JobFact(id=row.id, kind=row.kind, state=row.state, updated_at=aware(row.updated_at))


def load_facts(session: Session, infos: Sequence[SeriesInfo]) -> dict[str, SeriesFacts]:
    """The facts of each series (at most :data:`CHUNK` of them)."""
    uids = [info.series_uid for info in infos]
    studies = sorted({info.study_uid for info in infos})
    if not uids:
        return {}
    unrouted: dict[str, int] = dict(
        session.execute(
            select(InstanceRow.series_uid, func.count())
            .where(InstanceRow.route_round == 0, InstanceRow.series_uid.in_(uids))
            .group_by(InstanceRow.series_uid)
        ).all()
    )
    latest: dict[str, tuple[int, datetime, bool]] = {}
    for uid, round_, decided, discarded in session.execute(
        select(
            DecisionRow.series_uid, DecisionRow.round, DecisionRow.decided_at, DecisionRow.discarded
        ).where(DecisionRow.scope == "series", DecisionRow.series_uid.in_(uids))
    ):
        if uid is None:
            continue
        decided_at = aware(decided)
        known = latest.get(uid)
        if known is None or (round_, decided_at) > known[:2]:
            latest[uid] = (round_, decided_at, bool(discarded))
    jobs: dict[str, list[JobFact]] = defaultdict(list)
    for row in session.execute(
        select(JobRow.id, JobRow.kind, JobRow.state, JobRow.updated_at, JobRow.series_uid).where(
            JobRow.series_uid.in_(uids)
        )
    ):
        jobs[row.series_uid].append(_job_fact(row))
    waiting = {
        uid
        for uid, pending in session.execute(
            select(StudyRow.study_uid, StudyRow.pending_rules).where(
                StudyRow.study_uid.in_(studies)
            )
        )
        if pending
    }
    study_jobs = _study_jobs(session, studies)
    facts: dict[str, SeriesFacts] = {}
    for info in infos:
        decision = latest.get(info.series_uid)
        own = list(jobs.get(info.series_uid, ()))
        own.extend(
            fact
            for fact, covered in study_jobs.get(info.study_uid, ())
            if covered is None or info.series_uid in covered
        )
        facts[info.series_uid] = SeriesFacts(
            series_uid=info.series_uid,
            study_uid=info.study_uid,
            state=info.state,
            completed_at=info.completed_at,
            route_round=info.route_round,
            unrouted=unrouted.get(info.series_uid, 0),
            decided_at=decision[1] if decision else None,
            discarded=decision[2] if decision else False,
            study_waiting=info.study_uid in waiting,
            jobs=tuple(own),
        )
    return facts


def _study_jobs(
    session: Session, studies: Sequence[str]
) -> dict[str, list[tuple[JobFact, set[str] | None]]]:
    """Study-level jobs per study, each with the series it works on: those of its instances,
    or its source job's for a job made from a study job's results; None: the whole study."""
    rows = list(
        session.execute(
            select(
                JobRow.id,
                JobRow.kind,
                JobRow.state,
                JobRow.updated_at,
                JobRow.study_uid,
                JobRow.details,
            ).where(JobRow.study_uid.in_(studies), JobRow.series_uid.is_(None))
        )
    )
    if not rows:
        return {}
    covered = job_series(session, [row.id for row in rows])
    found: dict[str, list[tuple[JobFact, set[str] | None]]] = defaultdict(list)
    for row in rows:
        series = covered.get(row.id)
        source = (row.details or {}).get("source_job")
        if series is None and isinstance(source, str):
            series = covered.get(source)
        found[row.study_uid].append((_job_fact(row), series))
    return found


def job_series(session: Session, job_ids: Iterable[str]) -> dict[str, set[str]]:
    """The series whose instances each job works on (jobs without instances are missing)."""
    found: dict[str, set[str]] = defaultdict(set)
    for part in chunks(sorted(set(job_ids))):
        for job_id, series_uid in session.execute(
            select(JobInstanceRow.job_id, InstanceRow.series_uid)
            .join(InstanceRow, InstanceRow.sop_instance_uid == JobInstanceRow.sop_instance_uid)
            .where(JobInstanceRow.job_id.in_(part))
            .distinct()
        ):
            found[job_id].add(series_uid)
    return dict(found)


def facts_for(session: Session, info: SeriesInfo, *, state: str | None = None) -> SeriesFacts:
    """One series' facts; ``state`` overrides the state read (the cleaner reads a series it
    has just marked as being cleaned)."""
    if state is not None:
        info = replace(info, state=state)
    return load_facts(session, [info])[info.series_uid]


def one_series(session: Session, series_uid: str) -> SeriesInfo | None:
    found = series_infos(session, series_query().where(SeriesRow.series_uid == series_uid))
    return found[0] if found else None
