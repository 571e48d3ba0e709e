"""Users, their passwords (argon2id) and API tokens, in the index. Used by the REST API and
by `mercury users` / `mercury tokens`; every function works in the caller's transaction."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mercury.store.web_models import ApiTokenRow, UserRow, WebSessionRow
from mercury.web.timeutil import aware

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
RANK = {role: index for index, role in enumerate(ROLES)}

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
TOKEN_PREFIX = "mercury_"  # noqa: S105 - a prefix, not a secret
TOKEN_USE_GRANULARITY = timedelta(minutes=1)

_hasher = PasswordHasher()
# Verified against when the user does not exist, so that answers take as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A request about users or tokens that cannot be done; the message says why."""


class UnknownUser(AccountError, LookupError):
    pass


def check_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise AccountError(
            f"{name!r} is not a valid user name: 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password must have at most {MAX_PASSWORD} characters")
    return password


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise AccountError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")


def as_role(value: str) -> Role:
    """A role read from the index; an unknown one gets the least."""
    for known in ROLES:
        if value == known:
            return known
    return "viewer"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# -- users ------------------------------------------------------------------------------


def get_user(session: Session, name: str) -> UserRow | None:
    return session.get(UserRow, name)


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(select(UserRow).order_by(UserRow.name)))


def create_user(
    session: Session, name: str, password: str, role: str, *, now: datetime, enabled: bool = True
) -> UserRow:
    check_name(name)
    checked_role = check_role(role)
    check_password(password)
    if session.get(UserRow, name) is not None:
        raise AccountError(f"a user named {name!r} exists already")
    user = UserRow(
        name=name,
        password_hash=hash_password(password),
        role=checked_role,
        enabled=enabled,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    session.flush()
    return user


def _enabled_admins(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(UserRow)
            .where(UserRow.role == "admin", UserRow.enabled.is_(True))
        )
        or 0
    )


def _keeps_an_admin(session: Session, user: UserRow, *, role: str, enabled: bool) -> None:
    was_admin = user.role == "admin" and user.enabled
    stays_admin = role == "admin" and enabled
    if was_admin and not stays_admin and _enabled_admins(session) <= 1:
        raise AccountError(f"{user.name} is the last enabled admin; make another admin first")


def update_user(
    session: Session,
    name: str,
    *,
    now: datetime,
    role: str | None = None,
    enabled: bool | None = None,
    password: str | None = None,
) -> UserRow:
    """Change a user's role, enabled flag or password. Disabling a user or setting their
    password ends their sessions; a disabled user's tokens are refused until enabled."""
    user = session.get(UserRow, name, with_for_update=True)
    if user is None:
        raise UnknownUser(f"no user named {name!r}")
    new_role = check_role(role) if role is not None else user.role
    new_enabled = enabled if enabled is not None else user.enabled
    _keeps_an_admin(session, user, role=new_role, enabled=new_enabled)
    user.role = new_role
    user.enabled = new_enabled
    if password is not None:
        user.password_hash = hash_password(check_password(password))
    user.updated_at = now
    if password is not None or not new_enabled:
        end_sessions(session, name)
    return user


def delete_user(session: Session, name: str) -> None:
    """Remove a user with their sessions and tokens (their journal entries stay)."""
    user = session.get(UserRow, name, with_for_update=True)
    if user is None:
        raise UnknownUser(f"no user named {name!r}")
    _keeps_an_admin(session, user, role="", enabled=False)
    end_sessions(session, name)
    session.execute(delete(ApiTokenRow).where(ApiTokenRow.user_name == name))
    session.delete(user)


def end_sessions(session: Session, name: str, *, keep: str | None = None) -> None:
    query = delete(WebSessionRow).where(WebSessionRow.user_name == name)
    if keep is not None:
        query = query.where(WebSessionRow.key != keep)
    session.execute(query)


def check_login(session: Session, name: str, password: str) -> UserRow | None:
    """The enabled user with this name and password, or None (in constant-ish time)."""
    user = session.get(UserRow, name) if USER_NAME.fullmatch(name) else None
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password) or not user.enabled:
        return None
    return user


# -- API tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewToken:
    row: ApiTokenRow
    token: str


def token_hash(token: str) -> str:
    """Tokens are 256 random bits, so a plain SHA-256 protects them (and is fast per call)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(
    session: Session,
    user_name: str,
    *,
    now: datetime,
    created_by: str,
    description: str = "",
    expires_at: datetime | None = None,
) -> NewToken:
    if session.get(UserRow, user_name) is None:
        raise UnknownUser(f"no user named {user_name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiTokenRow(
        id=secrets.token_hex(8),
        user_name=user_name,
        token_hash=token_hash(token),
        description=description,
        created_by=created_by,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return NewToken(row, token)


def find_token(
    session: Session, token: str, *, now: datetime
) -> tuple[ApiTokenRow, UserRow] | None:
    """The live token and its enabled user; notes when it was last used (to the minute)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalars(
        select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash(token))
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and aware(row.expires_at) <= now:
        return None
    user = session.get(UserRow, row.user_name)
    if user is None or not user.enabled:
        return None
    last = row.last_used_at
    if last is None or now - aware(last) >= TOKEN_USE_GRANULARITY:
        session.execute(
            update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(last_used_at=now)
        )
    return row, user


def list_tokens(session: Session, user_name: str | None = None) -> list[ApiTokenRow]:
    query = select(ApiTokenRow).order_by(ApiTokenRow.created_at, ApiTokenRow.id)
    if user_name is not None:
        query = query.where(ApiTokenRow.user_name == user_name)
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: str, *, now: datetime) -> bool:
    """Revoke a token; False when it was revoked already."""
    row = session.get(ApiTokenRow, token_id)
    if row is None:
        raise LookupError(token_id)
    if row.revoked_at is not None:
        return False
    row.revoked_at = now
    return True
