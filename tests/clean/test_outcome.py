"""A series' outcome from its rows, and retention per outcome: pure functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mercury.clean.outcome import (
    JobFact,
    Outcome,
    Retention,
    SeriesFacts,
    classify,
    describe_seconds,
    emergency_rank,
)
from mercury.config.load import config_from_data

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(state: str, seconds: float = 10, kind: str = "dispatch", ident: str = "a" * 32) -> JobFact:
    return JobFact(id=ident, kind=kind, state=state, updated_at=at(seconds))


ROUTED = SeriesFacts(
    series_uid="1.2.3",
    study_uid="1.2",
    state="routed",
    completed_at=T0,
    route_round=1,
    decided_at=T0,
)


@pytest.mark.parametrize(
    ("change", "waits_for"),
    [
        ({"state": "receiving"}, "series is receiving"),
        ({"completed_at": None}, "not routed"),
        ({"route_round": 0}, "not routed"),
        ({"decided_at": None}, "not routed"),
        ({"unrouted": 2}, "2 instance(s) not routed"),
        ({"study_waiting": True}, "study rule"),
        ({"jobs": (job("succeeded"), job("queued", ident="b" * 32))}, "is queued"),
        ({"jobs": (job("running", kind="process"),)}, "process job aaaaaaaa is running"),
        ({"jobs": (job("failed"), job("held"))}, "is held"),  # an unknown state waits
    ],
)
def test_pending(change: dict[str, object], waits_for: str) -> None:
    outcome = classify(replace(ROUTED, **change))  # type: ignore[arg-type]
    assert outcome.kind == "pending"
    assert not outcome.finished
    assert outcome.since is None
    assert waits_for in outcome.why


def test_success_when_every_job_succeeded_since_the_last_finish() -> None:
    facts = replace(ROUTED, jobs=(job("succeeded", 30), job("succeeded", 90, kind="process")))
    assert classify(facts) == Outcome("success", at(90), "2 job(s) succeeded")


def test_a_later_decision_moves_the_outcome_time() -> None:
    facts = replace(ROUTED, decided_at=at(500), jobs=(job("succeeded", 30),))
    assert classify(facts).since == at(500)


@pytest.mark.parametrize("failed", ["failed", "cancelled"])
def test_error_when_a_job_failed_or_was_cancelled(failed: str) -> None:
    facts = replace(ROUTED, jobs=(job("succeeded", 20), job(failed, 40, ident="b" * 32)))
    outcome = classify(facts)
    assert (outcome.kind, outcome.since) == ("error", at(40))
    assert failed in outcome.why


def test_discard() -> None:
    discarded = classify(replace(ROUTED, state="discarded", discarded=True, decided_at=at(5)))
    assert (discarded.kind, discarded.since, discarded.why) == (
        "discard",
        at(5),
        "discarded by routing",
    )
    # Routed, but no rule needed anything from its images (no job at all).
    idle = classify(ROUTED)
    assert (idle.kind, idle.why) == ("discard", "routed with nothing to do")


def test_retention_per_outcome() -> None:
    config = config_from_data(
        {
            "receiver": {"port": 11112},
            "timings": {"retention": 300},
            "retention": {"discard": 60, "error": 900, "index_rows": 5000},
        },
        source="test.yaml",
    )
    retention = Retention.from_config(config)
    assert (retention.success, retention.discard, retention.error) == (300, 60, 900)
    assert retention.shortest == 60
    assert retention.seconds("pending") is None
    success = Outcome("success", T0, "")
    assert not retention.due(success, at(299))
    assert retention.due(success, at(300))
    assert retention.expires_at(Outcome("error", T0, "")) == at(900)
    assert not retention.due(Outcome("pending", None, ""), at(10**9))
    own = config_from_data(
        {"receiver": {"port": 11112}, "retention": {"success": 7}}, source="test.yaml"
    )
    assert Retention.from_config(own).success == 7


def test_emergency_order_success_then_discard_then_error_oldest_first() -> None:
    outcomes = [
        Outcome("error", at(1), ""),
        Outcome("discard", at(5), ""),
        Outcome("success", at(9), ""),
        Outcome("discard", at(2), ""),
        Outcome("success", at(3), ""),
    ]
    ordered = sorted(outcomes, key=emergency_rank)
    assert [(o.kind, o.since) for o in ordered] == [
        ("success", at(3)),
        ("success", at(9)),
        ("discard", at(2)),
        ("discard", at(5)),
        ("error", at(1)),
    ]


def test_describe_seconds() -> None:
    assert describe_seconds(259200) == "3 days"
    assert describe_seconds(86400) == "1 day"
    assert describe_seconds(7200) == "2 hours"
    assert describe_seconds(90) == "90 s"
    assert describe_seconds(1.5) == "1.5 s"
