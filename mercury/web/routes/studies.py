"""GET /api/studies, /api/studies/{uid}; POST /api/studies/{uid}/force-complete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from mercury.route.router import FORCE_REQUESTED
from mercury.store.models import DecisionRow, EventRow, JobRow, SeriesRow, StudyRow
from mercury.web import rows, schemas
from mercury.web.audit import journal
from mercury.web.auth import Operator, Viewer
from mercury.web.context import Db
from mercury.web.paging import newest_first
from mercury.web.params import Page, Since, StudyUid, ValueQuery, page, utc
from mercury.web.problems import Problem, responses

router = APIRouter(prefix="/studies", tags=["studies"], responses=responses(401, 403, 422))

StudyState = Literal["receiving", "routed", "discarded", "cleaning", "cleaned"]
MAX_STUDY_EVENTS = 2000


@router.get("", summary="Search studies")
def search_studies(
    _user: Viewer,
    db: Db,
    paging: Annotated[Page, Depends(page)],
    patient_id: ValueQuery = None,
    accession: ValueQuery = None,
    study_date: Annotated[str | None, Query(pattern=r"^[0-9]{8}$", description="YYYYMMDD")] = None,
    received_from: Since = None,
    received_to: Since = None,
    state: StudyState | None = None,
) -> schemas.Page[schemas.StudySummary]:
    """Studies, newest first; ``received_from``/``received_to`` bound the time of the last
    image received."""
    query = select(StudyRow)
    if patient_id is not None:
        query = query.where(StudyRow.patient_id == patient_id)
    if accession is not None:
        query = query.where(StudyRow.accession_number == accession)
    if study_date is not None:
        query = query.where(StudyRow.study_date == study_date)
    start, end = utc(received_from, "received_from"), utc(received_to, "received_to")
    if start is not None:
        query = query.where(StudyRow.last_received_at >= start)
    if end is not None:
        query = query.where(StudyRow.last_received_at <= end)
    if state is not None:
        query = query.where(StudyRow.state == state)
    result = newest_first(
        db,
        query,
        paging,
        time=StudyRow.last_received_at,
        key=StudyRow.study_uid,
        position=lambda row: (row[0].last_received_at, row[0].study_uid),
    )
    return schemas.Page[schemas.StudySummary](
        items=[schemas.StudySummary(**rows.study_fields(row[0])) for row in result.rows],
        total=result.total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=result.next_cursor,
    )


@router.get(
    "/{uid}", summary="One study: its series, decisions, jobs, journal", responses=responses(404)
)
def get_study(uid: StudyUid, _user: Viewer, db: Db) -> schemas.StudyDetail:
    study = db.get(StudyRow, uid)
    if study is None:
        raise Problem(404, f"no study {uid} in the index")
    series = list(
        db.scalars(
            select(SeriesRow)
            .where(SeriesRow.study_uid == uid)
            .order_by(SeriesRow.first_received_at)
        )
    )
    decisions = db.scalars(
        select(DecisionRow)
        .where(DecisionRow.study_uid == uid)
        .order_by(DecisionRow.decided_at, DecisionRow.id)
    )
    jobs = db.scalars(
        select(JobRow).where(JobRow.study_uid == uid).order_by(JobRow.created_at, JobRow.id)
    )
    events = db.scalars(
        select(EventRow)
        .where(EventRow.study_uid == uid)
        .order_by(EventRow.time, EventRow.id)
        .limit(MAX_STUDY_EVENTS)
    )
    return schemas.StudyDetail(
        **rows.study_fields(study),
        series=[rows.series_summary(s, study) for s in series],
        decisions=[rows.decision(d) for d in decisions],
        jobs=rows.job_summaries(db, jobs),
        events=[rows.event(e) for e in events],
    )


@router.post(
    "/{uid}/force-complete",
    summary="Complete a study now (operator)",
    responses=responses(404, 409),
)
def force_complete(uid: StudyUid, user: Operator, db: Db) -> schemas.ForceComplete:
    """Ask the router to treat the study as complete at its next scan (within a second):
    the rules waiting for the study proceed with the images received so far."""
    study = db.get(StudyRow, uid, with_for_update=True)
    if study is None:
        raise Problem(404, f"no study {uid} in the index")
    if study.state != "receiving" or not study.pending_rules:
        raise Problem(
            409,
            f"no rule waits for study {uid} to complete (it is {study.state}); "
            "force-complete applies to study-level rules still waiting",
        )
    pending = list(study.pending_rules)
    study.completion_reason = FORCE_REQUESTED
    journal(
        db,
        user.name,
        "study.force_requested",
        f"{user.name} asked to complete study {uid} now (rules {', '.join(pending)})",
        severity="warning",
        study_uid=uid,
        rules=pending,
    )
    db.commit()
    return schemas.ForceComplete(
        study_uid=uid,
        pending_rules=pending,
        message="the router completes the study at its next scan",
    )
