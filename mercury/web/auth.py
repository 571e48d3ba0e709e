"""Who is calling, and may they: Bearer API tokens or the session cookie, roles, CSRF.

A request authenticates with ``Authorization: Bearer TOKEN`` or with the session cookie
set by POST /api/login. Cookie-authenticated requests that change something must carry the
session's CSRF token in ``X-CSRF-Token`` (a page of another site can make the browser send
the cookie, never read the token); Bearer requests need none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from mercury.web.accounts import RANK, Role, as_role, find_token
from mercury.web.context import Context, Db
from mercury.web.problems import Problem
from mercury.web.sessions import (
    COOKIE,
    CSRF_HEADER,
    csrf_matches,
    csrf_token,
    find_session,
    session_key,
)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_PROBLEM = "urn:mercury:problem:csrf"

_bearer = HTTPBearer(auto_error=False, description="An API token (`mercury tokens create`).")
_cookie = APIKeyCookie(
    name=COOKIE, auto_error=False, description="The session cookie set by POST /api/login."
)


@dataclass(frozen=True)
class Principal:
    """An authenticated user and how they authenticated."""

    name: str
    role: Role
    via: Literal["session", "token"]
    token_id: str | None = None
    session_key: str | None = None
    csrf_token: str | None = None

    def may(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


def unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="mercury"'})


def authenticate(
    request: Request,
    context: Context,
    db: Db,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    now = context.clock()
    if request.headers.get("authorization"):
        if bearer is None:
            raise unauthorized("the Authorization header must be 'Bearer TOKEN'")
        found = find_token(db, bearer.credentials, now=now)
        db.commit()
        if found is None:
            raise unauthorized("the API token is not valid (unknown, revoked or expired)")
        token, user = found
        return Principal(user.name, as_role(user.role), "token", token_id=token.id)
    if cookie:
        config = context.config
        key = session_key(db, config, now=now)
        live = find_session(db, key, cookie, lifetime=config.web.session_lifetime, now=now)
        db.commit()
        if live is None:
            raise unauthorized("the session has expired or ended; log in again")
        row, user = live
        if request.method not in SAFE_METHODS and not csrf_matches(
            key, cookie, request.headers.get(CSRF_HEADER)
        ):
            raise Problem(
                403,
                f"a request with the session cookie that changes something must send the "
                f"{CSRF_HEADER} header given by GET /api/me or the login answer",
                title="CSRF token missing or wrong",
                type=CSRF_PROBLEM,
            )
        return Principal(
            user.name,
            as_role(user.role),
            "session",
            session_key=row.key,
            csrf_token=csrf_token(key, cookie),
        )
    raise unauthorized(
        "authentication required: log in (POST /api/login) or send 'Authorization: Bearer TOKEN'"
    )


def require(role: Role) -> Callable[[Principal], Principal]:
    """A dependency: the caller, who must have at least ``role``."""

    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.may(role):
            raise Problem(
                403,
                f"this needs the {role} role; {principal.name} is {principal.role}",
                title="Not allowed",
            )
        return principal

    return check


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]
