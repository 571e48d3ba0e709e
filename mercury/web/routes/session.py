"""POST /api/login, /api/logout; GET /api/me; POST /api/me/password."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request, Response

from mercury.web import schemas, throttle
from mercury.web.accounts import (
    as_role,
    check_login,
    end_sessions,
    get_user,
    hash_password,
    verify_password,
)
from mercury.web.audit import journal
from mercury.web.auth import Viewer, unauthorized
from mercury.web.context import Context, Db
from mercury.web.problems import Problem, responses
from mercury.web.sessions import COOKIE, csrf_token, end_session, open_session, session_key
from mercury.web.timeutil import aware

router = APIRouter(tags=["authentication"], responses=responses(422))

PAUSED = "urn:mercury:problem:login-paused"


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post("/login", summary="Log in: sets the session cookie", responses=responses(401, 429))
def login(
    body: schemas.LoginRequest, request: Request, response: Response, context: Context, db: Db
) -> schemas.LoginAnswer:
    """Answers the CSRF token to send with cookie-authenticated changes. After
    web.login_attempts failures for one name from one address, that name is refused from
    that address for web.login_pause seconds (429, Retry-After)."""
    now = context.clock()
    web = context.config.web
    address = _address(request)
    until = throttle.paused_until(db, body.name, address, now=now)
    if until is not None:
        wait = max(1, math.ceil((until - now).total_seconds()))
        raise Problem(
            429,
            f"too many failed logins for {body.name!r} from {address}; try again in {wait} s",
            title="Login paused",
            type=PAUSED,
            headers={"Retry-After": str(wait)},
        )
    user = check_login(db, body.name, body.password)
    if user is None:
        paused = throttle.note_failure(
            db, body.name, address, attempts=web.login_attempts, pause=web.login_pause, now=now
        )
        journal(
            db,
            body.name,
            "user.login_failed",
            f"failed login as {body.name!r} from {address}",
            severity="warning",
            address=address,
        )
        if paused is not None:
            journal(
                db,
                body.name,
                "user.login_paused",
                f"logins as {body.name!r} from {address} refused for {web.login_pause:g} s "
                f"after {web.login_attempts} failures",
                severity="warning",
                address=address,
            )
        db.commit()
        raise unauthorized("wrong user name or password, or the user is disabled")
    throttle.clear(db, body.name, address)
    key = session_key(db, context.config, now=now)
    cookie, row = open_session(
        db, key, user, address=address, lifetime=web.session_lifetime, now=now
    )
    user.last_login_at = now
    journal(db, user.name, "user.login", f"{user.name} logged in from {address}", address=address)
    db.commit()
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="lax",
        secure=web.secure_cookies,
        path="/",
    )
    return schemas.LoginAnswer(
        name=user.name,
        role=as_role(user.role),
        via="session",
        csrf_token=csrf_token(key, cookie),
        expires_at=aware(row.expires_at),
    )


@router.post(
    "/logout", summary="Log out: ends the session", status_code=204, responses=responses(401, 403)
)
def logout(user: Viewer, request: Request, response: Response, context: Context, db: Db) -> None:
    """Ends the cookie's session (a token request has none to end: use DELETE /api/tokens)."""
    if user.via == "session" and user.session_key is not None:
        end_session(db, user.session_key)
        journal(db, user.name, "user.logout", f"{user.name} logged out", address=_address(request))
        db.commit()
    response.delete_cookie(COOKIE, path="/")


@router.get("/me", summary="Who am I (and the CSRF token)", responses=responses(401))
def me(user: Viewer) -> schemas.Me:
    return schemas.Me(
        name=user.name,
        role=user.role,
        via=user.via,
        csrf_token=user.csrf_token,
    )


@router.post(
    "/me/password",
    summary="Change my password",
    status_code=204,
    responses=responses(401, 403),
)
def change_password(
    body: schemas.PasswordChange, user: Viewer, request: Request, context: Context, db: Db
) -> None:
    """Ends the user's other sessions (this one stays)."""
    row = get_user(db, user.name)
    if row is None or not verify_password(row.password_hash, body.current_password):
        raise Problem(403, "the current password is wrong", title="Not allowed")
    row.password_hash = hash_password(body.new_password)
    row.updated_at = context.clock()
    end_sessions(db, user.name, keep=user.session_key)
    journal(
        db,
        user.name,
        "user.password_changed",
        f"{user.name} changed their password",
        address=_address(request),
    )
    db.commit()
