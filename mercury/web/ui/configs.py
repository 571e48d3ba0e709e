"""Configuration: the history of versions with their diffs, restore, the whole file in an
editor with validation, and the import of mercure's mercure.json. Everything applied
goes through the REST API's configuration service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from mercury.config.base import REVEAL_SECRETS
from mercury.config.errors import ConfigError
from mercury.config.load import parse_document
from mercury.config.mercure_import import import_mercure
from mercury.web import schemas
from mercury.web.auth import Admin, Viewer
from mercury.web.changes import RELOADED_SERVICES, needs_reload, restart_notes
from mercury.web.context import Context, Db, WebContext
from mercury.web.params import Page
from mercury.web.problems import Problem
from mercury.web.routes import config as config_api
from mercury.web.ui import configedit
from mercury.web.ui.base import Form, UiRoute, done, remember_user, render, text
from mercury.web.ui.images import PAGE_SIZE, Pager, clamp_offset
from mercury.web.versions import unified_diff

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

IMPORTED_SECTIONS = ("targets", "modules", "rules", "timings", "notifications", "processing")
"""What an imported mercure.json replaces; the receiver, storage, web, dispatch and
retention settings of this installation stay as they are."""
MAX_IMPORT = 8 * 2**20


@router.get("/config")
def config_page(
    request: Request, user: Viewer, context: Context, db: Db, offset: int = 0
) -> Response:
    page = Page(PAGE_SIZE, clamp_offset(offset), None)
    versions = config_api.list_versions(user, db, page)
    current = config_api.get_config(user, context, db)
    config = context.config
    return render(
        request,
        "config.html",
        title="Configuration",
        versions=versions.items,
        pager=Pager(page.offset, page.limit, versions.total),
        current=current,
        counts={
            "rules": len(config.rules),
            "targets": len(config.targets),
            "modules": len(config.modules),
        },
    )


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """The diff's lines, each with its kind: add, del, hunk, meta or context."""
    lines = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "meta"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        elif line.startswith("@@"):
            kind = "hunk"
        else:
            kind = "context"
        lines.append((kind, line))
    return lines


@router.get("/config/versions/{number}")
def version_page(
    request: Request, number: int, user: Admin, db: Db, against: int | None = None
) -> Response:
    if not 1 <= number < 2**31 or (against is not None and not 0 <= against < 2**31):
        raise Problem(404, f"no configuration version {number}")
    detail = config_api.get_version(number, user, db)
    diff = config_api.diff_version(number, user, db, against)
    return render(
        request,
        "config_version.html",
        title=f"Version {number}",
        version=detail,
        diff=diff,
        lines=diff_lines(diff.diff),
    )


@router.post("/config/versions/{number}/restore")
def restore(
    request: Request, number: int, user: Admin, context: Context, db: Db, form: Form
) -> Response:
    if not 1 <= number < 2**31:
        raise Problem(404, f"no configuration version {number}")
    try:
        body = schemas.RestoreRequest(comment=text(form, "comment").strip()[:500])
    except ValidationError:
        raise Problem(422, "the comment may not hold control characters") from None
    applied = config_api.restore_version(number, user, context, db, body)
    if not applied.changed:
        return done(request, f"Version {number} is the configuration in use already.")
    message = f"Version {number} restored as version {applied.version}."
    for note in applied.restart_required:
        message += f" {note.message[:1].upper()}{note.message[1:]}."
    return done(request, message, to="/config")


# -- editing the whole file ----------------------------------------------------------------


def _editor(
    request: Request,
    context: WebContext,
    *,
    text_value: str,
    issues: list[Any] | None = None,
    comment: str = "",
    status: int = 200,
    title: str = "Edit the configuration",
    intro: str | None = None,
    unmapped: list[Any] | None = None,
    diff: list[tuple[str, str]] | None = None,
) -> Response:
    return render(
        request,
        "config_edit.html",
        status=status,
        title=title,
        text_value=text_value,
        issues=issues or [],
        comment=comment,
        path=str(context.config_file.path),
        as_json=context.config_file.as_json,
        intro=intro,
        unmapped=unmapped,
        diff=diff,
    )


