"""From the rules that fired to the jobs they create (mercure's action semantics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mercury.config.rules import Rule
from mercury.notify.triggers import on_completion
from mercury.store.jobs import JobSpec

if TYPE_CHECKING:
    from mercury.route.ruleset import RuleSet
    from mercury.rules import Selection

_PRIORITY_RANK = {"urgent": 0, "normal": 1, "offpeak": 2}


def _notifies_at_routing(rule: Rule) -> bool:
    if rule.action == "notification":
        return rule.notification_trigger_completion
    return rule.action == "route" and on_completion(rule)


def plan_jobs(
    rules: Sequence[tuple[str, Rule]],
    *,
    scope: Literal["series", "study"],
    study_uid: str,
    series_uid: str | None,
    instances: Sequence[str],
) -> list[JobSpec]:
    """route: one dispatch job per distinct target, even when several rules name it (the
    most urgent rule's priority wins); process and both: one processing job per rule (both
    carries its targets for the results); notification: one notify job per rule (unless its
    completion trigger is off). A route rule that notifies on completion gets its notify
    job here too; processing rules get theirs when the processing succeeds."""
    jobs: list[JobSpec] = []
    targets: dict[str, tuple[str, str]] = {}  # target -> (first rule naming it, priority)
    for name, rule in rules:
        if rule.action == "route":
            for target in rule.target:
                seen = targets.get(target)
                if seen is None:
                    targets[target] = (name, rule.priority)
                elif _PRIORITY_RANK[rule.priority] < _PRIORITY_RANK[seen[1]]:
                    targets[target] = (seen[0], rule.priority)
        elif rule.action in ("process", "both"):
            jobs.append(
                JobSpec(
                    kind="process",
                    rule=name,
                    scope=scope,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    instances=instances,
                    priority=rule.priority,
                    modules=rule.processing_module,
                    targets=rule.target if rule.action == "both" else (),
                    settings={
                        "steps": [
                            rule.settings_for_step(i) for i in range(len(rule.processing_module))
                        ],
                        "retain_input_images": rule.processing_retain_images,
                    },
                )
            )
        if _notifies_at_routing(rule):
            jobs.append(
                JobSpec(
                    kind="notify",
                    rule=name,
                    scope=scope,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    instances=(),
                    priority=rule.priority,
                    details={"event": "completed"},
                )
            )
    dispatch = [
        JobSpec(
            kind="dispatch",
            rule=rule_name,
            scope=scope,
            study_uid=study_uid,
            series_uid=series_uid,
            instances=instances,
            priority=priority,  # type: ignore[arg-type]
            target=target,
        )
        for target, (rule_name, priority) in targets.items()
    ]
    return dispatch + jobs


@dataclass(frozen=True)
class Preview:
    """What a series with these tags would start: its series jobs, and the study rules that
    would wait for its study (for the rule testers of the CLI and the web interface)."""

    jobs: list[JobSpec]
    study_rules: list[str]


def preview(ruleset: RuleSet, selection: Selection, tags: Mapping[str, str]) -> Preview:
    fired = [
        (name, ruleset.rule(name))
        for name in selection.triggered
        if ruleset.rule(name).action != "discard"
    ]
    jobs = (
        []
        if selection.discarded
        else plan_jobs(
            [(n, r) for n, r in fired if r.action_trigger == "series"],
            scope="series",
            study_uid=tags.get("StudyInstanceUID", ""),
            series_uid=tags.get("SeriesInstanceUID"),
            instances=(),
        )
    )
    return Preview(jobs, [n for n, r in fired if r.action_trigger == "study"])
