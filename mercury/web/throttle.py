"""Login throttling per user name and address, kept in the index so that every web process
counts the same failures: after web.login_attempts failures in a row, logins of that name
from that address are refused for web.login_pause seconds (even with the right password)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mercury.store.web_models import LoginFailureRow
from mercury.web.timeutil import aware


def _key(user_name: str, address: str) -> tuple[str, str]:
    return user_name[:64], address[:64]


def paused_until(
    session: Session, user_name: str, address: str, *, now: datetime
) -> datetime | None:
    row = session.get(LoginFailureRow, _key(user_name, address))
    if row is None or row.paused_until is None:
        return None
    until = aware(row.paused_until)
    return until if until > now else None


def note_failure(
    session: Session,
    user_name: str,
    address: str,
    *,
    attempts: int,
    pause: float,
    now: datetime,
) -> datetime | None:
    """Count a failed login; the end of the pause when this failure started one."""
    name, where = _key(user_name, address)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(LoginFailureRow)
        .values(user_name=name, address=where, failures=0, last_failure_at=now)
        .on_conflict_do_nothing(index_elements=["user_name", "address"])
    )
    row = session.scalars(
        select(LoginFailureRow)
        .where(LoginFailureRow.user_name == name, LoginFailureRow.address == where)
        .with_for_update()
    ).one()
    if row.paused_until is not None and aware(row.paused_until) <= now:
        row.paused_until = None  # the pause is over: count afresh
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    if row.failures >= attempts:
        row.failures = 0
        row.paused_until = now + timedelta(seconds=pause)
        session.flush()
        return row.paused_until
    session.flush()
    return None


def clear(session: Session, user_name: str, address: str) -> None:
    name, where = _key(user_name, address)
    session.execute(
        delete(LoginFailureRow).where(
            LoginFailureRow.user_name == name, LoginFailureRow.address == where
        )
    )
