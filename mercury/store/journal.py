"""The journal: events written inside the transaction of the state change they describe."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import insert
from sqlalchemy.orm import Session

from mercury.store.models import EventRow, utcnow

Severity = Literal["info", "warning", "error"]


def event_row(
    *,
    stage: str,
    kind: str,
    message: str,
    severity: Severity = "info",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    association_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One journal row as a dict, for bulk inserts."""
    return {
        "time": utcnow(),
        "stage": stage,
        "kind": kind,
        "severity": severity,
        "message": message,
        "study_uid": study_uid,
        "series_uid": series_uid,
        "sop_instance_uid": sop_instance_uid,
        "association_id": association_id,
        "details": details or {},
    }


def record(session: Session, **fields: Any) -> None:
    """Add one event to the session's current transaction (see :func:`event_row` for fields)."""
    session.execute(insert(EventRow), [event_row(**fields)])


def record_many(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(EventRow), rows)
