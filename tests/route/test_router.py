"""The router against a real index (SQLite and PostgreSQL) with an injectable clock:
completion modes, actions, late arrivals, study completion, restarts."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mercury.route.router import Router
from mercury.store.models import DecisionRow
from tests.route.support import Clock, Index, events, job_uids, jobs, ruleset

ROUTE_CT = {"ct": {"rule": "tags.Modality == 'CT'", "action": "route", "target": "pacs"}}


def test_quiet_period(engine: Engine, index: Index, clock: Clock) -> None:
    router = Router(engine, ruleset(ROUTE_CT), clock=clock)
    uids = index.add("1.2.3", 5)
    clock.advance(59)
    assert router.scan().series_routed == []
    index.add("1.2.3", 1)  # a late image restarts the quiet period
    clock.advance(59)
    assert router.scan().series_routed == []
    clock.advance(1)
    report = router.scan()
    assert report.series_routed == ["1.2.3"]
    [job] = jobs(engine)
    assert (job.kind, job.target, job.rule, job.state) == ("dispatch", "pacs", "ct", "queued")
    assert len(job_uids(engine, job.id)) == 6
    assert set(uids) <= job_uids(engine, job.id)
    assert router.scan().series_routed == []  # routed once only
    [completed] = events(engine, "series.completed")
    assert completed.details["reason"] == "quiet"


def test_association_end(engine: Engine, index: Index, clock: Clock) -> None:
    rules = {**ROUTE_CT}
    rules["ct"] = {**ROUTE_CT["ct"], "series_complete_on": ["association_end", "quiet"]}
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 3)
    assert router.scan().series_routed == []
    index.close_association("a1", "aborted")  # an abort is not the end of a series
    assert router.scan().series_routed == []
    index.association("a2")
    index.add("1.2.3", 1, assoc="a2")
    index.close_association("a2", "released")
    assert router.scan().series_routed == ["1.2.3"]
    assert len(job_uids(engine, jobs(engine)[0].id)) == 4


def test_expected_count(engine: Engine, index: Index, clock: Clock) -> None:
    rules = {"ct": {**ROUTE_CT["ct"], "series_complete_on": ["expected_count"]}}
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 2, expected=3)
    clock.advance(3600)
    assert router.scan().series_routed == []  # quiet is not a condition of this rule
    index.add("1.2.3", 1, expected=3)
    assert router.scan().series_routed == ["1.2.3"]


def test_global_default_conditions(engine: Engine, index: Index, clock: Clock) -> None:
    router = Router(engine, ruleset(ROUTE_CT, series_complete_on=["association_end"]), clock=clock)
    index.add("1.2.3", 2)
    clock.advance(3600)
    assert router.scan().series_routed == []
    index.close_association("a1")
    assert router.scan().series_routed == ["1.2.3"]


def test_one_dispatch_job_per_distinct_target(engine: Engine, index: Index, clock: Clock) -> None:
    rules = {
        "a": {"rule": "True", "action": "route", "target": ["pacs", "archive"]},
        "b": {"rule": "True", "action": "route", "target": "pacs", "priority": "urgent"},
        "c": {"rule": "True", "action": "process", "processing_module": "blur"},
        "d": {"rule": "True", "action": "both", "processing_module": "blur", "target": "pacs"},
        "n": {"rule": "True", "action": "notification"},
    }
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 2)
    clock.advance(60)
    router.scan()
    found = {(j.kind, j.target or j.rule, j.priority) for j in jobs(engine)}
    assert found == {
        ("dispatch", "pacs", "urgent"),
        ("dispatch", "archive", "normal"),
        ("process", "c", "normal"),
        ("process", "d", "normal"),
        ("notify", "n", "normal"),
    }
    both = next(j for j in jobs(engine) if j.rule == "d")
    assert both.targets == ["pacs"]
    assert both.modules == ["blur"]
    with Session(engine) as session:
        decision = session.scalars(select(DecisionRow)).one()
    assert decision.triggered == ["a", "b", "c", "d", "n"]
    assert sorted(decision.jobs) == sorted(j.id for j in jobs(engine))


def test_discard_and_no_rule(engine: Engine, index: Index, clock: Clock) -> None:
    rules = {
        "first": {"rule": "True", "action": "route", "target": "pacs"},
        "drop": {"rule": "tags.SeriesDescription == 'Scout'", "action": "discard"},
    }
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 1, SeriesDescription="Scout")
    index.add("1.2.4", 1, Modality="MR", study="1.2.8")
    clock.advance(60)
    router.scan()
    assert {j.series_uid for j in jobs(engine)} == {"1.2.4"}
    discarded = events(engine, "series.discarded")
    assert [e.series_uid for e in discarded] == ["1.2.3"]
    assert "drop" in discarded[0].message

    nothing = Router(engine, ruleset({"x": {"rule": "False", "target": "pacs"}}), clock=clock)
    index.add("1.2.5", 1, study="1.2.7")
    clock.advance(60)
    nothing.scan()
    assert "no rule fired" in events(engine, "series.discarded")[-1].message


@pytest.mark.parametrize("policy", ["new_job", "rerun", "ignore"])
def test_late_arrivals(engine: Engine, index: Index, clock: Clock, policy: str) -> None:
    rules = {"ct": {**ROUTE_CT["ct"], "late_arrivals": policy}}
    router = Router(engine, ruleset(rules), clock=clock)
    first = index.add("1.2.3", 3)
    clock.advance(60)
    router.scan()
    late = index.add("1.2.3", 2)
    clock.advance(30)
    assert router.scan().series_routed == []  # the late batch has its own quiet period
    clock.advance(30)
    assert router.scan().series_routed == ["1.2.3"]
    all_jobs = jobs(engine)
    assert job_uids(engine, all_jobs[0].id) == set(first)  # the first job is never changed
    if policy == "ignore":
        assert len(all_jobs) == 1
        [ignored] = events(engine, "series.late_ignored")
        assert set(ignored.details["instances"]) == set(late)
    else:
        assert len(all_jobs) == 2
        expected = set(late) if policy == "new_job" else set(first) | set(late)
        assert job_uids(engine, all_jobs[1].id) == expected


def test_restart_completes_by_own_timestamps(engine: Engine, index: Index, clock: Clock) -> None:
    rules = ruleset(ROUTE_CT)
    index.add("1.2.3", 1)
    clock.advance(50)
    index.add("1.2.4", 1, study="1.2.8")
    # "Downtime": a new router (a restarted process) looks 20 s later.
    clock.advance(20)
    restarted = Router(engine, rules, clock=clock)
    assert restarted.scan().series_routed == ["1.2.3"]  # 70 s quiet; the other only 20 s
    clock.advance(40)
    assert restarted.scan().series_routed == ["1.2.4"]


STUDY_RULE = {
    "rule": "True",
    "action": "route",
    "target": "pacs",
    "action_trigger": "study",
}


def test_study_by_required_series(engine: Engine, index: Index, clock: Clock) -> None:
    rules = {
        "study": {
            **STUDY_RULE,
            "study_trigger_condition": "received_series",
            "study_trigger_series": "'Axial T2' and ('Sag T1 GRE' or 'Sag T1 TSE')",
        }
    }
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 2, SeriesDescription="Axial T2 FS")
    clock.advance(60)
    router.scan()
    assert jobs(engine) == []
    index.add("1.2.4", 2, SeriesDescription="SAG T1 TSE")
    clock.advance(60)
    router.scan()  # the series completes and the study is now complete
    router.scan()
    [job] = jobs(engine)
    assert (job.scope, job.series_uid, job.study_uid) == ("study", None, "1.2.9")
    assert len(job_uids(engine, job.id)) == 4


def test_study_by_quiet_period(engine: Engine, index: Index, clock: Clock) -> None:
    router = Router(engine, ruleset({"study": STUDY_RULE}), clock=clock)
    index.add("1.2.3", 2)
    clock.advance(60)
    router.scan()
    clock.advance(800)
    router.scan()
    assert jobs(engine) == []
    clock.advance(100)
    router.scan()
    assert len(jobs(engine)) == 1


@pytest.mark.parametrize("action", ["discard", "proceed", "ignore"])
def test_study_force_timeout(engine: Engine, index: Index, clock: Clock, action: str) -> None:
    rules = {
        "study": {
            **STUDY_RULE,
            "study_trigger_condition": "received_series",
            "study_trigger_series": "'Never arrives'",
            "study_force_completion_action": action,
        }
    }
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 2)
    clock.advance(60)
    router.scan()
    clock.advance(5400)
    router.scan()
    [forced] = events(engine, "study.force_completed")
    assert forced.details["action"] == action
    assert len(jobs(engine)) == (1 if action == "proceed" else 0)
    router.scan()
    assert len(events(engine, "study.force_completed")) == 1  # decided once


def test_a_rule_syntax_error_is_caught_at_load(tmp_path: Any) -> None:
    from mercury.config.load import ConfigError, load_config

    path = tmp_path / "mercury.yaml"
    path.write_text(
        "receiver: {port: 11112}\n"
        "storage: {spool: s}\n"
        "targets: {pacs: {target_type: dummy}}\n"
        "rules:\n"
        "  broken:\n"
        '    rule: "tags.Modality == "\n'
        "    target: pacs\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "rules.broken.rule" in text
    assert "line 1, column 17" in text


def study_states(engine: Engine) -> dict[str, str]:
    from mercury.store.models import StudyRow

    with Session(engine) as session:
        return dict(session.execute(select(StudyRow.study_uid, StudyRow.state)).all())


def test_studies_no_rule_waits_for_settle(engine: Engine, index: Index, clock: Clock) -> None:
    """Studies with series rules only leave "receiving" once their series are decided, so
    a busy site's many such studies never crowd out those a study rule waits for."""
    rules = {
        **ROUTE_CT,
        "drop": {"rule": "tags.Modality == 'OT'", "action": "discard"},
        "mr_study": {**STUDY_RULE, "rule": "tags.Modality == 'MR'"},
    }
    router = Router(engine, ruleset(rules), clock=clock)
    index.add("1.2.3", 1, study="1.2.30", Modality="CT")
    index.add("1.2.4", 1, study="1.2.40", Modality="OT")
    index.add("1.2.5", 1, study="1.2.50", Modality="CT")
    clock.advance(60)
    index.add("1.2.6", 1, study="1.2.50", Modality="CT")  # still receiving
    router.scan()
    router.scan()
    states = study_states(engine)
    assert states["1.2.30"] == "routed"
    assert states["1.2.40"] == "discarded"
    assert states["1.2.50"] == "receiving"
    clock.advance(60)
    router.scan()
    router.scan()
    assert study_states(engine)["1.2.50"] == "routed"

    # A new series re-opens a settled study until it is decided too.
    index.add("1.2.7", 1, study="1.2.40", Modality="CT")
    assert study_states(engine)["1.2.40"] == "receiving"
    clock.advance(60)
    router.scan()
    router.scan()
    assert study_states(engine)["1.2.40"] == "routed"

    # More settled-looking studies than one scan considers: the study rule still completes.
    for number in range(6):
        index.add(f"1.3.{number}", 1, study=f"1.3.{number}0", Modality="CT")
    index.add("1.4.1", 1, study="1.4", Modality="MR")
    clock.advance(60)
    for _ in range(6):
        router.scan(limit=3)
    clock.advance(900)
    for _ in range(6):
        router.scan(limit=3)
    assert study_states(engine)["1.4"] == "routed"
    assert any(j.study_uid == "1.4" and j.scope == "study" for j in jobs(engine))
