"""Each target's circuit breaker and manual hold, kept in the index so every dispatcher
process, the CLI and the web interface see and change the same state."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mercury.store.delivery_models import TargetStateRow
from mercury.store.journal import record


def state_row(session: Session, name: str, now: datetime) -> TargetStateRow:
    """The target's row, created closed and not held if missing; locked on PostgreSQL."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(TargetStateRow)
        .values(name=name, circuit="closed", consecutive_failures=0, held=False, updated_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return session.scalars(
        select(TargetStateRow).where(TargetStateRow.name == name).with_for_update()
    ).one()


def all_states(session: Session) -> dict[str, TargetStateRow]:
    return {row.name: row for row in session.scalars(select(TargetStateRow))}


def unavailable(session: Session) -> dict[str, str]:
    """Targets whose jobs must wait, with the reason: held by hand, or circuit open."""
    blocked: dict[str, str] = {}
    for row in session.scalars(
        select(TargetStateRow).where(
            (TargetStateRow.held.is_(True)) | (TargetStateRow.circuit == "open")
        )
    ):
        blocked[row.name] = "held" if row.held else "down"
    return blocked


def hold(session: Session, name: str, *, now: datetime, by: str, reason: str) -> bool:
    """Stop sending to a target until released; False when it was already held."""
    row = state_row(session, name, now)
    if row.held:
        return False
    row.held, row.held_by, row.held_reason, row.held_at, row.updated_at = True, by, reason, now, now
    record(
        session,
        stage="dispatch",
        kind="target.held",
        severity="warning",
        message=f"Target {name} held by {by}" + (f": {reason}" if reason else ""),
        details={"target": name, "by": by, "reason": reason},
    )
    return True


def release(session: Session, name: str, *, now: datetime, by: str) -> bool:
    """Resume sending to a held target; False when it was not held."""
    row = state_row(session, name, now)
    if not row.held:
        return False
    row.held, row.held_reason, row.held_at, row.updated_at = False, "", None, now
    row.held_by = ""
    record(
        session,
        stage="dispatch",
        kind="target.released",
        message=f"Target {name} released by {by}",
        details={"target": name, "by": by},
    )
    return True


def note_failure(
    session: Session,
    name: str,
    error: str,
    *,
    now: datetime,
    threshold: int,
    probe_interval: float,
) -> bool:
    """Count a failed attempt to reach the target; True when this opened its circuit."""
    row = state_row(session, name, now)
    row.consecutive_failures += 1
    row.last_error = error
    row.updated_at = now
    if row.circuit == "open" or row.consecutive_failures < threshold:
        return False
    row.circuit = "open"
    row.opened_at = now
    row.next_probe_at = now + timedelta(seconds=probe_interval)
    record(
        session,
        stage="dispatch",
        kind="target.down",
        severity="error",
        message=f"Target {name} marked down after {row.consecutive_failures} consecutive "
        f"failures; its jobs wait, a probe runs every {probe_interval:g} s. Last error: {error}",
        details={"target": name, "failures": row.consecutive_failures, "error": error},
    )
    return True


def note_success(session: Session, name: str, *, now: datetime, via: str = "send") -> bool:
    """Reset the failure count; True when this closed an open circuit."""
    row = state_row(session, name, now)
    was_open = row.circuit == "open"
    row.consecutive_failures = 0
    row.last_success_at = now
    row.updated_at = now
    if not was_open:
        return False
    details: dict[str, Any] = {"target": name, "via": via}
    if row.opened_at is not None:
        details["down_seconds"] = round((now - _aware(row.opened_at, now)).total_seconds(), 1)
    row.circuit, row.opened_at, row.next_probe_at = "closed", None, None
    record(
        session,
        stage="dispatch",
        kind="target.up",
        message=f"Target {name} is reachable again ({via}); its waiting jobs resume",
        details=details,
    )
    return True


def probe_failed(
    session: Session, name: str, error: str, *, now: datetime, probe_interval: float
) -> None:
    row = state_row(session, name, now)
    row.last_error = error
    row.next_probe_at = now + timedelta(seconds=probe_interval)
    row.updated_at = now


def probes_due(session: Session, now: datetime) -> list[str]:
    rows = session.scalars(
        select(TargetStateRow).where(
            TargetStateRow.circuit == "open", TargetStateRow.held.is_(False)
        )
    )
    return [
        row.name
        for row in rows
        if row.next_probe_at is None or _aware(row.next_probe_at, now) <= now
    ]


def _aware(value: datetime, like: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns: assume the same zone."""
    if value.tzinfo is None and like.tzinfo is not None:
        return value.replace(tzinfo=like.tzinfo)
    return value
