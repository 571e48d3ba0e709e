"""Targets: their state (circuit, hold), hold and release (operators), an editor per
target type (admins) and a connection test (the probe `mercury target test` runs: C-ECHO,
an HTTP request, a write probe)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from mercury.config.base import BASE_DIR, NAME_PATTERN
from mercury.config.models import MercuryConfig
from mercury.config.targets import (
    TARGET_MODELS,
    TARGET_TYPES,
    UNSUPPORTED_TARGET_TYPES,
    TargetBase,
)
from mercury.store import target_state
from mercury.store.delivery_models import JobAttemptRow
from mercury.store.models import JobRow
from mercury.web import rows, schemas
from mercury.web.auth import Admin, Operator, Principal, Viewer
from mercury.web.context import Context, Db, WebContext
from mercury.web.params import NAME_PATTERN as TARGET_NAME_PATTERN
from mercury.web.problems import Problem
from mercury.web.routes import targets as targets_api
from mercury.web.ui import configedit, forms
from mercury.web.ui.base import (
    HISTORY_COMMENT,
    Form,
    UiRoute,
    done,
    remember_user,
    render,
    text,
)

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

COMMON = [name for name in TargetBase.model_fields if name != "target_type"]
TYPE_LABELS = {
    "dicom": "DICOM (C-STORE)",
    "dicomtls": "DICOM over TLS",
    "dicomweb": "DICOMweb (STOW-RS) or folder",
    "sftp": "SFTP",
    "rsync": "rsync over SSH (not supported yet)",
    "xnat": "XNAT (not supported yet)",
    "s3": "S3 bucket",
    "folder": "Folder",
    "dummy": "Dummy (sends nothing)",
}
_NAME = re.compile(NAME_PATTERN)
_TARGET_NAME = re.compile(TARGET_NAME_PATTERN)


def common_specs() -> list[forms.FieldSpec]:
    return forms.model_specs(TargetBase, skip=("target_type",))


def type_specs(kind: str) -> list[forms.FieldSpec]:
    return forms.model_specs(TARGET_MODELS[kind], skip=("target_type", *COMMON))


def _known(context: WebContext, name: str) -> str:
    if not _TARGET_NAME.match(name) or name not in context.config.targets:
        raise Problem(404, f"no target named {name} in the configuration")
    return name


# -- the list ------------------------------------------------------------------------------


@dataclass
class TargetRow:
    info: schemas.TargetInfo
    description: str
    waiting: int
    failed: int
    sent_24h: int


def _describe(config: MercuryConfig, name: str) -> str:
    target = config.targets[name]
    for key in ("ip", "url", "folder", "bucket", "host"):
        value = getattr(target, key, None)
        if value:
            port = getattr(target, "port", None)
            where = f"{value}:{port}" if key == "ip" and port else str(value)
            title = getattr(target, "aet_target", "")
            return f"{where} ({title})" if title else where
    return ""


@router.get("/targets")
def targets_list(request: Request, user: Viewer, context: Context, db: Db) -> Response:
    config = context.config
    states = target_state.all_states(db)
    waiting: dict[str, int] = {}
    failed: dict[str, int] = {}
    for target, state, count in db.execute(
        select(JobRow.target, JobRow.state, func.count())
        .where(JobRow.kind == "dispatch", JobRow.state.in_(("queued", "running", "failed")))
        .group_by(JobRow.target, JobRow.state)
    ):
        if target is None:
            continue
        bucket = failed if state == "failed" else waiting
        bucket[target] = bucket.get(target, 0) + int(count)
    since = context.clock() - timedelta(days=1)
    sent = dict(
        db.execute(
            select(JobAttemptRow.target, func.coalesce(func.sum(JobAttemptRow.sent), 0))
            .where(JobAttemptRow.ended_at >= since)
            .group_by(JobAttemptRow.target)
        ).all()
    )
    items = [
        TargetRow(
            info=rows.target_info(name, target.target_type, states.get(name)),
            description=_describe(config, name),
            waiting=waiting.get(name, 0),
            failed=failed.get(name, 0),
            sent_24h=int(sent.get(name, 0)),
        )
        for name, target in config.targets.items()
    ]
    return render(request, "targets.html", title="Targets", items=items)


@router.post("/targets/{name}/hold")
def hold(
    request: Request, name: str, user: Operator, context: Context, db: Db, form: Form
) -> Response:
    reason = (text(form, "reason") or request.headers.get("hx-prompt", "")).strip()[:500]
    try:
        body = schemas.HoldRequest(reason=reason)
    except ValueError:
        raise Problem(422, "the reason may not hold control characters") from None
    answer = targets_api.hold_target(_known(context, name), user, db, context, body)
    if not answer.changed:
        return done(request, f"Target {name} was already held.")
    return done(request, f"Target {name} held: its jobs wait until it is released.")


@router.post("/targets/{name}/release")
def release(request: Request, name: str, user: Operator, context: Context, db: Db) -> Response:
    answer = targets_api.release_target(_known(context, name), user, db, context)
    if not answer.changed:
        return done(request, f"Target {name} was not held.")
    return done(request, f"Target {name} released: its waiting jobs are sent now.")


# -- the editor ----------------------------------------------------------------------------


def _editor(
    request: Request,
    *,
    name: str,
    original: str | None,
    kind: str,
    common: list[forms.FieldValue],
    typed: dict[str, list[forms.FieldValue]],
    others: list[str] | None = None,
    name_problem: str | None = None,
    comment: str = "",
    info: schemas.TargetInfo | None = None,
    used_by: list[str] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "target_edit.html",
        status=status,
        title=f"Target {original}" if original else "New target",
        name=name,
        original=original,
        kind=kind,
        types=[(t, TYPE_LABELS.get(t, t)) for t in TARGET_TYPES],
        unsupported=UNSUPPORTED_TARGET_TYPES,
        common=common,
        typed=typed,
        others=others or [],
        name_problem=name_problem,
        comment=comment,
        info=info,
        used_by=used_by or [],
    )


def _display(
    raw: dict[str, Any], kind: str
) -> tuple[list[forms.FieldValue], dict[str, list[forms.FieldValue]]]:
    common = forms.display_all(common_specs(), raw)
    typed = {t: forms.display_all(type_specs(t), raw if t == kind else {}) for t in TARGET_TYPES}
    return common, typed


@router.get("/targets/new")
def new_target(request: Request, user: Admin) -> Response:
    common, typed = _display({}, "folder")
    return _editor(request, name="", original=None, kind="folder", common=common, typed=typed)


@router.get("/targets/{name}")
def edit_target(request: Request, name: str, user: Viewer, context: Context, db: Db) -> Response:
    data = configedit.document(context)
    current = configedit.entries(data, "targets")
    if name not in current or not isinstance(current[name], dict):
        raise Problem(404, f"no target named {name} in the configuration")
    raw = current[name]
    kind = str(raw.get("target_type", "dicom"))
    common, typed = _display(raw, kind)
    info = rows.target_info(name, kind, target_state.all_states(db).get(name))
    used_by = [rule for rule, r in context.config.rules.items() if name in r.target]
    return _editor(
        request,
        name=name,
        original=name,
        kind=kind,
        common=common,
        typed=typed,
        info=info,
        used_by=used_by,
    )


@dataclass
class Candidate:
    name: str
    original: str | None
    kind: str
    common: forms.Parsed
    typed: forms.Parsed
    entry: dict[str, Any] | None
    data: dict[str, Any]
    name_problem: str | None


def _candidate(context: WebContext, form: Any) -> Candidate:
    name = text(form, "name").strip()
    original = text(form, "original").strip() or None
    kind = text(form, "target_type")
    if kind not in TARGET_MODELS:
        raise Problem(422, f"unknown target type {kind!r}")
    data = configedit.document(context)
    current = configedit.entries(data, "targets")
    previous = current.get(original or name, {})
    previous = previous if isinstance(previous, dict) else {}
    same_type = previous if previous.get("target_type") == kind else {}
    common = forms.parse(common_specs(), form, previous=previous)
    typed = forms.parse(type_specs(kind), form, previous=same_type, prefix=f"{kind}__")
    merged = forms.Parsed(
        {"target_type": kind, **typed.data, **common.data}, {**typed.problems, **common.problems}
    )
    name_problem = None
    if not _NAME.match(name):
        name_problem = "a name of letters, digits, '_' and '-' (rules refer to it)"
    elif name != original and name in current:
        name_problem = f"a target named {name} exists already"
    entry = forms.validate(TARGET_MODELS[kind], merged)
    for key, problem in merged.problems.items():
        target = common if key in COMMON else typed
        target.problems.setdefault(key, problem)
    return Candidate(name, original, kind, common, typed, entry, data, name_problem)


def _redisplay(
    candidate: Candidate,
) -> tuple[list[forms.FieldValue], dict[str, list[forms.FieldValue]]]:
    common = forms.submitted(common_specs(), candidate.common)
    typed = {
        t: (
            forms.submitted(type_specs(t), candidate.typed)
            if t == candidate.kind
            else forms.display_all(type_specs(t), {})
        )
        for t in TARGET_TYPES
    }
    return common, typed


@router.post("/targets/save")
def save_target(request: Request, user: Admin, context: Context, form: Form) -> Response:
    candidate = _candidate(context, form)
    comment = text(form, HISTORY_COMMENT).strip()[:500]
    others: list[str] = []
    if candidate.entry is not None and candidate.name_problem is None:
        changed = configedit.replace_entry(
            candidate.data, "targets", candidate.original, candidate.name, candidate.entry
        )
        what = f"target {candidate.name} " + ("changed" if candidate.original else "added")
        try:
            outcome = configedit.apply(
                context, changed, author=user.name, comment=comment or f"{what} in the web UI"
            )
        except configedit.ConfigRejected as exc:
            problems, rest = configedit.issues_for(exc.issues, "targets", candidate.name)
            for key, problem in problems.items():
                (candidate.common if key in COMMON else candidate.typed).problems[key] = problem
            others = [str(issue) for issue in rest]
        else:
            return done(
                request,
                configedit.outcome_message(outcome, f"Target {candidate.name}"),
                to=f"/targets/{candidate.name}",
            )
    common, typed = _redisplay(candidate)
    return _editor(
        request,
        name=candidate.name,
        original=candidate.original,
        kind=candidate.kind,
        common=common,
        typed=typed,
        others=others,
        name_problem=candidate.name_problem,
        comment=comment,
        status=422,
    )


@router.post("/targets/{name}/delete")
def delete_target(request: Request, name: str, user: Admin, context: Context) -> Response:
    message = configedit.delete_entry(context, "targets", name, author=user.name)
    return done(request, message, to="/targets")


# -- connection test -----------------------------------------------------------------------


@dataclass
class Probe:
    name: str
    ok: bool
    description: str
    message: str
    details: dict[str, Any]


def probe(config: MercuryConfig, name: str, target: TargetBase) -> Probe:
    """Test the connection as `mercury target test` does."""
    from mercury.dispatch.base import SenderContext
    from mercury.dispatch.registry import UnsupportedTarget, create_sender

    titles = config.receiver.ae_titles
    context = SenderContext(
        default_ae_title=titles[0] if titles else "MERCURY",
        work_folder=config.storage.spool / "work",
        extra={"commitment_port": config.dispatch.storage_commitment_port},
    )
    try:
        sender = create_sender(name, target, context)
        description = sender.describe()
        result = sender.probe()
    except UnsupportedTarget as exc:
        return Probe(name, False, name, str(exc), {})
    except Exception as exc:
        return Probe(name, False, name, f"cannot build the sender: {exc}", {})
    return Probe(name, result.ok, description, result.message, dict(result.details))


@router.post("/targets/test")
def test_target(request: Request, user: Operator, context: Context, form: Form) -> Response:
    """Test the target as edited (admins) or as saved (operators)."""
    if text(form, "from_editor") and user.may("admin"):
        candidate = _candidate(context, form)
        if candidate.entry is None:
            problems = {**candidate.common.problems, **candidate.typed.problems}
            listed = "; ".join(f"{k}: {v}" for k, v in problems.items())
            return render(
                request,
                "partials/target_test.html",
                result=None,
                problem=f"Fix the target first ({listed}).",
            )
        checked = configedit.check(
            context,
            configedit.replace_entry(
                candidate.data,
                "targets",
                candidate.original,
                candidate.name or "new",
                candidate.entry,
            ),
        )
        config = checked.config or context.config
        model = TARGET_MODELS[candidate.kind].model_validate(
            candidate.entry, context={BASE_DIR: context.config_file.path.parent}
        )
        result = probe(config, candidate.name or "new", model)
    else:
        name = _known(context, text(form, "original"))
        result = probe(context.config, name, context.config.targets[name])
    _journal_probe(context, user, result)
    return render(request, "partials/target_test.html", result=result, problem=None)


def _journal_probe(context: WebContext, user: Principal, result: Probe) -> None:
    from mercury.web.audit import journal

    with context.sessions.begin() as session:
        journal(
            session,
            user.name,
            "target.tested",
            f"{user.name} tested target {result.name}: "
            + ("OK" if result.ok else f"failed ({result.message})"),
            severity="info" if result.ok else "warning",
            target=result.name,
            ok=result.ok,
        )
