"""The configuration: read it (secrets masked), validate a text, apply it as a new version,
list versions, diff two, restore one."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import ValidationError
from sqlalchemy import select

from mercury.config.errors import ConfigIssue
from mercury.config.models import mask_password
from mercury.store.web_models import ConfigVersionRow
from mercury.web import schemas
from mercury.web.apply import ConfigRejected, Outcome, apply_text
from mercury.web.auth import Admin, Viewer
from mercury.web.changes import RELOADED_SERVICES, needs_reload, restart_notes
from mercury.web.configfile import MAX_TEXT
from mercury.web.context import Context, Db
from mercury.web.paging import newest_first
from mercury.web.params import MAX_VERSION, Page, VersionNumber, page
from mercury.web.problems import Problem, parameter_errors, responses
from mercury.web.versions import latest, unified_diff

router = APIRouter(prefix="/config", tags=["configuration"], responses=responses(401, 403, 422))

INVALID_CONFIG = "urn:mercury:problem:invalid-configuration"
TEXT_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")

_SUBMISSION_SCHEMA = schemas.ConfigSubmission.model_json_schema()
CONFIG_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The whole configuration file as text (YAML, or JSON when the file is "
        ".json), or a JSON object with `text` and `comment`.",
        "content": {
            "application/json": {"schema": _SUBMISSION_SCHEMA},
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


async def submission(
    request: Request,
    comment: Annotated[
        str | None,
        Query(
            max_length=500,
            pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
            description="Why (for a text body; a JSON body has its own `comment`).",
        ),
    ] = None,
) -> schemas.ConfigSubmission:
    """The configuration text of the request body: raw YAML/JSON text, or a JSON object."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and media not in TEXT_TYPES:
        raise Problem(
            415,
            "send the configuration as application/yaml or text/plain, or as application/json "
            '{"text": ..., "comment": ...}',
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_TEXT + 65536:
            raise Problem(413, f"the configuration may be at most {MAX_TEXT // 2**20} MiB")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        if media == "application/json":
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise Problem(
                    422,
                    "body: not valid JSON",
                    title="Invalid request",
                    errors=[{"parameter": "body", "in": "body", "message": "not valid JSON"}],
                ) from None
            return schemas.ConfigSubmission.model_validate(data)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Problem(
                422,
                "body: not UTF-8 text",
                title="Invalid request",
                errors=[{"parameter": "body", "in": "body", "message": "not UTF-8 text"}],
            ) from None
        return schemas.ConfigSubmission(text=text, comment=comment or "")
    except ValidationError as exc:
        errors = parameter_errors(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        )
        detail = "; ".join(f"{e['parameter']}: {e['message']}" for e in errors)
        raise Problem(422, detail, title="Invalid request", errors=errors) from None


Submission = Annotated[schemas.ConfigSubmission, Depends(submission)]


def _issues(issues: list[ConfigIssue]) -> list[schemas.ConfigIssueOut]:
    return [
        schemas.ConfigIssueOut(location=i.location, message=i.message, line=i.line, column=i.column)
        for i in issues
    ]


def _notes(outcome: Outcome) -> list[schemas.RestartNoteOut]:
    return [
        schemas.RestartNoteOut(section=n.section, services=list(n.services), message=n.message)
        for n in outcome.restart_required
    ]


@router.get("", summary="The current configuration (secrets masked)")
def get_config(_user: Viewer, context: Context, db: Db) -> schemas.ConfigCurrent:
    config = context.config
    data = config.model_dump(mode="json")
    data["storage"]["database"] = mask_password(config.storage.database)
    newest = latest(db)
    return schemas.ConfigCurrent(
        path=str(context.config_file.path),
        version=newest.version if newest else None,
        file_error=context.config_file.error,
        config=data,
    )


@router.post(
    "/validate",
    summary="Validate a configuration text",
    openapi_extra=CONFIG_BODY,
    responses=responses(413, 415),
)
def validate_config(_user: Viewer, context: Context, body: Submission) -> schemas.Validation:
    """Every problem with its key path and line, or valid; and what applying it would
    need: restarts, and the services a running mercury restarts itself."""
    config, issues = context.config_file.check(body.text)
    if config is None:
        return schemas.Validation(
            valid=False, errors=_issues(issues), restart_required=[], reloads=[]
        )
    current = context.config
    notes = restart_notes(current, config)
    return schemas.Validation(
        valid=True,
        errors=[],
        restart_required=[
            schemas.RestartNoteOut(section=n.section, services=list(n.services), message=n.message)
            for n in notes
        ],
        reloads=list(RELOADED_SERVICES) if needs_reload(current, config) else [],
    )


def _applied(context: Context, text: str, **how: Any) -> schemas.Applied:
    try:
        outcome = apply_text(context, text, **how)
    except OSError as exc:
        raise Problem(
            500,
            f"cannot write {context.config_file.path}: {exc.strerror or exc}; nothing was changed",
            title="Configuration not written",
        ) from None
    except ConfigRejected as exc:
        errors = _issues(exc.issues)
        raise Problem(
            422,
            f"the configuration is not valid ({len(errors)} problem"
            f"{'s' if len(errors) != 1 else ''}); nothing was changed",
            title="Invalid configuration",
            type=INVALID_CONFIG,
            errors=[
                {
                    "parameter": e.location or "text",
                    "in": "body",
                    "message": e.message,
                    "line": e.line,
                    "column": e.column,
                }
                for e in errors
            ],
        ) from None
    return schemas.Applied(
        version=outcome.version,
        changed=outcome.changed,
        restart_required=_notes(outcome),
        reloads=outcome.reloads,
        sections=outcome.sections,
    )


@router.post(
    "",
    summary="Apply a configuration (admin)",
    openapi_extra=CONFIG_BODY,
    responses=responses(413, 415),
)
def apply_config(user: Admin, context: Context, body: Submission) -> schemas.Applied:
    """Validate; write the file atomically; record a new version (author, time, comment,
    full text); journal `config.changed`. Invalid: 422 listing every problem, nothing
    changed. A running `mercury serve` restarts the services that read it (`reloads`) within
    seconds; `restart_required` lists what waits for a restart of mercury."""
    return _applied(context, body.text, author=user.name, comment=body.comment)


@router.get("/versions", summary="Configuration versions, newest first")
def list_versions(
    _user: Viewer, db: Db, paging: Annotated[Page, Depends(page)]
) -> schemas.Page[schemas.VersionSummary]:
    result = newest_first(
        db,
        select(ConfigVersionRow),
        paging,
        time=None,
        key=ConfigVersionRow.version,
        position=lambda row: (None, row[0].version),
    )
    return schemas.Page[schemas.VersionSummary](
        items=[_summary(row[0]) for row in result.rows],
        total=result.total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=result.next_cursor,
    )


def _summary(row: ConfigVersionRow) -> schemas.VersionSummary:
    return schemas.VersionSummary(
        version=row.version,
        created_at=row.created_at,
        author=row.author,
        comment=row.comment,
        source=row.source,
        restored_from=row.restored_from,
        digest=row.digest,
    )


def _version(db: Db, number: int) -> ConfigVersionRow:
    row = db.get(ConfigVersionRow, number)
    if row is None:
        raise Problem(404, f"no configuration version {number}")
    return row


@router.get(
    "/versions/{number}",
    summary="One version with its full text (admin: it holds the file's secrets)",
    responses=responses(404),
)
def get_version(number: VersionNumber, _user: Admin, db: Db) -> schemas.VersionDetail:
    row = _version(db, number)
    return schemas.VersionDetail(**_summary(row).model_dump(), text=row.text)


@router.get(
    "/versions/{number}/diff",
    summary="Unified diff between two versions (admin)",
    responses=responses(404),
)
def diff_version(
    number: VersionNumber,
    _user: Admin,
    db: Db,
    against: Annotated[
        int | None,
        Query(ge=0, le=MAX_VERSION, description="Default: the version before; 0: empty text."),
    ] = None,
) -> schemas.VersionDiff:
    row = _version(db, number)
    if against is None:
        before = db.scalars(
            select(ConfigVersionRow)
            .where(ConfigVersionRow.version < number)
            .order_by(ConfigVersionRow.version.desc())
            .limit(1)
        ).first()
        against = before.version if before else 0
        old_text = before.text if before else ""
    else:
        old_text = _version(db, against).text if against else ""
    return schemas.VersionDiff(
        version=number,
        against=against,
        diff=unified_diff(old_text, row.text, f"version {against}", f"version {number}"),
    )


@router.post(
    "/versions/{number}/restore",
    summary="Apply an earlier version as a new version (admin)",
    responses=responses(404),
)
def restore_version(
    number: VersionNumber,
    user: Admin,
    context: Context,
    db: Db,
    body: Annotated[schemas.RestoreRequest | None, Body()] = None,
) -> schemas.Applied:
    row = _version(db, number)
    text = row.text
    db.rollback()
    comment = (body.comment if body else "") or f"restore of version {number}"
    return _applied(
        context, text, author=user.name, comment=comment, source="restore", restored_from=number
    )
