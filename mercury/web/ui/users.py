"""Users and roles (admins): create, change role, enable or disable, set a password,
delete; through the REST API's own handlers (the same checks and journal entries)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from mercury.web import schemas
from mercury.web.accounts import ROLES
from mercury.web.auth import Admin
from mercury.web.context import Context, Db
from mercury.web.params import USER_PATTERN
from mercury.web.problems import Problem
from mercury.web.routes import users as users_api
from mercury.web.ui.base import Form, UiRoute, checked, done, remember_user, render, text

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

_USER = re.compile(USER_PATTERN)


def _name(value: str) -> str:
    if not _USER.match(value):
        raise Problem(404, f"no user named {value}")
    return value


def _invalid(exc: ValidationError) -> Problem:
    messages = []
    for error in exc.errors(include_input=False):
        where = ".".join(str(part) for part in error.get("loc", ()))
        text_ = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        messages.append(f"{where}: {text_}" if where else text_)
    return Problem(422, "; ".join(messages))


@router.get("/users")
def users_page(request: Request, user: Admin, db: Db) -> Response:
    return render(
        request,
        "users.html",
        title="Users",
        users=users_api.list_users(user, db),
        roles=ROLES,
        me=user.name,
    )


@router.post("/users")
def create_user(request: Request, user: Admin, context: Context, db: Db, form: Form) -> Response:
    try:
        body = schemas.UserCreate(
            name=text(form, "name").strip(),
            password=text(form, "password"),
            role=text(form, "role", "viewer"),  # type: ignore[arg-type]
            enabled=True,
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    created = users_api.create_user(body, user, db, context)
    return done(request, f"User {created.name} created ({created.role}).")


@router.post("/users/{name}/update")
def update_user(
    request: Request, name: str, user: Admin, context: Context, db: Db, form: Form
) -> Response:
    role = text(form, "role") or None
    enabled = checked(form, "enabled") if text(form, "enabled_sent") else None
    password = text(form, "password") or None
    try:
        body = schemas.UserPatch(role=role, enabled=enabled, password=password)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise _invalid(exc) from None
    updated = users_api.update_user(_name(name), body, user, db, context)
    what = (
        "password set"
        if password
        else f"{updated.role}, {'enabled' if updated.enabled else 'disabled'}"
    )
    return done(request, f"User {updated.name}: {what}.")


@router.post("/users/{name}/delete")
def delete_user(request: Request, name: str, user: Admin, db: Db) -> Response:
    users_api.delete_user(_name(name), user, db)
    return done(request, f"User {name} deleted.")
