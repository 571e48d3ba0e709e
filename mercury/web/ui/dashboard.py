"""The dashboard: services, receive rate, queues per stage, targets, recent errors, disk
space and the latest series, read from the index and refreshed every few seconds."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mercury.store import target_state
from mercury.store.models import EventRow, InstanceRow, JobRow, SeriesRow, StudyRow
from mercury.web import rows, schemas
from mercury.web.auth import Viewer
from mercury.web.context import Context, Db, WebContext
from mercury.web.timeutil import aware
from mercury.web.ui.base import UiRoute, remember_user, render

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

RATE_MINUTES = 60
"""The receive-rate chart: images per minute over the last hour."""


@dataclass
class Stage:
    name: str
    queued: int = 0
    due: int = 0
    running: int = 0
    failed_24h: int = 0
    failed: int = 0
    succeeded_24h: int = 0


@dataclass
class Disk:
    path: str
    free: int | None
    total: int | None
    reserve: int
    error: str | None = None

    @property
    def used_fraction(self) -> float:
        if not self.total or self.free is None:
            return 0.0
        return 1 - self.free / self.total

    @property
    def tone(self) -> str:
        if self.free is None or self.free < self.reserve:
            return "bad"
        return "warn" if self.used_fraction > 0.85 else ""


@dataclass
class Snapshot:
    now: datetime
    services: dict[str, str]
    per_minute: list[int]
    images_5min: int
    images_24h: int
    series_24h: int
    series_receiving: int
    unrouted: int
    stages: list[Stage]
    targets: list[schemas.TargetInfo]
    errors_24h: int
    warnings_24h: int
    recent_errors: list[schemas.Event]
    disk: Disk
    latest: list[schemas.SeriesSummary] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Images per minute over the last five minutes."""
        return self.images_5min / 5

    @property
    def waiting(self) -> int:
        return sum(stage.queued + stage.running for stage in self.stages)

    @property
    def failed(self) -> int:
        return sum(stage.failed for stage in self.stages)

    @property
    def peak(self) -> int:
        return max(self.per_minute) if self.per_minute else 0


def _disk(context: WebContext) -> Disk:
    storage = context.config.storage
    reserve = storage.reserve_mb * 2**20
    try:
        usage = shutil.disk_usage(storage.spool)
    except OSError as exc:
        return Disk(str(storage.spool), None, None, reserve, exc.strerror or str(exc))
    return Disk(str(storage.spool), usage.free, usage.total, reserve)


def _per_minute(session: Session, now: datetime) -> list[int]:
    since = now - timedelta(minutes=RATE_MINUTES)
    counts = [0] * RATE_MINUTES
    for (received,) in session.execute(
        select(InstanceRow.received_at).where(InstanceRow.received_at >= since).limit(200000)
    ):
        index = int((aware(received) - since).total_seconds() // 60)
        if 0 <= index < RATE_MINUTES:
            counts[index] += 1
    return counts


def _stages(session: Session, now: datetime) -> list[Stage]:
    stages = {kind: Stage(kind) for kind in ("process", "dispatch", "notify")}
    for kind, state, count in session.execute(
        select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
    ):
        stage = stages.get(kind)
        if stage is None:
            continue
        if state == "queued":
            stage.queued = int(count)
        elif state == "running":
            stage.running = int(count)
        elif state == "failed":
            stage.failed = int(count)
    for kind, count in session.execute(
        select(JobRow.kind, func.count())
        .where(JobRow.state == "queued", JobRow.next_attempt_at <= now)
        .group_by(JobRow.kind)
    ):
        if kind in stages:
            stages[kind].due = int(count)
    day = now - timedelta(hours=24)
    for kind, state, count in session.execute(
        select(JobRow.kind, JobRow.state, func.count())
        .where(JobRow.updated_at >= day, JobRow.state.in_(("failed", "succeeded")))
        .group_by(JobRow.kind, JobRow.state)
    ):
        stage = stages.get(kind)
        if stage is None:
            continue
        if state == "failed":
            stage.failed_24h = int(count)
        else:
            stage.succeeded_24h = int(count)
    return list(stages.values())


def snapshot(context: WebContext, session: Session) -> Snapshot:
    now = context.clock()
    day = now - timedelta(hours=24)
    per_minute = _per_minute(session, now)
    images_5min = sum(per_minute[-5:])
    images_24h = int(
        session.scalar(
            select(func.count()).select_from(InstanceRow).where(InstanceRow.received_at >= day)
        )
        or 0
    )
    series_24h = int(
        session.scalar(
            select(func.count()).select_from(SeriesRow).where(SeriesRow.last_received_at >= day)
        )
        or 0
    )
    series_receiving = int(
        session.scalar(
            select(func.count()).select_from(SeriesRow).where(SeriesRow.state == "receiving")
        )
        or 0
    )
    unrouted = int(
        session.scalar(
            select(func.count()).select_from(InstanceRow).where(InstanceRow.route_round == 0)
        )
        or 0
    )
    states = target_state.all_states(session)
    targets = [
        rows.target_info(name, target.target_type, states.get(name))
        for name, target in context.config.targets.items()
    ]
    severities = dict(
        session.execute(
            select(EventRow.severity, func.count())
            .where(EventRow.time >= day, EventRow.severity.in_(("error", "warning")))
            .group_by(EventRow.severity)
        ).all()
    )
    recent_errors = [
        rows.event(row)
        for row in session.scalars(
            select(EventRow)
            .where(EventRow.time >= day, EventRow.severity == "error")
            .order_by(EventRow.id.desc())
            .limit(6)
        )
    ]
    latest = [
        rows.series_summary(series, study)
        for series, study in session.execute(
            select(SeriesRow, StudyRow)
            .join(StudyRow, StudyRow.study_uid == SeriesRow.study_uid, isouter=True)
            .order_by(SeriesRow.last_received_at.desc(), SeriesRow.series_uid.desc())
            .limit(8)
        )
    ]
    return Snapshot(
        now=now,
        services=dict(context.services),
        per_minute=per_minute,
        images_5min=images_5min,
        images_24h=images_24h,
        series_24h=series_24h,
        series_receiving=series_receiving,
        unrouted=unrouted,
        stages=_stages(session, now),
        targets=targets,
        errors_24h=int(severities.get("error", 0)),
        warnings_24h=int(severities.get("warning", 0)),
        recent_errors=recent_errors,
        disk=_disk(context),
        latest=latest,
    )


@router.get("/")
def dashboard(request: Request, user: Viewer, context: Context, db: Db) -> Response:
    return render(request, "dashboard.html", title="Dashboard", s=snapshot(context, db))


@router.get("/dashboard/live")
def dashboard_live(request: Request, user: Viewer, context: Context, db: Db) -> Response:
    return render(request, "partials/dashboard_live.html", s=snapshot(context, db))
