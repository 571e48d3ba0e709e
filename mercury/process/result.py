"""result.json: what a module asks for besides its output files, and what we grant.

A module may write ``result.json`` into its output folder. Two keys are reserved by
mercure's contract: ``__mercure_notification`` ({text, requested}) and
``__mercure_routing`` ({discard: true} | {target: name or list} |
{use_alternate_target: true}). Anything wrong in the file is reported and the rest of
the run goes on: a module's typo must not lose its images.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mercury.config.models import Rule

RESULT_FILE = "result.json"
NOTIFICATION_KEY = "__mercure_notification"
ROUTING_KEY = "__mercure_routing"
MAX_RESULT_BYTES = 16 * 1024 * 1024
"""A larger result.json is not read (reported): it is metadata, not a place for data."""


@dataclass(frozen=True)
class Notification:
    """The module's notification: a text for the rule's notifications, and whether it
    asks for the completion notification (``notification_trigger_completion_on_request``)."""

    text: str = ""
    requested: bool = False


@dataclass(frozen=True)
class RoutingRequest:
    """What the module asked for in ``__mercure_routing`` (exactly one of the three)."""

    discard: bool = False
    targets: tuple[str, ...] = ()
    use_alternate_target: bool = False


@dataclass(frozen=True)
class ModuleResult:
    """A parsed result.json. ``data`` is the whole object (None when there was no file or
    it did not parse); ``problems`` says what was wrong, one sentence each."""

    data: dict[str, Any] | None = None
    notification: Notification | None = None
    routing: RoutingRequest | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingDecision:
    """Where a job's results go after the module had its say."""

    targets: tuple[str, ...]
    discard: bool = False
    from_module: bool = False
    """The targets (or the discard) are the module's choice, not the rule's defaults."""
    messages: tuple[str, ...] = field(default_factory=tuple)
    """Why a request was refused or ignored, for the job's journal."""


def _parse_notification(value: Any, problems: list[str]) -> Notification | None:
    if not isinstance(value, Mapping):
        problems.append(f"{NOTIFICATION_KEY} must be an object with text and requested; ignored")
        return None
    text = value.get("text", "")
    requested = value.get("requested", False)
    if not isinstance(text, str):
        problems.append(f"{NOTIFICATION_KEY}.text must be text; ignored")
        text = ""
    if not isinstance(requested, bool):
        problems.append(f"{NOTIFICATION_KEY}.requested must be true or false; taken as false")
        requested = False
    return Notification(text=text, requested=requested)


def _parse_targets(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(dict.fromkeys(value))
    return None


def _parse_routing(value: Any, problems: list[str]) -> RoutingRequest | None:
    shape = "{discard: true}, {target: name or list} or {use_alternate_target: true}"
    if not isinstance(value, Mapping):
        problems.append(f"{ROUTING_KEY} must be one of {shape}; ignored")
        return None
    asked = [key for key in ("discard", "target", "use_alternate_target") if key in value]
    if len(asked) != 1:
        problems.append(f"{ROUTING_KEY} must hold exactly one of {shape}; ignored")
        return None
    key = asked[0]
    if key == "target":
        targets = _parse_targets(value["target"])
        if targets is None:
            problems.append(f"{ROUTING_KEY}.target must be a target name or a list of names")
            return None
        return RoutingRequest(targets=targets)
    if value[key] is not True:
        problems.append(f"{ROUTING_KEY}.{key} must be true; ignored")
        return None
    if key == "discard":
        return RoutingRequest(discard=True)
    return RoutingRequest(use_alternate_target=True)


def parse_result(content: bytes | str) -> ModuleResult:
    """Parse result.json's content; never raises (problems are in the result)."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError as error:
            return ModuleResult(problems=(f"{RESULT_FILE} is not UTF-8 text ({error}); ignored",))
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, RecursionError) as error:
        where = (
            f" at line {error.lineno}, column {error.colno}"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        return ModuleResult(problems=(f"{RESULT_FILE} is not valid JSON{where}; ignored",))
    if not isinstance(data, dict):
        return ModuleResult(problems=(f"{RESULT_FILE} must hold a JSON object; ignored",))
    problems: list[str] = []
    notification = None
    routing = None
    if NOTIFICATION_KEY in data:
        notification = _parse_notification(data[NOTIFICATION_KEY], problems)
    if ROUTING_KEY in data:
        routing = _parse_routing(data[ROUTING_KEY], problems)
    return ModuleResult(
        data=data, notification=notification, routing=routing, problems=tuple(problems)
    )


def read_result(out_dir: Path) -> ModuleResult:
    """Read ``result.json`` at the top of an output folder; no file is an empty result."""
    path = out_dir / RESULT_FILE
    try:
        if path.is_symlink() or not path.is_file():
            problem = (f"{RESULT_FILE} is not a regular file; ignored",) if path.exists() else ()
            return ModuleResult(problems=problem)
        if path.stat().st_size > MAX_RESULT_BYTES:
            limit = MAX_RESULT_BYTES // (1024 * 1024)
            return ModuleResult(problems=(f"{RESULT_FILE} is larger than {limit} MiB; ignored",))
        return parse_result(path.read_bytes())
    except OSError as error:
        return ModuleResult(problems=(f"{RESULT_FILE} could not be read ({error}); ignored",))


def apply_routing(
    rule: Rule,
    request: RoutingRequest | None,
    defined_targets: Collection[str] | None = None,
) -> RoutingDecision:
    """The targets a processing job's results go to.

    Without a request, or when the rule does not enable ``dynamic_routing``, the rule's
    own targets (those of a ``both`` rule; none for ``process``). With it: ``discard``
    sends nowhere; ``use_alternate_target`` sends to ``conditional_alternate_target``;
    ``target`` replaces the rule's targets with those requested that are allowed
    (``dynamic_routing_allowed_targets``, empty allows every target in
    ``defined_targets``). A request that leaves nothing allowed falls back to the rule's
    targets. Every refusal is explained in ``messages``.
    """
    defaults = tuple(rule.target) if rule.action == "both" else ()
    if request is None:
        return RoutingDecision(targets=defaults)
    if not rule.dynamic_routing:
        message = (
            f"module asked for routing in {ROUTING_KEY}, but the rule does not enable "
            "dynamic_routing: ignored"
        )
        return RoutingDecision(targets=defaults, messages=(message,))
    if request.discard:
        return RoutingDecision(targets=(), discard=True, from_module=True)
    if request.use_alternate_target:
        alternate = rule.conditional_alternate_target
        if not alternate:
            message = (
                "module asked for the alternate target, but the rule has no "
                "conditional_alternate_target: ignored"
            )
            return RoutingDecision(targets=defaults, messages=(message,))
        return RoutingDecision(targets=(alternate,), from_module=True)
    granted: list[str] = []
    messages: list[str] = []
    allowed = rule.dynamic_routing_allowed_targets
    for target in request.targets:
        if defined_targets is not None and target not in defined_targets:
            messages.append(f"module asked for target {target}, which is not defined: ignored")
        elif allowed and target not in allowed:
            messages.append(
                f"module asked for target {target}, which is not in "
                "dynamic_routing_allowed_targets: ignored"
            )
        else:
            granted.append(target)
    if not granted:
        messages.append("no requested target is allowed: the rule's targets are used")
        return RoutingDecision(targets=defaults, messages=tuple(messages))
    return RoutingDecision(targets=tuple(granted), from_module=True, messages=tuple(messages))
