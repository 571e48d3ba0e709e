"""Processing modules: the list with their recent runs, an editor (settings as JSON,
validated), and the log of each run."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from mercury.config.base import NAME_PATTERN
from mercury.config.modules import Module
from mercury.store.process_models import ModuleRunRow
from mercury.web.auth import Admin, Viewer
from mercury.web.context import Context, Db, WebContext
from mercury.web.problems import Problem
from mercury.web.timeutil import aware
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

GROUPS: list[tuple[str, list[str]]] = [
    ("How it runs", ["runner", "docker_tag", "command", "timeout", "gpus", "max_parallel"]),
    ("Settings", ["settings"]),
    (
        "Container",
        [
            "environment",
            "additional_volumes",
            "docker_arguments",
            "requires_root",
            "requires_persistence",
            "persistence_folder_name",
            "network_enabled",
        ],
    ),
    ("About", ["contact", "comment"]),
]
RECENT_RUNS = 25
LOG_TAIL = 256 * 1024
_NAME = re.compile(NAME_PATTERN)


def specs() -> list[forms.FieldSpec]:
    result = forms.model_specs(Module)
    for spec in result:
        if spec.name == "settings":
            spec.label = "Settings (JSON)"
            spec.help += " A JSON object; checked when you save."
        if spec.name == "command":
            spec.help += " Written as on a shell command line."
    return result


def grouped(values: list[forms.FieldValue]) -> list[tuple[str, list[forms.FieldValue]]]:
    by_name = {value.name: value for value in values}
    groups = []
    placed: set[str] = set()
    for title, names in GROUPS:
        groups.append((title, [by_name[n] for n in names if n in by_name]))
        placed.update(names)
    rest = [value for value in values if value.name not in placed]
    if rest:
        groups.append(("Other", rest))
    return groups


@dataclass
class ModuleRow:
    name: str
    module: Module
    runs_24h: Counter[str]
    used_by: list[str]


@router.get("/modules")
def modules_list(request: Request, user: Viewer, context: Context, db: Db) -> Response:
    config = context.config
    since = context.clock() - timedelta(days=1)
    counts: dict[str, Counter[str]] = {}
    for module, status, count in db.execute(
        select(ModuleRunRow.module, ModuleRunRow.status, func.count())
        .where(ModuleRunRow.started_at >= since)
        .group_by(ModuleRunRow.module, ModuleRunRow.status)
    ):
        counts.setdefault(module, Counter())[status] += int(count)
    items = [
        ModuleRow(
            name,
            module,
            counts.get(name, Counter()),
            [rule for rule, r in config.rules.items() if name in r.processing_module],
        )
        for name, module in config.modules.items()
    ]
    runs = list(
        db.scalars(select(ModuleRunRow).order_by(ModuleRunRow.id.desc()).limit(RECENT_RUNS))
    )
    return render(request, "modules.html", title="Modules", items=items, runs=runs)


def _editor(
    request: Request,
    context: WebContext,
    db: Any,
    *,
    name: str,
    original: str | None,
    values: list[forms.FieldValue],
    others: list[str] | None = None,
    name_problem: str | None = None,
    comment: str = "",
    status: int = 200,
) -> Response:
    runs = []
    if original:
        runs = list(
            db.scalars(
                select(ModuleRunRow)
                .where(ModuleRunRow.module == original)
                .order_by(ModuleRunRow.id.desc())
                .limit(RECENT_RUNS)
            )
        )
    return render(
        request,
        "module_edit.html",
        status=status,
        title=f"Module {original}" if original else "New module",
        name=name,
        original=original,
        groups=grouped(values),
        others=others or [],
        name_problem=name_problem,
        comment=comment,
        runs=runs,
        used_by=[
            r for r, rule in context.config.rules.items() if original in rule.processing_module
        ]
        if original
        else [],
    )


@router.get("/modules/new")
def new_module(request: Request, user: Admin, context: Context, db: Db) -> Response:
    values = forms.display_all(specs(), {})
    return _editor(request, context, db, name="", original=None, values=values)


@router.get("/modules/{name}")
def edit_module(request: Request, name: str, user: Viewer, context: Context, db: Db) -> Response:
    current = configedit.entries(configedit.document(context), "modules")
    if name not in current or not isinstance(current[name], dict):
        raise Problem(404, f"no module named {name} in the configuration")
    values = forms.display_all(specs(), current[name])
    return _editor(request, context, db, name=name, original=name, values=values)


@router.post("/modules/save")
def save_module(request: Request, user: Admin, context: Context, db: Db, form: Form) -> Response:
    name = text(form, "name").strip()
    original = text(form, "original").strip() or None
    comment = text(form, HISTORY_COMMENT).strip()[:500]
    data = configedit.document(context)
    current = configedit.entries(data, "modules")
    previous = current.get(original or name, {})
    parsed = forms.parse(specs(), form, previous=previous if isinstance(previous, dict) else {})
    name_problem = None
    if not _NAME.match(name):
        name_problem = "a name of letters, digits, '_' and '-' (rules refer to it)"
    elif name != original and name in current:
        name_problem = f"a module named {name} exists already"
    entry = forms.validate(Module, parsed)
    others: list[str] = []
    if entry is not None and name_problem is None:
        changed = configedit.replace_entry(data, "modules", original, name, entry)
        what = f"module {name} " + ("changed" if original else "added")
        try:
            outcome = configedit.apply(
                context, changed, author=user.name, comment=comment or f"{what} in the web UI"
            )
        except configedit.ConfigRejected as exc:
            problems, rest = configedit.issues_for(exc.issues, "modules", name)
            parsed.problems.update(problems)
            others = [str(issue) for issue in rest]
        else:
            return done(
                request,
                configedit.outcome_message(outcome, f"Module {name}"),
                to=f"/modules/{name}",
            )
    return _editor(
        request,
        context,
        db,
        name=name,
        original=original,
        values=forms.submitted(specs(), parsed),
        others=others,
        name_problem=name_problem,
        comment=comment,
        status=422,
    )


@router.post("/modules/{name}/delete")
def delete_module(request: Request, name: str, user: Admin, context: Context) -> Response:
    message = configedit.delete_entry(context, "modules", name, author=user.name)
    return done(request, message, to="/modules")


def read_log(path: str) -> tuple[str | None, bool, str | None]:
    """The end of a run's log: (text, cut, why it cannot be shown)."""
    if not path:
        return None, False, "this run has no log"
    file = Path(path)
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            if size > LOG_TAIL:
                handle.seek(size - LOG_TAIL)
            data = handle.read(LOG_TAIL)
    except FileNotFoundError:
        return None, False, "the log is gone (the run's folder was cleaned)"
    except OSError as exc:
        return None, False, f"the log cannot be read: {exc.strerror or exc}"
    return data.decode("utf-8", "replace"), size > LOG_TAIL, None


@router.get("/modules/{name}/runs/{run_id}")
def run_log(request: Request, name: str, run_id: str, user: Viewer, db: Db) -> Response:
    run = db.scalars(
        select(ModuleRunRow)
        .where(ModuleRunRow.module == name, ModuleRunRow.run_id == run_id)
        .order_by(ModuleRunRow.id.desc())
        .limit(1)
    ).first()
    if run is None:
        raise Problem(404, f"no run {run_id} of module {name}")
    log_text, cut, problem = read_log(run.log_path)
    seconds = (
        (aware(run.ended_at) - aware(run.started_at)).total_seconds() if run.ended_at else None
    )
    return render(
        request,
        "module_run.html",
        title=f"Run of {name}",
        run=run,
        module_name=name,
        log_text=log_text,
        cut=cut,
        problem=problem,
        seconds=seconds,
    )
