"""The audit view: who changed what (configuration versions, users, logins, job retries
and cancellations, holds) and, on a second tab, the whole journal with filters."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import or_, select

from mercury.store.models import EventRow
from mercury.web import rows
from mercury.web.auth import Viewer
from mercury.web.context import Context, Db
from mercury.web.paging import newest_first
from mercury.web.params import Page
from mercury.web.ui.base import UiRoute, remember_user, render
from mercury.web.ui.images import PAGE_SIZE, PERIODS, Pager, clamp_offset, clean_query

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

CHANGE_KINDS = ("target.held", "target.released")
"""Changes by people journaled outside the web stage (the CLI and the UI hold targets)."""
STAGES = ("receive", "route", "process", "dispatch", "notify", "clean", "web", "serve")
SEVERITIES = ("info", "warning", "error")
_STAGE = re.compile(r"^[a-z0-9_]{1,16}$")


@router.get("/audit")
def audit(
    request: Request,
    user: Viewer,
    context: Context,
    db: Db,
    tab: str = "",
    stage: str = "",
    severity: str = "",
    q: str = "",
    period: str = "",
    offset: int = 0,
) -> Response:
    if not tab:
        tab = "journal" if (severity or stage) else "changes"
    tab = tab if tab in ("changes", "journal") else "changes"
    query = select(EventRow)
    if tab == "changes":
        query = query.where(or_(EventRow.stage == "web", EventRow.kind.in_(CHANGE_KINDS)))
    elif stage in STAGES and _STAGE.match(stage):
        query = query.where(EventRow.stage == stage)
    if severity in SEVERITIES:
        query = query.where(EventRow.severity == severity)
    text = clean_query(q, 100)
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            or_(
                EventRow.message.ilike(f"%{escaped}%", escape="\\"),
                EventRow.kind.ilike(f"%{escaped}%", escape="\\"),
            )
        )
    if period in PERIODS:
        query = query.where(EventRow.time >= context.clock() - timedelta(hours=PERIODS[period]))
    page = Page(PAGE_SIZE, clamp_offset(offset), None)
    result = newest_first(
        db, query, page, time=None, key=EventRow.id, position=lambda row: (None, row[0].id)
    )
    events = [rows.event(row[0]) for row in result.rows]
    return render(
        request,
        "audit.html",
        title="Audit log",
        tab=tab,
        events=events,
        pager=Pager(page.offset, page.limit, result.total),
        filters={"stage": stage, "severity": severity, "q": text, "period": period},
        stages=STAGES,
        severities=SEVERITIES,
        periods=list(PERIODS),
    )
