"""Changing the configuration from the web interface: the file's text is read as data, one
entry is changed, and the new text goes through the REST API's apply service
(:func:`mercury.web.apply.apply_text`): validated, written atomically, recorded as a new
version with its author and comment, journaled. Nothing writes the file another way.

Entries the user did not touch keep what the file holds (comments excepted: the file is
written back as plain YAML, or JSON when it is a .json file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mercury.config.errors import ConfigError, ConfigIssue
from mercury.config.load import parse_document
from mercury.config.models import MercuryConfig
from mercury.config.save import HEADER
from mercury.config.yaml_io import dump_yaml
from mercury.web.apply import ConfigRejected, Outcome, apply_text
from mercury.web.context import WebContext
from mercury.web.problems import Problem

SOURCE = "ui"
"""How versions applied from the web interface are marked in the history."""

Section = str  # "rules", "targets" or "modules"


def document(context: WebContext) -> dict[str, Any]:
    """The configuration file as data (a 409 page when it does not parse)."""
    text = context.config_file.read()
    try:
        data, _ = parse_document(
            text, source=context.config_file.path.name, as_json=context.config_file.as_json
        )
    except ConfigError as exc:
        raise Problem(
            409,
            f"the configuration file does not parse, so it cannot be edited entry by entry; "
            f"fix it in the configuration editor first ({exc.report()})",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Problem(409, "the configuration file's top level is not a mapping of settings")
    return data


def to_text(context: WebContext, data: dict[str, Any]) -> str:
    if context.config_file.as_json:
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return HEADER + ("{}\n" if not data else dump_yaml(data))


def entries(data: dict[str, Any], section: Section) -> dict[str, Any]:
    value = data.get(section)
    return dict(value) if isinstance(value, dict) else {}


def replace_entry(
    data: dict[str, Any], section: Section, old_name: str | None, new_name: str, entry: Any
) -> dict[str, Any]:
    """The document with ``old_name`` replaced by ``new_name`` in place (a new entry goes
    last), other entries and their order untouched."""
    current = entries(data, section)
    result: dict[str, Any] = {}
    placed = False
    for name, value in current.items():
        if name == old_name:
            result[new_name] = entry
            placed = True
        elif name != new_name:
            result[name] = value
    if not placed:
        result[new_name] = entry
    return {**data, section: result}


def remove_entry(data: dict[str, Any], section: Section, name: str) -> dict[str, Any]:
    current = entries(data, section)
    current.pop(name, None)
    return {**data, section: current}


@dataclass
class Check:
    """A candidate configuration: the text, and the configuration or every problem."""

    text: str
    config: MercuryConfig | None
    issues: list[ConfigIssue]


def check(context: WebContext, data: dict[str, Any]) -> Check:
    text = to_text(context, data)
    config, issues = context.config_file.check(text)
    return Check(text, config, issues)


def apply(
    context: WebContext,
    data: dict[str, Any] | str,
    *,
    author: str,
    comment: str,
    restored_from: int | None = None,
) -> Outcome:
    """Apply a changed document (or a whole text) as a new version; raises
    :class:`ConfigRejected` with every problem when it does not validate."""
    text = data if isinstance(data, str) else to_text(context, data)
    return apply_text(
        context,
        text,
        author=author,
        comment=comment,
        source=SOURCE,
        restored_from=restored_from,
    )


def issues_for(
    issues: list[ConfigIssue], section: Section, name: str
) -> tuple[dict[str, str], list[ConfigIssue]]:
    """Problems of one entry by field (``rules.ct.target`` -> ``target``), and the rest."""
    prefix = f"{section}.{name}."
    fields: dict[str, str] = {}
    others: list[ConfigIssue] = []
    for issue in issues:
        if issue.location.startswith(prefix):
            key = issue.location[len(prefix) :].split(".")[0]
            fields.setdefault(key, issue.message)
        else:
            others.append(issue)
    return fields, others


def delete_entry(context: WebContext, section: Section, name: str, *, author: str) -> str:
    """Remove one rule, target or module as a new version; the message says what happened.
    A missing entry is a 404; a configuration the removal would break (a rule still sending
    to the target, say) is a 409 naming every problem, and nothing changes."""
    noun = section.rstrip("s")
    data = document(context)
    if name not in entries(data, section):
        raise Problem(404, f"no {noun} named {name} in the configuration")
    try:
        outcome = apply(
            context,
            remove_entry(data, section, name),
            author=author,
            comment=f"{noun} {name} deleted in the web UI",
        )
    except ConfigRejected as exc:
        problems = "; ".join(str(issue) for issue in exc.issues)
        raise Problem(409, f"{noun} {name} cannot be deleted: {problems}") from None
    return outcome_message(outcome, f"{noun.capitalize()} {name} deleted")


def outcome_message(outcome: Outcome, what: str) -> str:
    if not outcome.changed:
        return f"{what}: nothing changed."
    text = f"{what}: saved as configuration version {outcome.version}."
    if outcome.reloads:
        text += " Routing, processing and dispatch use it within seconds."
    if outcome.restart_required:
        text += " " + " ".join(
            note.message[:1].upper() + note.message[1:] + "." for note in outcome.restart_required
        )
    return text


__all__ = [
    "Check",
    "ConfigRejected",
    "apply",
    "check",
    "document",
    "entries",
    "issues_for",
    "outcome_message",
    "remove_entry",
    "replace_entry",
    "to_text",
]

Editor = Callable[[dict[str, Any]], dict[str, Any]]
