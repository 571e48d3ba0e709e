"""Which rules fire for a series: mercure's semantics, plus our per-rule stop_after.

In order, disabled rules are skipped and every true rule fires. A true discard rule stops
evaluation and discards the series, dropping earlier matches; a true stop_after rule stops
evaluation after itself, keeping earlier matches. Fallback rules are evaluated, in order,
only when no other rule fired. When nothing fires the series is discarded.

A rule is judged on the series' first image, or (``every_instance``) on each distinct tag
set seen in the series: it is true when any of them makes it true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mercury.rules.expression import CompiledRule, RuleOutcome


@dataclass(frozen=True)
class RuleSpec:
    """What selection needs to know about a rule."""

    name: str
    expression: CompiledRule
    action: str
    disabled: bool = False
    fallback: bool = False
    stop_after: bool = False
    every_instance: bool = False


@dataclass(frozen=True)
class Selection:
    """The result: rules fired (in order), whether the series is discarded, and why."""

    triggered: tuple[str, ...]
    discarded: bool
    discarded_by: str | None
    outcomes: dict[str, RuleOutcome] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # every_instance rules that were true: the index (in the variants given) of the first
    # tag set that made them true.
    matched_variants: dict[str, int] = field(default_factory=dict)


def select_rules(
    rules: Sequence[RuleSpec],
    tags: Mapping[str, str],
    variants: Sequence[Mapping[str, str]] = (),
) -> Selection:
    """Evaluate the rules in order and decide which fire. ``tags`` are the first image's;
    ``variants`` every distinct tag set of the series, for every_instance rules (without
    them, those rules are judged on ``tags`` too)."""
    outcomes: dict[str, RuleOutcome] = {}
    errors: dict[str, str] = {}
    matched: dict[str, int] = {}

    def evaluate(rule: RuleSpec) -> RuleOutcome:
        if not rule.every_instance or not variants:
            return rule.expression.evaluate(tags)
        first: RuleOutcome | None = None
        failed: RuleOutcome | None = None
        for index, variant in enumerate(variants):
            outcome = rule.expression.evaluate(variant)
            if outcome.value:
                matched[rule.name] = index
                return outcome
            first = first or outcome
            failed = failed or (outcome if outcome.error is not None else None)
        assert first is not None
        return failed or first

    def run(candidates: list[RuleSpec]) -> tuple[list[str], str | None]:
        fired: list[str] = []
        for rule in candidates:
            outcome = evaluate(rule)
            outcomes[rule.name] = outcome
            if outcome.error is not None:
                errors[rule.name] = outcome.error
            if not outcome.value:
                continue
            if rule.action == "discard":
                return [rule.name], rule.name
            fired.append(rule.name)
            if rule.stop_after:
                break
        return fired, None

    enabled = [rule for rule in rules if not rule.disabled]
    fired, discarded_by = run([rule for rule in enabled if not rule.fallback])
    if not fired:
        fired, discarded_by = run([rule for rule in enabled if rule.fallback])
    return Selection(
        triggered=tuple(fired),
        discarded=discarded_by is not None or not fired,
        discarded_by=discarded_by,
        outcomes=outcomes,
        errors=errors,
        matched_variants={name: index for name, index in matched.items() if name in fired},
    )
