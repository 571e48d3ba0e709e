"""Queues: processing, dispatch and notification jobs, and the failed ones, with filters;
retry and cancel (operators); one job with its attempts, deliveries and module runs."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import String, cast, func, or_, select

from mercury.store.models import JobRow, SeriesRow, StudyRow
from mercury.web import rows
from mercury.web.auth import Operator, Viewer
from mercury.web.context import Context, Db
from mercury.web.paging import newest_first
from mercury.web.params import JOB_ID_PATTERN, Page
from mercury.web.problems import Problem
from mercury.web.routes import jobs as jobs_api
from mercury.web.ui.base import UiRoute, done, remember_user, render
from mercury.web.ui.images import PAGE_SIZE, Pager, clamp_offset, clean_query

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

TABS = {
    "dispatch": ("Dispatch", "dispatch"),
    "process": ("Processing", "process"),
    "notify": ("Notifications", "notify"),
    "failed": ("Failed", None),
}
STATES = {
    "active": ("queued", "running"),
    "queued": ("queued",),
    "running": ("running",),
    "succeeded": ("succeeded",),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
    "all": (),
}
_NAME = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_JOB_ID = re.compile(JOB_ID_PATTERN)


def _tab_counts(db: Any) -> dict[str, int]:
    counts = dict.fromkeys(TABS, 0)
    for kind, state, count in db.execute(
        select(JobRow.kind, JobRow.state, func.count())
        .where(JobRow.state.in_(("queued", "running", "failed")))
        .group_by(JobRow.kind, JobRow.state)
    ):
        if state == "failed":
            counts["failed"] += int(count)
        elif kind in counts:
            counts[kind] += int(count)
    return counts


@router.get("/queues")
def queues(
    request: Request,
    user: Viewer,
    context: Context,
    db: Db,
    tab: str = "dispatch",
    state: str = "active",
    rule: str = "",
    target: str = "",
    q: str = "",
    offset: int = 0,
) -> Response:
    tab = tab if tab in TABS else "dispatch"
    state = state if state in STATES else "active"
    query = (
        select(JobRow, SeriesRow, StudyRow)
        .join(SeriesRow, SeriesRow.series_uid == JobRow.series_uid, isouter=True)
        .join(StudyRow, StudyRow.study_uid == JobRow.study_uid, isouter=True)
    )
    kind = TABS[tab][1]
    if kind is None:
        query = query.where(JobRow.state == "failed")
    else:
        query = query.where(JobRow.kind == kind)
        if STATES[state]:
            query = query.where(JobRow.state.in_(STATES[state]))
    if rule and _NAME.match(rule):
        query = query.where(JobRow.rule == rule)
    if target and _NAME.match(target):
        query = query.where(
            or_(
                JobRow.target == target,
                cast(JobRow.targets, String).contains(f'"{target}"', autoescape=True),
            )
        )
    text = clean_query(q)
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        query = query.where(
            or_(
                JobRow.id.startswith(text.lower(), autoescape=True),
                SeriesRow.series_description.ilike(like, escape="\\"),
                StudyRow.patient_name.ilike(like, escape="\\"),
                StudyRow.patient_id.ilike(like, escape="\\"),
                JobRow.last_error.ilike(like, escape="\\"),
            )
        )
    page = Page(PAGE_SIZE, clamp_offset(offset), None)
    result = newest_first(
        db,
        query,
        page,
        time=JobRow.created_at,
        key=JobRow.id,
        position=lambda row: (row[0].created_at, row[0].id),
    )
    jobs = rows.job_summaries(db, [row[0] for row in result.rows])
    series_names: dict[str, tuple[str, str]] = {}
    for job_row, series, study in result.rows:
        label = series.series_description if series else ""
        patient = study.patient_name if study else ""
        series_names[job_row.id] = (label or "(no description)", patient or "")
    config = context.config
    return render(
        request,
        "queues.html",
        title="Queues",
        tab=tab,
        tabs=TABS,
        counts=_tab_counts(db),
        state=state,
        states=list(STATES),
        jobs=jobs,
        series_names=series_names,
        pager=Pager(page.offset, page.limit, result.total),
        filters={"rule": rule, "target": target, "q": text},
        rules=list(config.rules),
        targets=list(config.targets),
    )


def _job_id(value: str) -> str:
    if not _JOB_ID.match(value):
        raise Problem(404, f"no job {value}")
    return value


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, user: Viewer, db: Db) -> Response:
    detail = jobs_api.get_job(_job_id(job_id), user, db)
    series = db.get(SeriesRow, detail.series_uid) if detail.series_uid else None
    return render(
        request,
        "job.html",
        title=f"Job {detail.id[:8]}",
        job=detail,
        series=rows.series_summary(series, db.get(StudyRow, series.study_uid)) if series else None,
    )


@router.post("/jobs/{job_id}/retry")
def retry(request: Request, job_id: str, user: Operator, context: Context, db: Db) -> Response:
    answer = jobs_api.retry_job(_job_id(job_id), user, db, context)
    return done(request, f"Job {answer.job.id[:8]} {answer.message}.")


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, user: Operator, context: Context, db: Db) -> Response:
    answer = jobs_api.cancel_job(_job_id(job_id), user, db, context)
    return done(request, f"Job {answer.job.id[:8]}: {answer.message}.")
