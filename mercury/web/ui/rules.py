"""Rules: the ordered list (drag to reorder), an editor for every field of a rule, the
rule tester (pasted tags or a dropped DICOM file) and the replay of a change over the
last days. Saving, reordering and deleting are admin actions applied as new
configuration versions."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.datastructures import UploadFile

from mercury.config.base import NAME_PATTERN
from mercury.config.models import MercuryConfig
from mercury.config.rules import Rule
from mercury.route.replay import ReplayError
from mercury.route.ruleset import RuleSet
from mercury.store.models import DecisionRow
from mercury.web.auth import Admin, Principal, Viewer
from mercury.web.context import Context, Db, WebContext
from mercury.web.problems import Problem
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
from mercury.web.ui.tester import REPLAY_DAYS, TagsError, evaluate, parse_tags, run_replay
from mercury.web.ui.tester import tags_from_dicom as read_dicom_tags

router = APIRouter(
    route_class=UiRoute, include_in_schema=False, dependencies=[Depends(remember_user)]
)

GROUPS: list[tuple[str, list[str]]] = [
    ("Selection", ["rule", "disabled", "fallback", "stop_after", "evaluate_on", "order"]),
    (
        "Action",
        [
            "action",
            "action_trigger",
            "target",
            "processing_module",
            "processing_settings",
            "processing_retain_images",
            "priority",
            "dynamic_routing",
            "dynamic_routing_allowed_targets",
            "conditional_alternate_target",
        ],
    ),
    (
        "Completion",
        [
            "series_complete_on",
            "late_arrivals",
            "study_trigger_condition",
            "study_trigger_series",
            "study_force_completion_action",
        ],
    ),
    (
        "Notifications",
        [
            "notification_webhook",
            "notification_payload",
            "notification_payload_body",
            "notification_email",
            "notification_email_body",
            "notification_email_type",
            "notification_trigger_reception",
            "notification_trigger_completion",
            "notification_trigger_completion_on_request",
            "notification_trigger_error",
        ],
    ),
    ("About", ["contact", "comment", "tags"]),
]
MAX_UPLOAD = 64 * 2**20
_NAME = re.compile(NAME_PATTERN)


def specs(config: MercuryConfig) -> list[forms.FieldSpec]:
    targets = list(config.targets)
    result = forms.model_specs(
        Rule,
        choices={
            "target": targets,
            "dynamic_routing_allowed_targets": targets,
            "conditional_alternate_target": targets,
        },
    )
    modules = ", ".join(config.modules) or "none defined yet"
    for spec in result:
        if spec.name == "processing_module":
            spec.help += f" Comma-separated, in chain order. Modules: {modules}."
    return result


def grouped(values: list[forms.FieldValue]) -> list[tuple[str, list[forms.FieldValue]]]:
    by_name = {value.name: value for value in values}
    groups: list[tuple[str, list[forms.FieldValue]]] = []
    placed: set[str] = set()
    for title, names in GROUPS:
        members = [by_name[n] for n in names if n in by_name]
        placed.update(n for n in names if n in by_name)
        groups.append((title, members))
    rest = [value for value in values if value.name not in placed]
    if rest:
        groups.append(("Other", rest))
    return groups


# -- the list ------------------------------------------------------------------------------


@dataclass
class RuleRow:
    position: int
    name: str
    rule: Rule
    fired_7d: int


def _fired(db: Any, context: WebContext) -> Counter[str]:
    since = context.clock() - timedelta(days=7)
    counts: Counter[str] = Counter()
    for (triggered,) in db.execute(
        select(DecisionRow.triggered).where(DecisionRow.decided_at >= since).limit(50000)
    ):
        counts.update(str(name) for name in triggered or [])
    return counts


@router.get("/rules")
def rules_list(request: Request, user: Viewer, context: Context, db: Db) -> Response:
    config = context.config
    fired = _fired(db, context)
    ruleset = RuleSet.from_config(config)
    items = [
        RuleRow(index + 1, spec.name, config.rules[spec.name], fired.get(spec.name, 0))
        for index, spec in enumerate(ruleset.specs)
    ]
    return render(request, "rules.html", title="Rules", items=items)


def _reorder(context: WebContext, user: Principal, names: list[str], what: str) -> str:
    data = configedit.document(context)
    current = configedit.entries(data, "rules")
    if sorted(names) != sorted(current) or len(set(names)) != len(names):
        raise Problem(409, "the rules changed meanwhile; reload the page and try again")
    reordered: dict[str, Any] = {}
    for name in names:
        entry = current[name]
        if isinstance(entry, dict):
            entry = {k: v for k, v in entry.items() if k != "order"}
        reordered[name] = entry
    try:
        outcome = configedit.apply(
            context, {**data, "rules": reordered}, author=user.name, comment=what
        )
    except configedit.ConfigRejected as exc:
        raise Problem(422, f"the new order does not validate: {exc}") from None
    return configedit.outcome_message(outcome, "Rule order")


def _evaluation_order(config: MercuryConfig) -> list[str]:
    return [spec.name for spec in RuleSet.from_config(config).specs]


@router.post("/rules/order")
def reorder(request: Request, user: Admin, context: Context, form: Form) -> Response:
    names = [n.strip() for n in text(form, "order").split(",") if n.strip()]
    message = _reorder(context, user, names, "rules reordered in the web interface")
    return done(request, message)


@router.post("/rules/{name}/move")
def move(request: Request, name: str, user: Admin, context: Context, form: Form) -> Response:
    names = _evaluation_order(context.config)
    if name not in names:
        raise Problem(404, f"no rule named {name}")
    index = names.index(name)
    step = -1 if text(form, "direction") == "up" else 1
    other = index + step
    if not 0 <= other < len(names):
        return done(request, f"Rule {name} is already {'first' if step < 0 else 'last'}.")
    names[index], names[other] = names[other], names[index]
    message = _reorder(context, user, names, f"rule {name} moved {'up' if step < 0 else 'down'}")
    return done(request, message)


# -- the editor ----------------------------------------------------------------------------


def _editor(
    request: Request,
    context: WebContext,
    *,
    name: str,
    original: str | None,
    values: list[forms.FieldValue],
    others: list[str] | None = None,
    name_problem: str | None = None,
    comment: str = "",
    status: int = 200,
) -> Response:
    return render(
        request,
        "rule_edit.html",
        status=status,
        title=f"Rule {original}" if original else "New rule",
        name=name,
        original=original,
        groups=grouped(values),
        others=others or [],
        name_problem=name_problem,
        comment=comment,
        replay_days=REPLAY_DAYS,
        position=(_evaluation_order(context.config).index(original) + 1)
        if original and original in context.config.rules
        else None,
    )


@router.get("/rules/new")
def new_rule(request: Request, user: Admin, context: Context) -> Response:
    fields = specs(context.config)
    return _editor(request, context, name="", original=None, values=forms.display_all(fields, {}))


@router.get("/rules/{name}")
def edit_rule(request: Request, name: str, user: Viewer, context: Context) -> Response:
    data = configedit.document(context)
    current = configedit.entries(data, "rules")
    if name not in current:
        raise Problem(404, f"no rule named {name} in the configuration")
    raw = current[name] if isinstance(current[name], dict) else {}
    values = forms.display_all(specs(context.config), raw)
    return _editor(request, context, name=name, original=name, values=values)


@dataclass
class Candidate:
    name: str
    original: str | None
    parsed: forms.Parsed
    data: dict[str, Any] | None
    name_problem: str | None


def _candidate(context: WebContext, form: Any) -> Candidate:
    name = text(form, "name").strip()
    original = text(form, "original").strip() or None
    data = configedit.document(context)
    current = configedit.entries(data, "rules")
    previous = current.get(original or name, {})
    parsed = forms.parse(
        specs(context.config), form, previous=previous if isinstance(previous, dict) else {}
    )
    name_problem = None
    if not _NAME.match(name):
        name_problem = "a name of letters, digits, '_' and '-' (it appears in URLs and jobs)"
    elif name != original and name in current:
        name_problem = f"a rule named {name} exists already"
    entry = forms.validate(Rule, parsed)
    if entry is None or name_problem is not None:
        return Candidate(name, original, parsed, None, name_problem)
    changed = configedit.replace_entry(data, "rules", original, name, entry)
    return Candidate(name, original, parsed, changed, None)


@router.post("/rules/save")
def save_rule(request: Request, user: Admin, context: Context, form: Form) -> Response:
    candidate = _candidate(context, form)
    comment = text(form, HISTORY_COMMENT).strip()[:500]
    fields = specs(context.config)
    if candidate.data is None:
        return _editor(
            request,
            context,
            name=candidate.name,
            original=candidate.original,
            values=forms.submitted(fields, candidate.parsed),
            name_problem=candidate.name_problem,
            comment=comment,
            status=422,
        )
    what = f"rule {candidate.name} " + ("changed" if candidate.original else "added")
    try:
        outcome = configedit.apply(
            context, candidate.data, author=user.name, comment=comment or f"{what} in the web UI"
        )
    except configedit.ConfigRejected as exc:
        problems, others = configedit.issues_for(exc.issues, "rules", candidate.name)
        candidate.parsed.problems.update(problems)
        return _editor(
            request,
            context,
            name=candidate.name,
            original=candidate.original,
            values=forms.submitted(fields, candidate.parsed),
            others=[str(issue) for issue in others],
            comment=comment,
            status=422,
        )
    return done(
        request,
        configedit.outcome_message(outcome, f"Rule {candidate.name}"),
        to=f"/rules/{candidate.name}",
    )


@router.post("/rules/{name}/delete")
def delete_rule(request: Request, name: str, user: Admin, context: Context) -> Response:
    message = configedit.delete_entry(context, "rules", name, author=user.name)
    return done(request, message, to="/rules")


# -- tester and replay -------------------------------------------------------------------------


def _tested_config(context: WebContext, form: Any) -> tuple[MercuryConfig | None, str | None, str]:
    """The configuration to test: the editor's unsaved rule when the form holds one."""
    if not text(form, "from_editor"):
        return context.config, None, text(form, "original")
    candidate = _candidate(context, form)
    if candidate.data is None:
        problems = dict(candidate.parsed.problems)
        if candidate.name_problem:
            problems["name"] = candidate.name_problem
        listed = "; ".join(f"{k}: {v}" for k, v in problems.items())
        return None, f"Fix the rule first ({listed}).", candidate.name
    checked = configedit.check(context, candidate.data)
    if checked.config is None:
        listed = "; ".join(str(issue) for issue in checked.issues)
        return None, f"The configuration with this rule is not valid: {listed}", candidate.name
    return checked.config, None, candidate.name


