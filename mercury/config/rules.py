"""Routing rules, with mercure's field names and meanings.

The rule expression is stored as text here; the routing stage parses and evaluates it in
its sandbox. Their order in the file is their evaluation order.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mercury.config.base import Section
from mercury.config.issues import Loc, raise_if_any
from mercury.rules import RuleSyntaxError, compile_rule, compile_series_expression


def _name_list(value: Any) -> Any:
    """Accept mercure's spellings: one name, the empty string for none, or a list."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return value


CompletionCondition = Literal["quiet", "association_end", "expected_count"]


class Rule(Section):
    """A rule: which series it selects, and what happens to them."""

    rule: str = Field(
        default="False",
        description="Selection expression over the series' tags, for example "
        "`tags.Modality == 'CT'`; its truthiness decides.",
    )
    disabled: bool = Field(default=False, description="Skip this rule entirely.")
    fallback: bool = Field(
        default=False, description="Evaluate this rule only when no other rule fired."
    )
    stop_after: bool = Field(
        default=False,
        description="When this rule fires, do not evaluate the rules after it (mercury only).",
    )
    evaluate_on: Literal["first_instance", "every_instance"] = Field(
        default="first_instance",
        description="first_instance: judge the series by its first image, as mercure does; "
        "every_instance: evaluate again for every image whose tag values differ, and fire if "
        "any of them matches (mercury only).",
    )
    order: int | None = Field(
        default=None,
        description="Explicit evaluation position (lower first); rules without one keep their "
        "place in the file (mercury only).",
    )
    series_complete_on: list[CompletionCondition] | None = Field(
        default=None,
        description="When a series this rule selects is complete: any of quiet (the quiet "
        "period), association_end (the sender released the association that delivered it), "
        "expected_count (NumberOfSeriesRelatedInstances or ImagesInAcquisition reached). "
        "Empty: timings.series_complete_on (mercury only).",
    )
    late_arrivals: Literal["new_job", "rerun", "ignore"] = Field(
        default="new_job",
        description="Images of a series that arrive after it was routed: new_job (a new job "
        "with only the late images), rerun (the whole series again) or ignore (journaled). "
        "Never merged into a job already running (mercury only).",
    )
    action: Literal["route", "both", "process", "discard", "notification"] = Field(
        default="route",
        description="route: send to targets; process: run modules; both: run modules, then send "
        "the results; notification: notify only; discard: drop the series and stop.",
    )
    action_trigger: Literal["series", "study"] = Field(
        default="series", description="Act on each complete series, or once the study is complete."
    )
    target: list[str] = Field(
        default_factory=list,
        description="Target name, or list of target names (a single name is stored as a list).",
    )
    processing_module: list[str] = Field(
        default_factory=list,
        description="Module name, or list of module names run as a chain, in order.",
    )
    processing_settings: dict[str, Any] | list[dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings overriding the modules' own: one mapping for every step, or a list "
        "with one mapping per step.",
    )
    processing_retain_images: bool = Field(
        default=False, description="Add the original images to the output of the last module."
    )
    priority: Literal["normal", "urgent", "offpeak"] = Field(
        default="normal",
        description="urgent and normal jobs interleave 2:1; offpeak jobs wait for the off-peak "
        "window (`timings.offpeak_start`..`offpeak_end`).",
    )
    study_trigger_condition: Literal["timeout", "received_series"] = Field(
        default="timeout",
        description="For study rules: the study is complete after `timings.study_complete_trigger` "
        "seconds of quiet (timeout), or once the series in `study_trigger_series` arrived.",
    )
    study_trigger_series: str = Field(
        default="",
        description="Required series: quoted SeriesDescription substrings combined with and, or "
        "and parentheses, for example `'Axial T2' and ('Sag T1 GRE' or 'Sag T1 TSE')`.",
    )
    study_force_completion_action: Literal["discard", "proceed", "ignore"] = Field(
        default="discard",
        description="What happens when `timings.study_forcecomplete_trigger` passes before the "
        "study is complete: discard it, proceed with what arrived, or ignore (keep waiting).",
    )
    notification_webhook: str = Field(default="", description="URL to POST notifications to.")
    notification_payload: str = Field(
        default="",
        description="Webhook JSON body without the outer braces; Jinja template with @rule@, "
        "@task_id@ and @event@ replaced first.",
    )
    notification_payload_body: str = Field(
        default="", description="Jinja template rendered into the `body` variable of the payload."
    )
    notification_email: str = Field(
        default="", description="Comma-separated e-mail addresses to notify."
    )
    notification_email_body: str = Field(default="", description="E-mail body (Jinja template).")
    notification_email_type: Literal["plain", "html"] = Field(
        default="plain", description="Format of the e-mail body."
    )
    notification_trigger_reception: bool = Field(
        default=True, description="Notify when the rule fires on received images."
    )
    notification_trigger_completion: bool = Field(
        default=True, description="Notify when the job completes."
    )
    notification_trigger_completion_on_request: bool = Field(
        default=False, description="Notify on completion only when the module asks for it."
    )
    notification_trigger_error: bool = Field(default=True, description="Notify when the job fails.")
    dynamic_routing: bool = Field(
        default=False,
        description="Let the last module choose the targets through `__mercure_routing` in its "
        "result.json.",
    )
    dynamic_routing_allowed_targets: list[str] = Field(
        default_factory=list,
        description="Targets a module may choose; empty allows every defined target.",
    )
    conditional_alternate_target: str | None = Field(
        default=None,
        description="Target used when the module answers `use_alternate_target`.",
    )
    contact: str = Field(default="", description="Who is responsible for this rule.")
    comment: str = Field(default="", description="Free text for administrators.")
    tags: str = Field(default="", description="Labels for grouping rules in the user interface.")

    @field_validator(
        "target", "processing_module", "dynamic_routing_allowed_targets", mode="before"
    )
    @classmethod
    def _normalize_names(cls, value: Any) -> Any:
        return _name_list(value)

    @field_validator("conditional_alternate_target", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("processing_settings", mode="before")
    @classmethod
    def _check_settings_shape(cls, value: Any) -> Any:
        if value is None:
            return {}
        is_list_of_mappings = isinstance(value, list) and all(isinstance(v, dict) for v in value)
        if not isinstance(value, dict) and not is_list_of_mappings:
            raise ValueError(
                "must be a mapping of settings, or a list of mappings (one per module in the chain)"
            )
        return value

    @model_validator(mode="after")
    def _check_action_needs(self) -> Rule:
        """An enabled rule must be able to do what its action says."""
        issues: list[tuple[Loc, str]] = []
        # A syntax error is caught when the configuration loads, even in a disabled rule.
        try:
            compile_rule(self.rule)
        except RuleSyntaxError as error:
            issues.append((("rule",), f"syntax error in the rule expression at {error}"))
        if self.action_trigger == "study" and self.study_trigger_series.strip():
            try:
                compile_series_expression(self.study_trigger_series)
            except RuleSyntaxError as error:
                issues.append((("study_trigger_series",), f"syntax error at {error}"))
        if self.disabled:
            raise_if_any(issues)
            return self
        sends = self.action == "route" or (self.action == "both" and not self.dynamic_routing)
        if sends and not self.target:
            issues.append((("target",), f"action {self.action!r} needs at least one target"))
        if self.action in ("process", "both") and not self.processing_module:
            issues.append(
                (("processing_module",), f"action {self.action!r} needs a processing module")
            )
        waits_for_series = (
            self.action_trigger == "study" and self.study_trigger_condition == "received_series"
        )
        if waits_for_series and not self.study_trigger_series.strip():
            issues.append(
                (
                    ("study_trigger_series",),
                    "study_trigger_condition 'received_series' needs the required series here",
                )
            )
        raise_if_any(issues)
        return self

    def settings_for_step(self, index: int) -> dict[str, Any]:
        """The rule's settings for the index-th module of its chain (empty when none given)."""
        if isinstance(self.processing_settings, dict):
            return self.processing_settings
        if index < len(self.processing_settings):
            return self.processing_settings[index]
        return {}
