"""The cleaner's journal entries (stamped with the cleaner's clock) and its words for sizes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from mercury.clean.facts import aware
from mercury.store.journal import Severity, event_row
from mercury.store.models import EventRow

STAGE = "clean"
CLEANING = "cleaning"
CLEANED = "cleaned"


def journal(
    session: Session,
    now: datetime,
    *,
    kind: str,
    message: str,
    severity: Severity = "info",
    study_uid: str | None = None,
    series_uid: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """One journal entry in the session's transaction, at ``now``."""
    row = event_row(
        stage=STAGE,
        kind=kind,
        severity=severity,
        message=message,
        study_uid=study_uid,
        series_uid=series_uid,
        details=details,
    )
    row["time"] = aware(now)
    session.execute(insert(EventRow), [row])


def human_bytes(size: float) -> str:
    """1234567 -> "1.2 MB" (decimal units, as disks are sold)."""
    if abs(size) < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1000
        if abs(size) < 1000 or unit == "TB":
            break
    return f"{size:.1f} {unit}"
