"""Users (admin) and API tokens (each user their own; admins everyone's)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from mercury.store.web_models import ApiTokenRow, UserRow
from mercury.web import accounts, schemas
from mercury.web.accounts import AccountError, UnknownUser
from mercury.web.audit import journal
from mercury.web.auth import Admin, Viewer
from mercury.web.context import Context, Db
from mercury.web.params import TOKEN_ID_PATTERN, USER_PATTERN, UserPath
from mercury.web.problems import Problem, responses

router = APIRouter(tags=["users and tokens"], responses=responses(401, 403, 422))


def _user(row: UserRow) -> schemas.UserOut:
    return schemas.UserOut(
        name=row.name,
        role=row.role,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_login_at=row.last_login_at,
    )


def _token(row: ApiTokenRow) -> schemas.TokenOut:
    return schemas.TokenOut(
        id=row.id,
        user=row.user_name,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


@router.get("/users", summary="List users (admin)")
def list_users(_admin: Admin, db: Db) -> list[schemas.UserOut]:
    return [_user(row) for row in accounts.list_users(db)]


@router.post("/users", summary="Create a user (admin)", status_code=201, responses=responses(409))
def create_user(
    body: schemas.UserCreate, admin: Admin, db: Db, context: Context
) -> schemas.UserOut:
    try:
        row = accounts.create_user(
            db, body.name, body.password, body.role, now=context.clock(), enabled=body.enabled
        )
    except AccountError as exc:
        raise Problem(409, str(exc)) from None
    journal(
        db,
        admin.name,
        "user.created",
        f"{admin.name} created user {body.name} ({body.role})",
        name=body.name,
        role=body.role,
        enabled=body.enabled,
    )
    db.commit()
    return _user(row)


@router.patch(
    "/users/{name}",
    summary="Change a user's role, enabled flag or password (admin)",
    responses=responses(404, 409),
)
def update_user(
    name: UserPath, body: schemas.UserPatch, admin: Admin, db: Db, context: Context
) -> schemas.UserOut:
    """Disabling a user or setting their password ends their sessions; a disabled user's
    tokens are refused until they are enabled again."""
    try:
        row = accounts.update_user(
            db,
            name,
            now=context.clock(),
            role=body.role,
            enabled=body.enabled,
            password=body.password,
        )
    except UnknownUser as exc:
        raise Problem(404, str(exc)) from None
    except AccountError as exc:
        raise Problem(409, str(exc)) from None
    changes: dict[str, Any] = {
        key: value
        for key, value in (("role", body.role), ("enabled", body.enabled))
        if value is not None
    }
    if body.password is not None:
        changes["password"] = True
    journal(
        db,
        admin.name,
        "user.updated",
        f"{admin.name} changed user {name}: "
        + (", ".join(_change(k, v) for k, v in changes.items()) or "nothing"),
        name=name,
        changes=changes,
    )
    db.commit()
    return _user(row)


def _change(key: str, value: Any) -> str:
    return "new password" if key == "password" else f"{key} {value}"


@router.delete(
    "/users/{name}", summary="Delete a user (admin)", status_code=204, responses=responses(404, 409)
)
def delete_user(name: UserPath, admin: Admin, db: Db) -> Response:
    """Their sessions and tokens go with them; their journal entries stay."""
    try:
        accounts.delete_user(db, name)
    except UnknownUser as exc:
        raise Problem(404, str(exc)) from None
    except AccountError as exc:
        raise Problem(409, str(exc)) from None
    journal(db, admin.name, "user.deleted", f"{admin.name} deleted user {name}", name=name)
    db.commit()
    return Response(status_code=204)


@router.get("/tokens", summary="List API tokens (yours; admins: everyone's)")
def list_tokens(
    user: Viewer,
    db: Db,
    owner: Annotated[
        str | None,
        Query(alias="user", pattern=USER_PATTERN, description="Admins: only this user's."),
    ] = None,
) -> list[schemas.TokenOut]:
    if user.role == "admin":
        return [_token(row) for row in accounts.list_tokens(db, owner)]
    if owner is not None and owner != user.name:
        raise Problem(403, "only admins see other users' tokens", title="Not allowed")
    return [_token(row) for row in accounts.list_tokens(db, user.name)]


@router.post(
    "/tokens",
    summary="Create an API token (shown once)",
    status_code=201,
    responses=responses(404),
)
def create_token(
    body: schemas.TokenCreate, user: Viewer, db: Db, context: Context
) -> schemas.NewToken:
    """A token acts with its user's role. Admins may create tokens for other users."""
    owner = body.user or user.name
    if owner != user.name and user.role != "admin":
        raise Problem(403, "only admins create tokens for other users", title="Not allowed")
    now = context.clock()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    try:
        new = accounts.create_token(
            db,
            owner,
            now=now,
            created_by=user.name,
            description=body.description,
            expires_at=expires,
        )
    except UnknownUser as exc:
        raise Problem(404, str(exc)) from None
    journal(
        db,
        user.name,
        "token.created",
        f"{user.name} created API token {new.row.id} for {owner}",
        token=new.row.id,
        owner=owner,
        description=body.description,
    )
    db.commit()
    return schemas.NewToken(**_token(new.row).model_dump(), token=new.token)


@router.delete(
    "/tokens/{token_id}",
    summary="Revoke an API token (yours; admins: any)",
    status_code=204,
    responses=responses(404),
)
def revoke_token(
    token_id: Annotated[str, Path(pattern=TOKEN_ID_PATTERN, description="Token id.")],
    user: Viewer,
    db: Db,
    context: Context,
) -> Response:
    row = db.get(ApiTokenRow, token_id)
    if row is None or (row.user_name != user.name and user.role != "admin"):
        raise Problem(404, f"no token {token_id} of yours")
    if accounts.revoke_token(db, token_id, now=context.clock()):
        journal(
            db,
            user.name,
            "token.revoked",
            f"{user.name} revoked API token {token_id} of {row.user_name}",
            token=token_id,
            owner=row.user_name,
        )
    db.commit()
    return Response(status_code=204)
