"""Index rows of cleaned series: their instances, the job_instances and deliveries that
name those instances, and their journal entries go once ``retention.index_rows`` has passed
since the clean (the time of the series' last ``series.cleaned`` entry). The series row,
its decisions and its jobs stay, as the record of what happened."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mercury.clean.facts import aware, chunks
from mercury.clean.outcome import describe_seconds
from mercury.clean.record import CLEANED, journal
from mercury.store.delivery_models import DeliveryRow
from mercury.store.models import EventRow, InstanceRow, JobInstanceRow, JobRow, SeriesRow


@dataclass
class IndexExpiry:
    series: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def expired_series(session: Session, cutoff: datetime) -> list[str]:
    """Cleaned series whose last clean is at or before ``cutoff``."""
    return list(
        session.scalars(
            select(EventRow.series_uid)
            .join(SeriesRow, SeriesRow.series_uid == EventRow.series_uid)
            .where(EventRow.kind == "series.cleaned", SeriesRow.state == CLEANED)
            .group_by(EventRow.series_uid)
            .having(func.max(EventRow.time) <= aware(cutoff))
        )
    )


def expire_index(
    sessions: sessionmaker[Session],
    now: datetime,
    keep_seconds: float,
    stopping: threading.Event | None = None,
) -> IndexExpiry:
    """Remove the index rows of series cleaned more than ``keep_seconds`` before ``now``
    (one transaction per series), and journal one ``index.expired`` entry for them."""
    with sessions() as session:
        uids = expired_series(session, now - timedelta(seconds=keep_seconds))
    expiry = IndexExpiry()
    done: list[str] = []
    for uid in uids:
        if stopping is not None and stopping.is_set():
            break
        counts = expire_series(sessions, uid)
        if counts is None:
            continue
        done.append(uid)
        expiry.series += 1
        for table, count in counts.items():
            expiry.rows[table] = expiry.rows.get(table, 0) + count
    if done:
        total = sum(expiry.rows.values())
        with sessions.begin() as session:
            journal(
                session,
                now,
                kind="index.expired",
                message=f"Removed {total} index row(s) of {len(done)} series cleaned more "
                f"than {describe_seconds(keep_seconds)} ago",
                details={"series": len(done), "rows": expiry.rows, "uids": done[:200]},
            )
    return expiry


def expire_series(sessions: sessionmaker[Session], series_uid: str) -> dict[str, int] | None:
    """One series' rows, in one transaction; None when it is no longer cleaned (late
    images re-opened it)."""
    counts = {"instances": 0, "job_instances": 0, "deliveries": 0, "events": 0}
    with sessions.begin() as session:
        # Holds the series row: routing cannot re-open it while its rows go.
        held = session.execute(
            update(SeriesRow)
            .where(SeriesRow.series_uid == series_uid, SeriesRow.state == CLEANED)
            .values(state=CLEANED)
            .execution_options(synchronize_session=False)
        )
        if held.rowcount != 1:  # type: ignore[attr-defined]
            return None
        study_uid = session.scalar(
            select(SeriesRow.study_uid).where(SeriesRow.series_uid == series_uid)
        )
        own_jobs = list(session.scalars(select(JobRow.id).where(JobRow.series_uid == series_uid)))
        study_jobs = list(
            session.scalars(
                select(JobRow.id).where(JobRow.study_uid == study_uid, JobRow.series_uid.is_(None))
            )
        )
        # route_round > 0 only: an image received again since the clean keeps its row.
        instances = list(
            session.scalars(
                select(InstanceRow.sop_instance_uid).where(
                    InstanceRow.series_uid == series_uid, InstanceRow.route_round > 0
                )
            )
        )
        for part in chunks(instances):
            for jobs in chunks(own_jobs + study_jobs):
                counts["job_instances"] += _deleted(
                    session,
                    delete(JobInstanceRow).where(
                        JobInstanceRow.job_id.in_(jobs), JobInstanceRow.sop_instance_uid.in_(part)
                    ),
                )
            counts["deliveries"] += _deleted(
                session, delete(DeliveryRow).where(DeliveryRow.sop_instance_uid.in_(part))
            )
            counts["instances"] += _deleted(
                session,
                delete(InstanceRow).where(
                    InstanceRow.sop_instance_uid.in_(part), InstanceRow.route_round > 0
                ),
            )
        for jobs in chunks(own_jobs):  # deliveries of processing results
            counts["deliveries"] += _deleted(
                session, delete(DeliveryRow).where(DeliveryRow.job_id.in_(jobs))
            )
        counts["events"] = _deleted(
            session, delete(EventRow).where(EventRow.series_uid == series_uid)
        )
    return counts


def _deleted(session: Session, statement: Any) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]
