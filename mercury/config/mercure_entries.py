"""Translating mercure's targets, rules and modules into mercury's shapes.

Each mapper copies the fields mercury knows, parses mercure's JSON-in-a-string fields,
and records every field it cannot carry over (with why) instead of failing: an import
should convert what it can and tell the administrator exactly what needs a hand.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mercury.config.errors import format_location
from mercury.config.issues import Loc
from mercury.config.modules import DOCKER_ARGUMENT_ALLOW_LIST, Module
from mercury.config.rules import Rule
from mercury.config.targets import TARGET_MODELS, UNSUPPORTED_TARGET_TYPES

_SECRET_KEY = re.compile(r"pass|token|secret|api_key|apikey", re.IGNORECASE)
MASKED = "**********"


@dataclass(frozen=True)
class UnmappedField:
    """A field of mercure.json that mercury does not carry over (or not fully), and why.

    Values of password, token and key fields are masked.
    """

    path: str
    value: Any
    reason: str


@dataclass
class Findings:
    """What an import found: fields left behind, and input that cannot be converted."""

    unmapped: list[UnmappedField] = field(default_factory=list)
    problems: list[tuple[Loc, str]] = field(default_factory=list)

    def drop(self, loc: Loc, value: Any, reason: str) -> None:
        """Record a field that is not carried over."""
        secret = any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc)
        shown = MASKED if secret and value not in ("", None) else value
        self.unmapped.append(UnmappedField(format_location(loc), shown, reason))

    def problem(self, loc: Loc, message: str) -> None:
        """Record input that cannot be converted at all."""
        self.problems.append((loc, message))


def _is_literal(model: type[Any], key: str) -> bool:
    return typing.get_origin(model.model_fields[key].annotation) is typing.Literal


def _entry(kind: str, name: str, raw: Any, findings: Findings) -> Mapping[str, Any] | None:
    if isinstance(raw, Mapping):
        return raw
    findings.problem((kind, name), f"must be an object of {kind[:-1]} settings")
    return None


def map_target(name: str, raw: Any, findings: Findings) -> dict[str, Any] | None:
    """mercury's form of one mercure target (a missing target_type means dicom)."""
    entry = _entry("targets", name, raw, findings)
    if entry is None:
        return None
    target_type = entry.get("target_type") or "dicom"
    result: dict[str, Any] = {"target_type": target_type}
    model = TARGET_MODELS.get(target_type) if isinstance(target_type, str) else None
    if model is None:
        return result  # validation reports the unknown type with the expected ones
    for key, value in entry.items():
        if key == "target_type" or value is None:
            continue
        if key in model.model_fields:
            result[key] = value
        else:
            reason = f"not a setting of {target_type} targets in mercury; dropped"
            findings.drop(("targets", name, key), value, reason)
    if target_type in UNSUPPORTED_TARGET_TYPES:
        findings.drop(
            ("targets", name),
            target_type,
            "kept, but not yet supported by mercury's dispatcher: its jobs wait, journaled",
        )
    return result


def map_rule(name: str, raw: Any, findings: Findings) -> dict[str, Any] | None:
    """mercury's form of one mercure rule; empty choice fields take mercure's default."""
    entry = _entry("rules", name, raw, findings)
    if entry is None:
        return None
    result: dict[str, Any] = {}
    for key, value in entry.items():
        if value is None:
            continue
        if key not in Rule.model_fields:
            findings.drop(("rules", name, key), value, "not a rule setting mercury knows; dropped")
        elif not (value == "" and _is_literal(Rule, key)):
            result[key] = value
    return result


def _json_object(loc: Loc, value: Any, findings: Findings) -> dict[str, Any] | None:
    """Parse one of mercure's JSON-text fields; report (not raise) when it is malformed."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        findings.drop(loc, value, "must be JSON text; dropped, add it again by hand")
        return None
    if not value.strip():
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        reason = (
            f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            "dropped, add it again by hand"
        )
        findings.drop(loc, value, reason)
        return None
    if not isinstance(parsed, dict):
        findings.drop(loc, value, "must be a JSON object; dropped, add it again by hand")
        return None
    return parsed


def _environment(loc: Loc, parsed: dict[str, Any], findings: Findings) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in parsed.items():
        if isinstance(value, str):
            result[key] = value
        elif isinstance(value, bool | int | float):
            result[key] = str(value)  # what docker makes of it when mercure passes it through
        else:
            findings.drop((*loc, key), value, "environment values must be text; dropped")
    return result


def _docker_arguments(loc: Loc, parsed: dict[str, Any], findings: Findings) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in parsed.items():
        if key in DOCKER_ARGUMENT_ALLOW_LIST:
            result[key] = value
        else:
            reason = (
                "not in mercure's allow-list of docker arguments (resource and runtime "
                "settings only); dropped"
            )
            findings.drop((*loc, key), value, reason)
    return result


def map_module(name: str, raw: Any, findings: Findings) -> dict[str, Any] | None:
    """mercury's form of one mercure module, run with docker as mercure runs it."""
    entry = _entry("modules", name, raw, findings)
    if entry is None:
        return None
    result: dict[str, Any] = {"runner": "docker"}
    for key, value in entry.items():
        loc: Loc = ("modules", name, key)
        if value is None:
            continue
        if key in ("constraints", "resources"):
            reason = f"Nomad job {key}; mercury does not run modules on Nomad; dropped"
            findings.drop(loc, value, reason)
        elif key in ("additional_volumes", "environment", "docker_arguments"):
            parsed = _json_object(loc, value, findings)
            if parsed is None:
                continue
            if key == "environment":
                parsed = _environment(loc, parsed, findings)
            elif key == "docker_arguments":
                parsed = _docker_arguments(loc, parsed, findings)
            result[key] = parsed
        elif key in Module.model_fields:
            result[key] = value
        else:
            findings.drop(loc, value, "not a module setting mercury knows; dropped")
    return result
