"""Every error of the REST API as RFC 9457 problem details (``application/problem+json``):
type, title, status and detail; invalid requests also list each parameter and its message."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("mercury.web")

MEDIA_TYPE = "application/problem+json"
INVALID = "urn:mercury:problem:invalid-request"


class ParameterError(BaseModel):
    """One invalid parameter: where it was (query, path, header, body) and what is wrong."""

    parameter: str = Field(description="The parameter, or the key path inside the body.")
    location: str = Field(alias="in", description="query, path, header, cookie or body.")
    message: str
    line: int | None = Field(default=None, description="Line in a submitted configuration.")
    column: int | None = None

    model_config = ConfigDict(populate_by_name=True)


class ProblemDetails(BaseModel):
    """An error (RFC 9457)."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    errors: list[ParameterError] | None = Field(
        default=None, description="Invalid parameters (422 answers)."
    )

    model_config = ConfigDict(extra="allow")


def _problem_content() -> dict[str, Any]:
    return {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers an endpoint gives."""
    return {
        status: {
            "model": ProblemDetails,
            "description": HTTPStatus(status).phrase,
            "content": _problem_content(),
        }
        for status in statuses
    }


class Problem(Exception):
    """Raise to answer with a problem; ``extra`` becomes further members of the answer."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type
        self.headers = dict(headers or {})
        self.extra = extra


def invalid(parameter: str, location: str, message: str) -> Problem:
    """A 422 for one parameter the schema cannot check (a cursor, a date out of range)."""
    return Problem(
        422,
        f"{parameter}: {message}",
        title="Invalid request",
        type=INVALID,
        errors=[{"parameter": parameter, "in": location, "message": message}],
    )


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def parameter_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """FastAPI's validation errors as {parameter, in, message}, never echoing the input."""
    result: list[dict[str, str]] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        where = loc[0] if loc else "body"
        name = ".".join(loc[1:]) or where
        result.append({"parameter": name, "in": where, "message": _message(error)})
    return result


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.detail, title=exc.title, type=exc.type, headers=exc.headers, **exc.extra
    )


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _on_invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = parameter_errors(exc.errors())
    detail = "; ".join(f"{e['parameter']}: {e['message']}" for e in errors) or "invalid request"
    return problem_response(422, detail, title="Invalid request", type=INVALID, errors=errors)


async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, "an unexpected error; the server log has the details", title="Internal Server Error"
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(Exception, _on_crash)
