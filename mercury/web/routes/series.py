"""GET /api/series (search) and /api/series/{uid} (everything about one series)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import String, cast, exists, or_, select
from sqlalchemy.orm import Session

from mercury.store.models import DecisionRow, EventRow, InstanceRow, SeriesRow, StudyRow
from mercury.web import rows, schemas
from mercury.web.auth import Viewer
from mercury.web.context import Db
from mercury.web.paging import newest_first
from mercury.web.params import NameQuery, Page, SeriesUid, Since, UidQuery, ValueQuery, page, utc
from mercury.web.problems import Problem, responses
from mercury.web.timeline import series_timeline

router = APIRouter(prefix="/series", tags=["series"], responses=responses(401, 403, 422))

SeriesState = Literal["receiving", "routed", "discarded", "cleaning", "cleaned"]
MAX_TIMELINE_EVENTS = 2000


def rule_fired(rule: str) -> Any:
    """Decisions list the rules that fired as a JSON array of names; names are
    [0-9a-zA-Z_-] so a quoted substring match is exact (``_`` is escaped)."""
    return cast(DecisionRow.triggered, String).contains(f'"{rule}"', autoescape=True)


@router.get("", summary="Search series")
def search_series(
    _user: Viewer,
    db: Db,
    paging: Annotated[Page, Depends(page)],
    patient_id: ValueQuery = None,
    accession: ValueQuery = None,
    modality: Annotated[str | None, Query(pattern=r"^[A-Z0-9_ ]{1,16}$")] = None,
    received_from: Since = None,
    received_to: Since = None,
    rule: NameQuery = None,
    state: SeriesState | None = None,
    study_uid: UidQuery = None,
) -> schemas.Page[schemas.SeriesSummary]:
    """Series, newest first. ``received_from``/``received_to`` bound the time the series'
    last image arrived; ``rule``: series for which that rule fired."""
    query = select(SeriesRow, StudyRow).join(
        StudyRow, StudyRow.study_uid == SeriesRow.study_uid, isouter=True
    )
    if patient_id is not None:
        query = query.where(StudyRow.patient_id == patient_id)
    if accession is not None:
        query = query.where(StudyRow.accession_number == accession)
    if modality is not None:
        query = query.where(SeriesRow.modality == modality)
    start, end = utc(received_from, "received_from"), utc(received_to, "received_to")
    if start is not None:
        query = query.where(SeriesRow.last_received_at >= start)
    if end is not None:
        query = query.where(SeriesRow.last_received_at <= end)
    if rule is not None:
        query = query.where(
            exists().where(DecisionRow.series_uid == SeriesRow.series_uid, rule_fired(rule))
        )
    if state is not None:
        query = query.where(SeriesRow.state == state)
    if study_uid is not None:
        query = query.where(SeriesRow.study_uid == study_uid)
    result = newest_first(
        db,
        query,
        paging,
        time=SeriesRow.last_received_at,
        key=SeriesRow.series_uid,
        position=lambda row: (row[0].last_received_at, row[0].series_uid),
    )
    return schemas.Page[schemas.SeriesSummary](
        items=[rows.series_summary(series, study) for series, study in result.rows],
        total=result.total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=result.next_cursor,
    )


def _events(db: Session, series: SeriesRow) -> list[EventRow]:
    return list(
        db.scalars(
            select(EventRow)
            .where(
                or_(
                    EventRow.series_uid == series.series_uid,
                    (EventRow.study_uid == series.study_uid) & EventRow.series_uid.is_(None),
                )
            )
            .order_by(EventRow.time, EventRow.id)
            .limit(MAX_TIMELINE_EVENTS)
        )
    )


@router.get(
    "/{uid}", summary="One series: instances, decisions, jobs, timeline", responses=responses(404)
)
def get_series(
    uid: SeriesUid,
    _user: Viewer,
    db: Db,
    instances_limit: Annotated[
        int, Query(ge=0, le=10000, description="Instances to list (most series hold fewer).")
    ] = 1000,
) -> schemas.SeriesDetail:
    series = db.get(SeriesRow, uid)
    if series is None:
        raise Problem(404, f"no series {uid} in the index")
    study = db.get(StudyRow, series.study_uid)
    instances = list(
        db.scalars(
            select(InstanceRow)
            .where(InstanceRow.series_uid == uid)
            .order_by(InstanceRow.received_at, InstanceRow.sop_instance_uid)
            .limit(instances_limit)
        )
    )
    decisions = rows.decisions_of_series(db, series)
    jobs = rows.jobs_of_series(db, series)
    summary = rows.series_summary(series, study)
    return schemas.SeriesDetail(
        **summary.model_dump(),
        tags=dict(series.tags or {}),
        expected_count=series.expected_count,
        route_round=series.route_round,
        instances=[
            schemas.Instance(
                sop_instance_uid=i.sop_instance_uid,
                sop_class_uid=i.sop_class_uid,
                transfer_syntax=i.transfer_syntax,
                size=i.size,
                received_at=i.received_at,
                calling_ae=i.calling_ae,
                called_ae=i.called_ae,
                peer_host=i.peer_host,
                association_id=i.association_id,
                duplicate_count=i.duplicate_count,
                route_round=i.route_round,
            )
            for i in instances
        ],
        instances_shown=len(instances),
        decisions=[rows.decision(d) for d in decisions],
        jobs=rows.job_summaries(db, jobs),
        timeline=series_timeline(series, decisions, jobs, _events(db, series)),
    )
