"""The configuration's rules, compiled once per configuration load, in evaluation order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from mercury.config.models import MercuryConfig
from mercury.config.rules import CompletionCondition, Rule
from mercury.rules import (
    RuleSpec,
    Selection,
    SeriesExpression,
    compile_rule,
    compile_series_expression,
    select_rules,
)


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules plus the configuration they came from."""

    config: MercuryConfig
    specs: tuple[RuleSpec, ...]
    series_expressions: Mapping[str, SeriesExpression]

    @classmethod
    def from_config(cls, config: MercuryConfig) -> RuleSet:
        named = list(config.rules.items())
        ordered = sorted(
            enumerate(named),
            key=lambda item: item[1][1].order if item[1][1].order is not None else item[0],
        )
        specs = tuple(
            RuleSpec(
                name=name,
                expression=compile_rule(rule.rule),
                action=rule.action,
                disabled=rule.disabled,
                fallback=rule.fallback,
                stop_after=rule.stop_after,
                every_instance=rule.evaluate_on == "every_instance",
            )
            for _, (name, rule) in ordered
        )
        expressions = {
            name: compile_series_expression(rule.study_trigger_series)
            for name, rule in named
            if rule.action_trigger == "study" and rule.study_trigger_condition == "received_series"
        }
        return cls(config, specs, expressions)

    def rule(self, name: str) -> Rule:
        return self.config.rules[name]

    @cached_property
    def uses_variants(self) -> bool:
        """Whether an enabled rule is evaluated on every distinct tag set of a series."""
        return any(spec.every_instance and not spec.disabled for spec in self.specs)

    def select(
        self, tags: Mapping[str, str], variants: Sequence[Mapping[str, str]] = ()
    ) -> Selection:
        return select_rules(self.specs, tags, variants)

    def completion_conditions(self, selection: Selection) -> frozenset[CompletionCondition]:
        """Any condition of any selected series rule completes the series; with no rule
        selected (the series would be discarded) the global default applies."""
        default = self.config.timings.series_complete_on
        conditions: set[CompletionCondition] = set()
        for name in selection.triggered:
            conditions.update(self.rule(name).series_complete_on or default)
        return frozenset(conditions or default)
