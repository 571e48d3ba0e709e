"""When is a series, or a study, complete? Pure functions of the index state and a clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mercury.config.rules import CompletionCondition
from mercury.rules import SeriesExpression


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything mercury stores is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class SeriesState:
    last_received_at: datetime
    instance_count: int
    expected_count: int | None
    association_released: bool


def series_completion(
    state: SeriesState,
    conditions: Iterable[CompletionCondition],
    *,
    now: datetime,
    quiet: timedelta,
) -> str | None:
    """The condition that completes the series now, or None while it is still receiving."""
    wanted = set(conditions)
    if "association_end" in wanted and state.association_released:
        return "association_end"
    if (
        "expected_count" in wanted
        and state.expected_count
        and state.instance_count >= state.expected_count
    ):
        return "expected_count"
    if "quiet" in wanted and now - aware(state.last_received_at) >= quiet:
        return "quiet"
    return None


@dataclass(frozen=True)
class StudyState:
    first_received_at: datetime
    last_received_at: datetime
    series_descriptions: tuple[str, ...]
    series_pending: int  # series of the study not complete yet


def study_completion(
    state: StudyState,
    *,
    condition: str,
    expression: SeriesExpression | None,
    now: datetime,
    quiet: timedelta,
    force_after: timedelta,
) -> str | None:
    """ "quiet" / "received_series" when complete, "force" after the force timeout, else None."""
    if condition == "received_series" and expression is not None:
        if expression.evaluate(state.series_descriptions) and state.series_pending == 0:
            return "received_series"
    elif state.series_pending == 0 and now - aware(state.last_received_at) >= quiet:
        return "quiet"
    if now - aware(state.first_received_at) >= force_after:
        return "force"
    return None
