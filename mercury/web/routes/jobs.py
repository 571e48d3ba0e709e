"""GET /api/jobs, /api/jobs/{id}; POST /api/jobs/{id}/retry and /cancel (operator)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import Session

from mercury.store.delivery_models import DeliveryRow, JobAttemptRow
from mercury.store.jobs import find_job, request_cancel, requeue
from mercury.store.models import JobInstanceRow, JobRow
from mercury.store.process_models import ModuleRunRow
from mercury.web import rows, schemas
from mercury.web.audit import actor, journal
from mercury.web.auth import Operator, Viewer
from mercury.web.context import Context, Db
from mercury.web.paging import newest_first
from mercury.web.params import JobId, NameQuery, Page, UidQuery, page
from mercury.web.problems import Problem, responses
from mercury.web.timeutil import aware

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=responses(401, 403, 422))

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["dispatch", "process", "notify"]
MAX_DELIVERY_LOG = 1000


@router.get("", summary="List jobs")
def list_jobs(
    _user: Viewer,
    db: Db,
    paging: Annotated[Page, Depends(page)],
    state: JobState | None = None,
    kind: JobKind | None = None,
    rule: NameQuery = None,
    target: NameQuery = None,
    series_uid: UidQuery = None,
    study_uid: UidQuery = None,
) -> schemas.Page[schemas.JobSummary]:
    """Jobs, newest first, with per-target delivery counts."""
    query = select(JobRow)
    if state is not None:
        query = query.where(JobRow.state == state)
    if kind is not None:
        query = query.where(JobRow.kind == kind)
    if rule is not None:
        query = query.where(JobRow.rule == rule)
    if target is not None:
        query = query.where(
            or_(
                JobRow.target == target,
                cast(JobRow.targets, String).contains(f'"{target}"', autoescape=True),
            )
        )
    if series_uid is not None:
        query = query.where(JobRow.series_uid == series_uid)
    if study_uid is not None:
        query = query.where(JobRow.study_uid == study_uid)
    result = newest_first(
        db,
        query,
        paging,
        time=JobRow.created_at,
        key=JobRow.id,
        position=lambda row: (row[0].created_at, row[0].id),
    )
    return schemas.Page[schemas.JobSummary](
        items=rows.job_summaries(db, [row[0] for row in result.rows]),
        total=result.total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=result.next_cursor,
    )


def _job(db: Session, job_id: str, *, lock: bool = False) -> JobRow:
    job = find_job(db, job_id)
    if job is None:
        raise Problem(404, f"no job {job_id} (or the prefix is ambiguous)")
    if lock:
        locked = db.get(JobRow, job.id, with_for_update=True, populate_existing=True)
        assert locked is not None
        return locked
    return job


@router.get(
    "/{job_id}", summary="One job: attempts, deliveries, module runs", responses=responses(404)
)
def get_job(job_id: JobId, _user: Viewer, db: Db) -> schemas.JobDetail:
    job = _job(db, job_id)
    [summary] = rows.job_summaries(db, [job])
    instance_count = db.scalar(
        select(func.count()).select_from(JobInstanceRow).where(JobInstanceRow.job_id == job.id)
    )
    attempts = db.scalars(
        select(JobAttemptRow).where(JobAttemptRow.job_id == job.id).order_by(JobAttemptRow.id)
    )
    deliveries = db.scalars(
        select(DeliveryRow)
        .where(DeliveryRow.job_id == job.id)
        .order_by(DeliveryRow.sent_at, DeliveryRow.sop_instance_uid)
        .limit(MAX_DELIVERY_LOG)
    )
    runs = db.scalars(
        select(ModuleRunRow)
        .where(ModuleRunRow.job_id == job.id)
        .order_by(ModuleRunRow.attempt, ModuleRunRow.step, ModuleRunRow.id)
    )
    return schemas.JobDetail(
        **summary.model_dump(),
        decision_id=job.decision_id,
        instance_count=int(instance_count or 0),
        details=dict(job.details or {}),
        attempt_log=[
            schemas.Attempt(
                attempt=a.attempt,
                target=a.target,
                owner=a.owner,
                outcome=a.outcome,
                sent=a.sent,
                warnings=a.warnings,
                failed=a.failed,
                error=a.error,
                started_at=a.started_at,
                ended_at=a.ended_at,
            )
            for a in attempts
        ],
        delivery_log=[
            schemas.Delivery(
                target=d.target,
                sop_instance_uid=d.sop_instance_uid,
                status=d.status,
                code=d.code,
                message=d.message,
                attempt=d.attempt,
                sent_at=d.sent_at,
                commitment=d.commitment,
            )
            for d in deliveries
        ],
        module_runs=[
            schemas.ModuleRun(
                attempt=r.attempt,
                step=r.step,
                module=r.module,
                runner=r.runner,
                run_id=r.run_id,
                status=r.status,
                exit_code=r.exit_code,
                message=r.message,
                started_at=r.started_at,
                ended_at=r.ended_at,
                seconds=(
                    round((aware(r.ended_at) - aware(r.started_at)).total_seconds(), 3)
                    if r.ended_at
                    else None
                ),
                gpus=list(r.gpus or []),
            )
            for r in runs
        ],
    )


@router.post(
    "/{job_id}/retry", summary="Send a failed job again (operator)", responses=responses(404, 409)
)
def retry_job(job_id: JobId, user: Operator, db: Db, context: Context) -> schemas.JobAction:
    """Queue a failed or cancelled job again, attempts reset; targets that already received
    it are not sent to again."""
    job = _job(db, job_id, lock=True)
    try:
        requeue(db, job.id, now=context.clock(), by=actor(user.name))
    except ValueError as exc:
        raise Problem(409, str(exc)) from None
    journal(
        db,
        user.name,
        "job.retried",
        f"Job {job.id[:8]} queued again by {user.name}",
        study_uid=job.study_uid,
        series_uid=job.series_uid,
        job=job.id,
    )
    db.commit()
    [summary] = rows.job_summaries(db, [job])
    return schemas.JobAction(job=summary, message="queued again; picked up within seconds")


@router.post("/{job_id}/cancel", summary="Cancel a job (operator)", responses=responses(404, 409))
def cancel_job(job_id: JobId, user: Operator, db: Db, context: Context) -> schemas.JobAction:
    """A queued job is cancelled at once; a running one is stopped by its worker."""
    job = _job(db, job_id, lock=True)
    try:
        state = request_cancel(db, job.id, now=context.clock(), by=actor(user.name))
    except ValueError as exc:
        raise Problem(409, str(exc)) from None
    journal(
        db,
        user.name,
        "job.cancel_requested",
        f"Cancellation of job {job.id[:8]} requested by {user.name}",
        severity="warning",
        study_uid=job.study_uid,
        series_uid=job.series_uid,
        job=job.id,
        state=state,
    )
    db.commit()
    [summary] = rows.job_summaries(db, [job])
    message = "cancelled" if state == "cancelled" else "running; its worker stops it within seconds"
    return schemas.JobAction(job=summary, message=message)
