"""Login sessions of the web interface: a random cookie value, a server-side row keyed by
an HMAC of it, an expiry that slides with activity, and the CSRF token derived from it.

The HMAC key is web.session_secret, or a random key kept in the index when that is unset
(so sessions survive restarts, and every web process of the installation shares it).
Changing the key ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mercury.config.models import MercuryConfig
from mercury.store.web_models import UserRow, WebKeyRow, WebSessionRow
from mercury.web.timeutil import aware

COOKIE = "mercury_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_KEY_NAME = "session"
# Sliding expiry is written at most this often per session (not on every request).
TOUCH_GRANULARITY = timedelta(seconds=60)


def session_key(session: Session, config: MercuryConfig, *, now: datetime) -> bytes:
    """The key that protects session cookies and CSRF tokens."""
    secret = config.web.session_secret
    if secret is not None:
        return secret.get_secret_value().encode("utf-8")
    query = select(WebKeyRow.value).where(WebKeyRow.name == SESSION_KEY_NAME)
    value = session.scalars(query).first()
    if value is None:  # the first login of this installation: make the key, once
        insert = (
            postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        )
        session.execute(
            insert(WebKeyRow)
            .values(name=SESSION_KEY_NAME, value=secrets.token_hex(32), created_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = session.scalars(query).one()
    return value.encode("ascii")


def _row_key(key: bytes, cookie: str) -> str:
    return hmac.new(
        key, b"session:" + cookie.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


def csrf_token(key: bytes, cookie: str) -> str:
    return hmac.new(
        key, b"csrf:" + cookie.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


def csrf_matches(key: bytes, cookie: str, sent: str | None) -> bool:
    if not sent:
        return False
    expected = csrf_token(key, cookie).encode()
    return hmac.compare_digest(expected, sent.encode("utf-8", "surrogatepass"))


def open_session(
    session: Session, key: bytes, user: UserRow, *, address: str, lifetime: float, now: datetime
) -> tuple[str, WebSessionRow]:
    """A new session for ``user``: the cookie value and the row."""
    session.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < now))
    cookie = secrets.token_urlsafe(32)
    row = WebSessionRow(
        key=_row_key(key, cookie),
        user_name=user.name,
        address=address[:64],
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(seconds=lifetime),
    )
    session.add(row)
    session.flush()
    return cookie, row


def find_session(
    session: Session, key: bytes, cookie: str, *, lifetime: float, now: datetime
) -> tuple[WebSessionRow, UserRow] | None:
    """The live session of this cookie and its enabled user, its expiry moved on."""
    if len(cookie) > 200:
        return None
    row = session.get(WebSessionRow, _row_key(key, cookie))
    if row is None or aware(row.expires_at) <= now:
        return None
    user = session.get(UserRow, row.user_name)
    if user is None or not user.enabled:
        return None
    if now - aware(row.last_seen_at) >= TOUCH_GRANULARITY:
        row.last_seen_at = now
        row.expires_at = now + timedelta(seconds=lifetime)
    return row, user


def end_session(session: Session, row_key: str) -> None:
    session.execute(delete(WebSessionRow).where(WebSessionRow.key == row_key))
