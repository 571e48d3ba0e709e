"""The rule tester and the replay of the rules editor.

The tester evaluates a configuration's rules (the one being edited, not yet saved) on tags
pasted by the user or read from a dropped DICOM file, exactly as the router would (the
same :class:`~mercury.route.ruleset.RuleSet` and job planner as `mercury rules test`).
The replay is :func:`mercury.route.replay.replay` over the last days of the index.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from mercury.config.models import MercuryConfig
from mercury.route.planner import preview
from mercury.route.replay import ReplayError, ReplayReport, replay
from mercury.route.ruleset import RuleSet

MAX_TAGS = 2000
_DCMDUMP = re.compile(
    r"^\s*\(([0-9a-fA-F]{4}),([0-9a-fA-F]{4})\)\s+[A-Z]{2}\s+"
    r"(?:\[(.*)\]|(\(no value[^)]*\))|(\S.*?))"
    r"\s+#.*?\s([A-Za-z][A-Za-z0-9]*)\s*$"
)
_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*[:=]\s*(.*?)\s*$")


class TagsError(ValueError):
    """The pasted text or dropped file holds no usable tags; the message says why."""


def parse_tags(text: str) -> dict[str, str]:
    """Tags from a JSON object, ``Keyword: value`` (or ``=``) lines, or dcmdump output."""
    stripped = text.strip()
    if not stripped:
        raise TagsError("paste some tags (or drop a DICOM file) to test the rules on")
    if stripped.startswith("{"):
        try:
            loaded = json.loads(stripped)
        except ValueError as exc:
            raise TagsError(f"not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise TagsError("the JSON must be an object of tag names to values")
        return {str(k): "" if v is None else str(v) for k, v in list(loaded.items())[:MAX_TAGS]}
    tags: dict[str, str] = {}
    for line in stripped.splitlines():
        dump = _DCMDUMP.match(line)
        if dump:
            value = dump.group(3) if dump.group(3) is not None else (dump.group(5) or "")
            tags[dump.group(6)] = value.strip()
            continue
        plain = _LINE.match(line)
        if plain:
            tags[plain.group(1)] = plain.group(2)
        if len(tags) >= MAX_TAGS:
            break
    if not tags:
        raise TagsError(
            "no tags found: paste a JSON object, lines such as `Modality: CT`, or the output "
            "of dcmdump"
        )
    return tags


def tags_from_dicom(data: bytes, additional_tags: dict[str, str]) -> dict[str, str]:
    """The tags mercury indexes for a DICOM Part 10 file (as the receiver reads them)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from mercury.dicom.file_meta import split_file
    from mercury.dicom.tags import HeaderError, read_header

    try:
        meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
        header = read_header(split_file(data)[1], str(meta.TransferSyntaxUID), additional_tags)
    except (HeaderError, InvalidDicomError, ValueError, AttributeError, OSError) as exc:
        raise TagsError(f"not a readable DICOM file: {exc}") from None
    return dict(header.tags)


@dataclass
class RuleResult:
    name: str
    fired: bool
    tags_read: list[tuple[str, str | None]]
    missing: list[str]
    error: str | None
    disabled: bool
    action: str


@dataclass
class TestResult:
    tags: dict[str, str]
    rules: list[RuleResult]
    triggered: list[str]
    discarded: bool
    discarded_by: str | None
    jobs: list[str] = field(default_factory=list)
    study_rules: list[str] = field(default_factory=list)


def evaluate(config: MercuryConfig, tags: dict[str, str]) -> TestResult:
    ruleset = RuleSet.from_config(config)
    selection = ruleset.select(tags)
    planned = preview(ruleset, selection, tags)
    jobs = []
    for spec in planned.jobs:
        if spec.kind == "dispatch":
            jobs.append(f"send to {spec.target} (rule {spec.rule})")
        elif spec.kind == "process":
            then = f", then send to {', '.join(spec.targets)}" if spec.targets else ""
            jobs.append(f"process with {' > '.join(spec.modules)}{then} (rule {spec.rule})")
        else:
            jobs.append(f"{spec.kind} (rule {spec.rule})")
    results = []
    for rule_spec in ruleset.specs:
        outcome = selection.outcomes.get(rule_spec.name)
        rule = ruleset.rule(rule_spec.name)
        results.append(
            RuleResult(
                name=rule_spec.name,
                fired=rule_spec.name in selection.triggered,
                tags_read=[(t, tags.get(t)) for t in (outcome.tags_read if outcome else ())],
                missing=list(outcome.missing) if outcome else [],
                error=outcome.error if outcome else None,
                disabled=rule.disabled,
                action=rule.action,
            )
        )
    return TestResult(
        tags=tags,
        rules=results,
        triggered=list(selection.triggered),
        discarded=selection.discarded,
        discarded_by=selection.discarded_by,
        jobs=jobs,
        study_rules=planned.study_rules,
    )


REPLAY_DAYS = (1, 3, 7, 30)


def run_replay(engine: Engine, config: MercuryConfig, *, now: datetime, days: int) -> ReplayReport:
    days = days if days in REPLAY_DAYS else 7
    try:
        return replay(engine, RuleSet.from_config(config), since=now - timedelta(days=days))
    except ReplayError:
        raise
