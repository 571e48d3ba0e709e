"""`evaluate_on: every_instance`: a rule fires when any distinct tag set of the series
matches, the decision says which one; first_instance rules still see the first image
(SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mercury.route.router import Router
from mercury.store.models import DecisionRow
from tests.route.support import Clock, Index, events, job_uids, jobs, ruleset

CONTRAST = "'CONTRAST' in tags.ImageComments"


def decision(engine: Engine, series: str = "1.2.3") -> DecisionRow:
    with Session(engine) as session:
        return session.scalars(select(DecisionRow).where(DecisionRow.series_uid == series)).one()


def send_series(index: Index, clock: Clock, series: str = "1.2.3") -> list[str]:
    """Five images; only the third carries ImageComments CONTRAST, the fourth another
    protocol; InstanceNumber differs on each (a per-image tag: no new variant)."""
    uids: list[str] = []
    for n in range(1, 6):
        extra: dict[str, str] = {"InstanceNumber": str(n)}
        if n == 3:
            extra["ImageComments"] = "CONTRAST"
        if n == 4:
            extra["ProtocolName"] = "Other"
        uids += index.add(series, 1, **extra)
        clock.advance(1)
    return uids


def test_fires_when_any_image_matches(engine: Engine, index: Index, clock: Clock) -> None:
    rules: dict[str, Any] = {
        "first": {"rule": CONTRAST, "target": "archive"},
        "every": {"rule": CONTRAST, "target": "pacs", "evaluate_on": "every_instance"},
        "ct": {"rule": "tags.Modality == 'CT'", "action": "notification"},
    }
    router = Router(engine, ruleset(rules), clock=clock)
    uids = send_series(index, clock)
    clock.advance(60)
    assert router.scan().series_routed == ["1.2.3"]
    [dispatch] = [j for j in jobs(engine) if j.kind == "dispatch"]
    assert (dispatch.target, dispatch.rule) == ("pacs", "every")
    assert job_uids(engine, dispatch.id) == set(uids)  # the whole series, not one image
    made = decision(engine)
    assert made.triggered == ["every", "ct"]
    assert made.details["variants"] == 3
    matched = made.details["rules"]["every"]["variant"]
    assert matched["sop_instance_uid"] == uids[2]
    assert (matched["index"], matched["of"]) == (2, 3)
    assert matched["values"] == {"ImageComments": "CONTRAST"}
    assert made.details["rules"]["first"]["fired"] is False
    assert made.details["rules"]["first"]["missing"] == ["ImageComments"]
    assert "variant" not in made.details["rules"]["ct"]


def test_an_every_instance_discard_rule(engine: Engine, index: Index, clock: Clock) -> None:
    rules: dict[str, Any] = {
        "ct": {"rule": "tags.Modality == 'CT'", "target": "pacs"},
        "drop": {"rule": CONTRAST, "action": "discard", "evaluate_on": "every_instance"},
    }
    router = Router(engine, ruleset(rules), clock=clock)
    send_series(index, clock)
    index.add("1.2.4", 2, study="1.2.8")  # no image of this one matches
    clock.advance(60)
    router.scan()
    assert {j.series_uid for j in jobs(engine)} == {"1.2.4"}
    [discarded] = events(engine, "series.discarded")
    assert discarded.series_uid == "1.2.3"
    assert decision(engine).details["rules"]["drop"]["variant"]["index"] == 2


def test_no_match_and_fallback(engine: Engine, index: Index, clock: Clock) -> None:
    rules: dict[str, Any] = {
        "mr": {"rule": "tags.Modality == 'MR'", "target": "pacs", "evaluate_on": "every_instance"},
        "rest": {"rule": "True", "target": "archive", "fallback": True},
    }
    router = Router(engine, ruleset(rules), clock=clock)
    send_series(index, clock)
    clock.advance(60)
    router.scan()
    assert [(j.rule, j.target) for j in jobs(engine)] == [("rest", "archive")]
    assert decision(engine).details["rules"]["mr"]["fired"] is False


def test_late_images_bring_new_variants(engine: Engine, index: Index, clock: Clock) -> None:
    rules: dict[str, Any] = {
        "every": {"rule": CONTRAST, "target": "pacs", "evaluate_on": "every_instance"},
        "rest": {"rule": "True", "target": "archive", "fallback": True},
    }
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 2)
    clock.advance(60)
    router.scan()
    late = index.add("1.2.3", 1, ImageComments="CONTRAST")
    clock.advance(60)
    router.scan()
    assert [(j.rule, j.target) for j in jobs(engine)] == [("rest", "archive"), ("every", "pacs")]
    assert job_uids(engine, jobs(engine)[1].id) == set(late)  # late_arrivals: new_job


def test_rules_without_every_instance_do_not_read_variants(
    engine: Engine, index: Index, clock: Clock
) -> None:
    rules = ruleset({"first": {"rule": CONTRAST, "target": "pacs"}})
    assert not rules.uses_variants
    router = Router(engine, rules, clock=clock)
    send_series(index, clock)
    clock.advance(60)
    router.scan()
    assert jobs(engine) == []
    assert "variants" not in decision(engine).details