def _upload(form: Any) -> bytes | None:
    value = form.get("tester_file")
    if not isinstance(value, UploadFile) or not value.filename:
        return None
    data = value.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise TagsError("the file is larger than 64 MiB; drop a single DICOM image")
    return bytes(data)


@router.post("/rules/test")
def test_rules(request: Request, user: Viewer, context: Context, form: Form) -> Response:
    config, problem, focus = _tested_config(context, form)
    result = None
    source = ""
    if config is not None:
        try:
            data = _upload(form)
            if data is not None:
                tags = read_dicom_tags(data, dict(config.receiver.additional_tags))
                source = "the dropped file"
            else:
                tags = parse_tags(text(form, "tester_tags"))
                source = "the pasted tags"
            result = evaluate(config, tags)
        except TagsError as exc:
            problem = str(exc)
    return render(
        request,
        "partials/rule_test.html",
        result=result,
        problem=problem,
        focus=focus,
        source=source,
    )


@router.post("/rules/replay")
def replay_rules(request: Request, user: Viewer, context: Context, form: Form) -> Response:
    config, problem, focus = _tested_config(context, form)
    try:
        days = int(text(form, "days", "7"))
    except ValueError:
        days = 7
    report = None
    if config is not None:
        try:
            report = run_replay(context.engine, config, now=context.clock(), days=days)
        except ReplayError as exc:
            problem = str(exc)
    return render(
        request,
        "partials/rule_replay.html",
        report=report,
        problem=problem,
        focus=focus,
        days=days,
        changed=[s for s in report.series if s.status == "changed"][:200] if report else [],
    )
