"""Logging in and out, the account page (change password) and the header colour.

Logging in, out and changing the password call the REST API's own handlers, so the login
pause after repeated failures, the session cookie and the journal entries are the same
whichever way someone logs in."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from mercury.web import schemas
from mercury.web.auth import Viewer
from mercury.web.context import Context, Db
from mercury.web.problems import Problem
from mercury.web.routes import session as session_api
from mercury.web.ui.base import (
    Form,
    UiRoute,
    appliance_color,
    done,
    remember_user,
    render,
    safe_next,
    text,
)

router = APIRouter(route_class=UiRoute, include_in_schema=False)

LOGIN_COOKIE = "mercury_login"
"""A random value also put into the login form: a login posted by another site (which
cannot read it) is refused."""


def _login_page(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    name: str = "",
    next_path: str = "/",
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status=status,
        user=None,
        title="Log in",
        error=error,
        name=name,
        next_path=safe_next(next_path),
        form_token=token,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/login", max_age=3600
    )
    return response


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return _login_page(request, next_path=next)


@router.post("/login")
def login(request: Request, form: Form, context: Context, db: Db) -> Response:
    name = text(form, "name").strip()
    next_path = safe_next(text(form, "next"))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    sent = text(form, "form_token")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        return _login_page(
            request,
            status=400,
            error="The login form had expired; please log in again.",
            name=name,
            next_path=next_path,
        )
    try:
        body = schemas.LoginRequest(name=name, password=text(form, "password"))
    except ValidationError:
        return _login_page(
            request, status=400, error="Enter your user name and password.", next_path=next_path
        )
    answer = Response()
    try:
        session_api.login(body, request, answer, context, db)
    except Problem as exc:
        if exc.status == 429:
            message = f"Too many failed logins: {exc.detail}."
        else:
            message = "Wrong user name or password, or the account is disabled."
        response = _login_page(
            request, status=exc.status, error=message, name=name, next_path=next_path
        )
        for header, value in exc.headers.items():
            if header.lower() == "retry-after":
                response.headers[header] = value
        return response
    response = RedirectResponse(next_path, 303)
    for value in answer.headers.getlist("set-cookie"):
        response.headers.append("set-cookie", value)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout", dependencies=[Depends(remember_user)])
def logout(request: Request, user: Viewer, context: Context, db: Db) -> Response:
    answer = Response()
    session_api.logout(user, request, answer, context, db)
    response: Response = RedirectResponse("/login", 303)
    for value in answer.headers.getlist("set-cookie"):
        response.headers.append("set-cookie", value)
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=204, headers={"HX-Redirect": "/login"})
        for value in answer.headers.getlist("set-cookie"):
            response.headers.append("set-cookie", value)
    return response


@router.get("/account", dependencies=[Depends(remember_user)])
def account(request: Request, user: Viewer) -> Response:
    return render(request, "account.html", title="Your account", errors={})


@router.post("/account/password", dependencies=[Depends(remember_user)])
def change_password(
    request: Request, user: Viewer, form: Form, context: Context, db: Db
) -> Response:
    current = text(form, "current_password")
    new = text(form, "new_password")
    errors: dict[str, str] = {}
    if new != text(form, "confirm_password"):
        errors["confirm_password"] = "The two new passwords differ."  # noqa: S105 (a message)
    try:
        body = schemas.PasswordChange(current_password=current, new_password=new)
    except ValidationError:
        errors.setdefault(
            "new_password", "The new password must have at least 8 characters (at most 1024)."
        )
    if errors:
        return render(request, "account.html", status=422, title="Your account", errors=errors)
    try:
        session_api.change_password(body, user, request, context, db)
    except Problem as exc:
        if exc.status != 403:
            raise
        errors["current_password"] = "The current password is wrong."  # noqa: S105 (a message)
        return render(request, "account.html", status=403, title="Your account", errors=errors)
    return done(request, "Your password was changed; your other sessions were ended.")


@router.get("/theme.css")
def theme(context: Context) -> Response:
    """The header in the appliance's colour (a stylesheet: the pages allow no inline style)."""
    color = appliance_color(context.config.appliance_color)
    css = ""
    if color:
        css = (
            f".appliance {{ background: {color}; color: #fff; }}\n"
            f".topbar {{ box-shadow: inset 0 3px 0 {color}; }}\n"
        )
    return Response(css, media_type="text/css", headers={"Cache-Control": "no-cache"})
