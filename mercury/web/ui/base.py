"""What every page of the web interface shares: authentication and roles (the REST API's
own dependencies), CSRF, the security headers, error pages, flash messages and rendering.

Pages and actions authenticate with the API's session cookie through
:func:`mercury.web.auth.authenticate` and check roles with :func:`mercury.web.auth.require`,
so the browser and the REST API apply one set of rules. A request that changes something
must carry the session's CSRF token: htmx sends it in the ``X-CSRF-Token`` header (from
the page's ``csrf-token`` meta tag), and a plain form in its ``csrf_token`` field, which
is handed to the same check as that header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from mercury import __version__
from mercury.web.auth import SAFE_METHODS, Principal, authenticate
from mercury.web.context import WebContext
from mercury.web.problems import Problem, parameter_errors
from mercury.web.sessions import CSRF_HEADER
from mercury.web.ui.templating import environment

log = logging.getLogger("mercury.web.ui")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
CSRF_FIELD = "csrf_token"
HISTORY_COMMENT = "history_comment"
"""The editors' "why" field for the configuration history; rules, targets and modules have a
``comment`` key of their own, so the two must not share a name."""
FLASH_COOKIE = "mercury_flash"
MAX_FORM_BYTES = 64 * 2**20
"""Largest form body read to find its CSRF token (a dropped DICOM file is the largest)."""

_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,24})$")


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def context_of(request: Request) -> WebContext:
    context = request.app.state.mercury
    assert isinstance(context, WebContext)
    return context


# -- who is calling ----------------------------------------------------------------------


def remember_user(
    request: Request, principal: Annotated[Principal, Depends(authenticate)]
) -> Principal:
    """The API's authentication, kept on the request for the error pages' navigation."""
    request.state.principal = principal
    return principal


def current_user(request: Request) -> Principal | None:
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


# -- rendering ---------------------------------------------------------------------------


def appliance_color(value: str | None) -> str | None:
    """The configured header colour when it is a plain CSS colour (a hex value or a name)."""
    if value and _COLOR.match(value.strip()):
        return value.strip()
    return None


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    context = context_of(request)
    config = context.config
    user = values.pop("user", None) or current_user(request)
    flash = read_flash(request)
    page: dict[str, Any] = {
        "request": request,
        "user": user,
        "csrf_token": user.csrf_token if isinstance(user, Principal) else None,
        "may_operate": isinstance(user, Principal) and user.may("operator"),
        "is_admin": isinstance(user, Principal) and user.may("admin"),
        "appliance_name": config.appliance_name,
        "has_color": appliance_color(config.appliance_color) is not None,
        "version": __version__,
        "path": request.url.path,
        "flash": flash,
        "file_error": context.config_file.error,
    }
    page.update(values)
    html = environment.get_template(template).render(page)
    response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def read_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    tone, _, message = unquote(raw).partition(":")
    if tone not in ("ok", "error") or not message:
        return None
    return tone, message[:500]


def set_flash(response: Response, message: str, tone: str = "ok") -> None:
    """A message shown once, on the next page (it survives the reload after an action)."""
    response.set_cookie(
        FLASH_COOKIE,
        quote(f"{tone}:{message[:500]}", safe=""),
        max_age=60,
        path="/",
        httponly=True,
        samesite="strict",
    )


def done(request: Request, message: str, *, to: str | None = None, tone: str = "ok") -> Response:
    """The answer to a successful action: reload the page (or go to ``to``) and show
    ``message`` there."""
    if is_htmx(request):
        response: Response = Response(status_code=204)
        if to:
            response.headers["HX-Redirect"] = to
        else:
            response.headers["HX-Refresh"] = "true"
    else:
        response = RedirectResponse(to or safe_next(request.headers.get("referer")), 303)
    set_flash(response, message, tone)
    return response


def safe_next(value: str | None, default: str = "/") -> str:
    """A local path to go back to (never another site)."""
    if not value:
        return default
    if value.startswith(("http://", "https://")):
        match = re.match(r"^https?://[^/]+(/.*)?$", value)
        value = (match.group(1) or "/") if match else default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


def toast(request: Request, message: str, *, status: int, title: str | None = None) -> Response:
    """An error shown as a toast on the page that asked (htmx swaps it into #toasts)."""
    return render(
        request,
        "partials/toast.html",
        status=status,
        headers={"HX-Retarget": "#toasts", "HX-Reswap": "beforeend"},
        tone="error",
        title=title,
        message=message,
    )


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    if is_htmx(request):
        return toast(request, detail, status=status, title=title)
    return render(request, "error.html", status=status, title=title, detail=detail, code=status)


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method not in SAFE_METHODS:
        target = safe_next(request.headers.get("referer"))
    location = "/login" if target == "/" else f"/login?next={quote(target, safe='/')}"
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, 303)


# -- the route class -----------------------------------------------------------------------


async def _with_form_token(request: Request) -> Request:
    """A plain form's ``csrf_token`` field, handed to the API's check as its header."""
    if request.method in SAFE_METHODS or CSRF_HEADER.lower() in request.headers:
        return request
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return request
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FORM_BYTES:
        return request
    body = await request.body()
    form = await request.form()
    token = form.get(CSRF_FIELD)
    await form.close()
    scope = dict(request.scope)
    if isinstance(token, str) and token and token.isascii():
        scope["headers"] = [*request.scope["headers"], (b"x-csrf-token", token.encode("ascii"))]
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, replay)


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class UiRoute(APIRoute):
    """Routes of the web interface: a plain form's CSRF token honoured, errors as pages (or
    toasts for htmx), the login page when the session is missing, security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            request = await _with_form_token(request)
            try:
                response = await original(request)
            except Problem as exc:
                if exc.status == 401:
                    response = login_redirect(request)
                else:
                    response = error_page(request, exc.status, exc.title, exc.detail)
                    for name, value in exc.headers.items():
                        response.headers.setdefault(name, value)
            except RequestValidationError as exc:
                errors = parameter_errors(exc.errors())
                detail = "; ".join(f"{e['parameter']}: {e['message']}" for e in errors)
                response = error_page(request, 422, "Invalid request", detail or "invalid request")
            except StarletteHTTPException as exc:
                detail = exc.detail if isinstance(exc.detail, str) else "request refused"
                response = error_page(request, exc.status_code, "Request refused", detail)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                response = error_page(
                    request,
                    500,
                    "Something went wrong",
                    "An unexpected error; the server log has the details.",
                )
            return _secure(response)

        return handler


# -- forms -------------------------------------------------------------------------------


async def form_data(request: Request) -> FormData:
    """The submitted form (an async dependency, so handlers can stay synchronous)."""
    return await request.form(max_files=4, max_fields=2000, max_part_size=MAX_FORM_BYTES)


Form = Annotated[FormData, Depends(form_data)]


def text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value if isinstance(value, str) else default


def texts(form: FormData, name: str) -> list[str]:
    return [value for value in form.getlist(name) if isinstance(value, str)]


def checked(form: FormData, name: str) -> bool:
    return text(form, name) in ("on", "true", "1", "yes")


def log_failure(what: str, exc: BaseException) -> None:
    log.warning("%s failed: %s", what, exc)
