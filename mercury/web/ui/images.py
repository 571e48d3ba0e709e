"""Series and studies: searchable tables, and one series with everything mercury knows
about it (tags, instances, the rules that fired and why, jobs, delivery per instance and
target, the timeline with each stage's latency)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import ColumnElement, String, cast, exists, false, or_, select
from sqlalchemy.orm import Session

from mercury.store.delivery_models import DeliveryRow
from mercury.store.models import DecisionRow, SeriesRow, StudyRow
from mercury.web import rows, schemas
from mercury.web.auth import Operator, Viewer
from mercury.web.context import Context, Db
from mercury.web.paging import newest_first
from mercury.web.params import UID_PATTERN, Page
from mercury.web.problems import Problem
from mercury.web.routes import series as series_api
from mercury.web.routes import studies as studies_api
from mercury.web.ui.base import UiRoute, done, remember_user, render

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

PAGE_SIZE = 50
SERIES_STATES = ("receiving", "routed", "discarded", "cleaning", "cleaned")
PERIODS = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}
FINAL_JOB_STATES = ("succeeded", "failed", "cancelled")
_UID = re.compile(UID_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_query(value: str | None, limit: int = 64) -> str:
    """Free text from a search box, without control characters (PostgreSQL refuses NUL)."""
    return _CONTROL.sub("", value or "").strip()[:limit]


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def clamp_offset(value: int) -> int:
    return max(0, min(value, 1_000_000))


@dataclass(frozen=True)
class Pager:
    offset: int
    limit: int
    total: int

    @property
    def previous(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None

    @property
    def next(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def first_shown(self) -> int:
        return self.offset + 1 if self.total else 0

    @property
    def last_shown(self) -> int:
        return min(self.total, self.offset + self.limit)


# -- series --------------------------------------------------------------------------------


@router.get("/series")
def series_list(
    request: Request,
    user: Viewer,
    context: Context,
    db: Db,
    q: str = "",
    modality: str = "",
    state: str = "",
    rule: str = "",
    period: str = "",
    offset: int = 0,
) -> Response:
    query_text = clean_query(q)
    query = select(SeriesRow, StudyRow).join(
        StudyRow, StudyRow.study_uid == SeriesRow.study_uid, isouter=True
    )
    if query_text:
        like = _like(query_text)
        conditions: list[ColumnElement[bool]] = [
            StudyRow.patient_name.ilike(like, escape="\\"),
            StudyRow.patient_id.ilike(like, escape="\\"),
            StudyRow.accession_number.ilike(like, escape="\\"),
            SeriesRow.series_description.ilike(like, escape="\\"),
        ]
        if _UID.match(query_text):
            conditions += [
                SeriesRow.series_uid == query_text,
                SeriesRow.study_uid == query_text,
            ]
        query = query.where(or_(*conditions))
    modalities = sorted(
        value for (value,) in db.execute(select(SeriesRow.modality).distinct()) if value
    )
    if modality in modalities:
        query = query.where(SeriesRow.modality == modality)
    if state in SERIES_STATES:
        query = query.where(SeriesRow.state == state)
    rules = list(context.config.rules)
    if rule:
        query = query.where(
            exists().where(
                DecisionRow.series_uid == SeriesRow.series_uid, series_api.rule_fired(rule)
            )
            if re.fullmatch(r"[0-9A-Za-z_-]{1,64}", rule)
            else false()
        )
    if period in PERIODS:
        since = context.clock() - timedelta(hours=PERIODS[period])
        query = query.where(SeriesRow.last_received_at >= since)
    page = Page(PAGE_SIZE, clamp_offset(offset), None)
    result = newest_first(
        db,
        query,
        page,
        time=SeriesRow.last_received_at,
        key=SeriesRow.series_uid,
        position=lambda row: (row[0].last_received_at, row[0].series_uid),
    )
    items = [rows.series_summary(series, study) for series, study in result.rows]
    return render(
        request,
        "series_list.html",
        title="Series",
        items=items,
        pager=Pager(page.offset, page.limit, result.total),
        filters={
            "q": query_text,
            "modality": modality,
            "state": state,
            "rule": rule,
            "period": period,
        },
        modalities=modalities,
        states=SERIES_STATES,
        rules=rules,
        periods=list(PERIODS),
    )


@dataclass
class InstanceDelivery:
    instance: schemas.Instance
    number: int
    by_target: dict[str, str]


def _deliveries(
    db: Session, detail: schemas.SeriesDetail
) -> tuple[list[str], list[InstanceDelivery]]:
    """Per instance, per target: the delivery status of its newest attempt."""
    job_ids = [job.id for job in detail.jobs]
    targets: list[str] = []
    for job in detail.jobs:
        if job.kind in ("dispatch", "process"):
            targets += [t for t in job.targets if t not in targets]
    status: dict[str, dict[str, tuple[int, str]]] = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        for sop, target, state, attempt in db.execute(
            select(
                DeliveryRow.sop_instance_uid,
                DeliveryRow.target,
                DeliveryRow.status,
                DeliveryRow.attempt,
            ).where(DeliveryRow.job_id.in_(chunk))
        ):
            if target not in targets:
                targets.append(target)
            seen = status.setdefault(sop, {}).get(target)
            if seen is None or attempt >= seen[0]:
                status[sop][target] = (attempt, state)
    result = [
        InstanceDelivery(
            instance=instance,
            number=index + 1,
            by_target={t: s for t, (_, s) in status.get(instance.sop_instance_uid, {}).items()},
        )
        for index, instance in enumerate(detail.instances)
    ]
    return targets, result


def _is_final(detail: schemas.SeriesDetail) -> bool:
    if detail.state == "receiving":
        return False
    return all(job.state in FINAL_JOB_STATES for job in detail.jobs)


def _series_values(user: Any, db: Session, uid: str) -> dict[str, Any]:
    if not _UID.match(uid) or len(uid) > 64:
        raise Problem(404, f"no series {uid} in the index")
    detail = series_api.get_series(uid, user, db, instances_limit=1000)
    targets, deliveries = _deliveries(db, detail)
    tags = sorted(detail.tags.items())
    return {
        "s": detail,
        "tags": tags,
        "delivery_targets": targets,
        "deliveries": deliveries,
        "final": _is_final(detail),
        "rules_in_config": set(),
    }


@router.get("/series/{uid}")
def series_page(request: Request, uid: str, user: Viewer, context: Context, db: Db) -> Response:
    values = _series_values(user, db, uid)
    values["rules_in_config"] = set(context.config.rules)
    title = values["s"].series_description or "(no description)"
    return render(request, "series.html", title=title, **values)


@router.get("/series/{uid}/live")
def series_live(request: Request, uid: str, user: Viewer, context: Context, db: Db) -> Response:
    values = _series_values(user, db, uid)
    values["rules_in_config"] = set(context.config.rules)
    return render(request, "partials/series_live.html", **values)


# -- studies -------------------------------------------------------------------------------


@router.get("/studies")
def studies_list(
    request: Request,
    user: Viewer,
    context: Context,
    db: Db,
    q: str = "",
    state: str = "",
    waiting: bool = False,
    period: str = "",
    offset: int = 0,
) -> Response:
    query_text = clean_query(q)
    query = select(StudyRow)
    if query_text:
        like = _like(query_text)
        conditions: list[ColumnElement[bool]] = [
            StudyRow.patient_name.ilike(like, escape="\\"),
            StudyRow.patient_id.ilike(like, escape="\\"),
            StudyRow.accession_number.ilike(like, escape="\\"),
            StudyRow.study_description.ilike(like, escape="\\"),
        ]
        if _UID.match(query_text):
            conditions.append(StudyRow.study_uid == query_text)
        query = query.where(or_(*conditions))
    if state in SERIES_STATES:
        query = query.where(StudyRow.state == state)
    if waiting:
        query = query.where(
            StudyRow.state == "receiving",
            StudyRow.pending_rules.is_not(None),
            cast(StudyRow.pending_rules, String).not_in(("[]", "null")),
        )
    if period in PERIODS:
        since = context.clock() - timedelta(hours=PERIODS[period])
        query = query.where(StudyRow.last_received_at >= since)
    page = Page(PAGE_SIZE, clamp_offset(offset), None)
    result = newest_first(
        db,
        query,
        page,
        time=StudyRow.last_received_at,
        key=StudyRow.study_uid,
        position=lambda row: (row[0].last_received_at, row[0].study_uid),
    )
    items = [schemas.StudySummary(**rows.study_fields(row[0])) for row in result.rows]
    return render(
        request,
        "studies_list.html",
        title="Studies",
        items=items,
        pager=Pager(page.offset, page.limit, result.total),
        filters={"q": query_text, "state": state, "waiting": waiting, "period": period},
        states=SERIES_STATES,
        periods=list(PERIODS),
    )


@router.get("/studies/{uid}")
def study_page(request: Request, uid: str, user: Viewer, db: Db) -> Response:
    if not _UID.match(uid) or len(uid) > 64:
        raise Problem(404, f"no study {uid} in the index")
    detail = studies_api.get_study(uid, user, db)
    title = detail.study_description or "(no description)"
    return render(request, "study.html", title=title, st=detail)


@router.post("/studies/{uid}/force-complete")
def force_complete(request: Request, uid: str, user: Operator, db: Db) -> Response:
    if not _UID.match(uid) or len(uid) > 64:
        raise Problem(404, f"no study {uid} in the index")
    answer = studies_api.force_complete(uid, user, db)
    rules = ", ".join(answer.pending_rules)
    return done(request, f"The study completes at the router's next scan (rules {rules}).")
