"""Which rules fire for a series: mercure's semantics, plus our per-rule stop_after.

In order, disabled rules are skipped and every true rule fires. A true discard rule stops
evaluation and discards the series, dropping earlier matches; a true stop_after rule stops
evaluation after itself, keeping earlier matches. Fallback rules are evaluated, in order,
only when no other rule fired. When nothing fires the series is discarded.
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


@dataclass(frozen=True)
class Selection:
    """The result: rules fired (in order), whether the series is discarded, and why."""

    triggered: tuple[str, ...]
    discarded: bool
    discarded_by: str | None
    outcomes: dict[str, RuleOutcome] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def select_rules(rules: Sequence[RuleSpec], tags: Mapping[str, str]) -> Selection:
    """Evaluate the rules in order and decide which fire."""
    outcomes: dict[str, RuleOutcome] = {}
    errors: dict[str, str] = {}

    def run(candidates: list[RuleSpec]) -> tuple[list[str], str | None]:
        fired: list[str] = []
        for rule in candidates:
            outcome = rule.expression.evaluate(tags)
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
    )
