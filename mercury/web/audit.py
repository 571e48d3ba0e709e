"""Journal entries for what users do through the web layer (stage ``web``), each naming
the user, in the transaction of the change it describes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mercury.store.journal import Severity, record

STAGE = "web"


def journal(
    session: Session,
    user: str,
    kind: str,
    message: str,
    *,
    severity: Severity = "info",
    study_uid: str | None = None,
    series_uid: str | None = None,
    **details: Any,
) -> None:
    record(
        session,
        stage=STAGE,
        kind=kind,
        severity=severity,
        message=message,
        study_uid=study_uid,
        series_uid=series_uid,
        details={"user": user, **details},
    )


def actor(user: str) -> str:
    """How a web user is named where the CLI writes ``cli:<login>`` (job and hold records)."""
    return f"web:{user}"
