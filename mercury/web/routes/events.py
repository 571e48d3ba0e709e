"""GET /api/events: the journal, newest first."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from mercury.store.models import EventRow
from mercury.web import rows, schemas
from mercury.web.auth import Viewer
from mercury.web.context import Db
from mercury.web.paging import newest_first
from mercury.web.params import KIND_PATTERN, STAGE_PATTERN, Page, Since, UidQuery, page, utc
from mercury.web.problems import responses

router = APIRouter(prefix="/events", tags=["events"], responses=responses(401, 403, 422))


@router.get("", summary="The journal")
def list_events(
    _user: Viewer,
    db: Db,
    paging: Annotated[Page, Depends(page)],
    stage: Annotated[
        str | None,
        Query(
            pattern=STAGE_PATTERN,
            description="receive, route, process, dispatch, notify, clean, web, serve",
        ),
    ] = None,
    kind: Annotated[
        str | None,
        Query(pattern=KIND_PATTERN, description="Such as series.routed or job.failed."),
    ] = None,
    severity: Literal["info", "warning", "error"] | None = None,
    series_uid: UidQuery = None,
    study_uid: UidQuery = None,
    since: Since = None,
    until: Since = None,
) -> schemas.Page[schemas.Event]:
    query = select(EventRow)
    if stage is not None:
        query = query.where(EventRow.stage == stage)
    if kind is not None:
        query = query.where(EventRow.kind == kind)
    if severity is not None:
        query = query.where(EventRow.severity == severity)
    if series_uid is not None:
        query = query.where(EventRow.series_uid == series_uid)
    if study_uid is not None:
        query = query.where(EventRow.study_uid == study_uid)
    start, end = utc(since, "since"), utc(until, "until")
    if start is not None:
        query = query.where(EventRow.time >= start)
    if end is not None:
        query = query.where(EventRow.time <= end)
    result = newest_first(
        db, query, paging, time=None, key=EventRow.id, position=lambda row: (None, row[0].id)
    )
    return schemas.Page[schemas.Event](
        items=[rows.event(row[0]) for row in result.rows],
        total=result.total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=result.next_cursor,
    )