@router.get("/config/edit")
def edit_page(request: Request, user: Admin, context: Context) -> Response:
    return _editor(request, context, text_value=context.config_file.read())


@router.post("/config/validate")
def validate(request: Request, user: Viewer, context: Context, form: Form) -> Response:
    config, issues = context.config_file.check(text(form, "text"))
    notes: list[str] = []
    reloads = False
    if config is not None:
        notes = [note.message for note in restart_notes(context.config, config)]
        reloads = needs_reload(context.config, config)
    return render(
        request,
        "partials/config_check.html",
        valid=config is not None,
        issues=issues,
        notes=notes,
        reloads=RELOADED_SERVICES if reloads else (),
    )


@router.post("/config/apply")
def apply_text(request: Request, user: Admin, context: Context, form: Form) -> Response:
    submitted = text(form, "text").replace("\r\n", "\n")
    comment = text(form, "comment").strip()[:500]
    try:
        outcome = configedit.apply(
            context, submitted, author=user.name, comment=comment or "edited in the web UI"
        )
    except configedit.ConfigRejected as exc:
        return _editor(
            request, context, text_value=submitted, issues=exc.issues, comment=comment, status=422
        )
    return done(request, configedit.outcome_message(outcome, "Configuration"), to="/config")


# -- importing mercure.json ----------------------------------------------------------------


@router.get("/config/import")
def import_page(request: Request, user: Admin) -> Response:
    return render(request, "config_import.html", title="Import mercure.json", problem=None)


@router.post("/config/import")
def import_file(request: Request, user: Admin, context: Context, form: Form) -> Response:
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return render(
            request,
            "config_import.html",
            status=422,
            title="Import mercure.json",
            problem=(
                "Choose mercure's configuration file (usually /opt/mercure/config/mercure.json)."
            ),
        )
    raw = upload.file.read(MAX_IMPORT + 1)
    problem = None
    if len(raw) > MAX_IMPORT:
        problem = "The file is larger than 8 MiB; that is not a mercure.json."
    else:
        try:
            source = raw.decode("utf-8-sig")
            parsed, lines = parse_document(source, source="mercure.json", as_json=True)
            result = import_mercure(parsed, source="mercure.json", lines=lines)
        except UnicodeDecodeError:
            problem = "The file is not UTF-8 text."
        except ConfigError as exc:
            problem = f"mercure.json cannot be imported:\n{exc.report()}"
    if problem is not None:
        return render(
            request, "config_import.html", status=422, title="Import mercure.json", problem=problem
        )
    imported = result.config.model_dump(
        mode="json", exclude_defaults=True, context={REVEAL_SECRETS: True}
    )
    data = configedit.document(context)
    for section in IMPORTED_SECTIONS:
        if section in imported:
            data[section] = imported[section]
        else:
            data.pop(section, None)
    new_text = configedit.to_text(context, data)
    old_text = context.config_file.read()
    diff = unified_diff(old_text, new_text, "current", "imported")
    config, issues = context.config_file.check(new_text)
    counts = (
        f"{len(result.config.targets)} targets, {len(result.config.rules)} rules and "
        f"{len(result.config.modules)} modules"
    )
    intro = (
        f"mercure.json converted: {counts}. It replaces this installation's "
        f"{', '.join(IMPORTED_SECTIONS)}; the receiver, storage, web, dispatch and retention "
        "settings stay. Check the result, then apply it."
    )
    return _editor(
        request,
        context,
        text_value=new_text,
        issues=issues if config is None else [],
        comment=f"imported from {upload.filename}"[:500],
        title="Import mercure.json",
        intro=intro,
        unmapped=result.unmapped,
        diff=diff_lines(diff),
    )
