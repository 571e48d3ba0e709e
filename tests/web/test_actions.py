"""Act endpoints: retry and cancel jobs, hold and release targets, force a study complete
(the router's next scan proceeds), each journaled with the user."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mercury.config.load import load_config
from mercury.route.router import Router
from mercury.route.ruleset import RuleSet
from mercury.store.index_writer import IndexWriter
from mercury.store.jobs import job_instances
from mercury.store.models import DecisionRow, EventRow, JobRow, StudyRow, utcnow
from tests.web.conftest import TestClient
from tests.web.support import CT_A, MR, STUDY_1, STUDY_2, Account, Data, receive

LATE_MR = "1.2.826.0.1.1.3"


def events(engine: Engine, kind: str) -> list[EventRow]:
    with Session(engine) as session:
        return list(session.scalars(select(EventRow).where(EventRow.kind == kind)))


def job(engine: Engine, job_id: str) -> JobRow:
    with Session(engine) as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        return row


def test_retry_a_failed_job(
    client: TestClient, operator: Account, data: Data, engine: Engine
) -> None:
    answer = client.post(f"/api/jobs/{data.failed_job}/retry", headers=operator.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["job"]["state"] == "queued"
    row = job(engine, data.failed_job)
    assert (row.state, row.attempts, row.details["retried_by"]) == ("queued", 0, "web:otto")
    [entry] = events(engine, "job.retried")
    assert (entry.stage, entry.details["user"], entry.details["job"]) == (
        "web",
        "otto",
        data.failed_job,
    )
    assert entry.series_uid == CT_A
    again = client.post(f"/api/jobs/{data.failed_job}/retry", headers=operator.headers)
    assert again.status_code == 409
    assert "queued" in again.json()["detail"]


def test_cancel_a_queued_job(
    client: TestClient, operator: Account, data: Data, engine: Engine
) -> None:
    answer = client.post(f"/api/jobs/{data.queued_job[:10]}/cancel", headers=operator.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["job"]["state"] == "cancelled"
    assert job(engine, data.queued_job).state == "cancelled"
    [entry] = events(engine, "job.cancel_requested")
    assert entry.details["user"] == "otto"
    again = client.post(f"/api/jobs/{data.queued_job}/cancel", headers=operator.headers)
    assert again.status_code == 409
    assert client.post("/api/jobs/abcdef12/cancel", headers=operator.headers).status_code == 404


def test_hold_and_release_a_target(
    client: TestClient, operator: Account, viewer: Account, engine: Engine
) -> None:
    held = client.post(
        "/api/targets/pacs/hold", json={"reason": "PACS upgrade"}, headers=operator.headers
    )
    assert held.status_code == 200
    assert held.json()["changed"] is True
    target = held.json()["target"]
    assert (target["held"], target["held_by"], target["held_reason"]) == (
        True,
        "web:otto",
        "PACS upgrade",
    )
    twice = client.post("/api/targets/pacs/hold", headers=operator.headers)
    assert twice.json()["changed"] is False
    listed = {t["name"]: t for t in client.get("/api/targets", headers=viewer.headers).json()}
    assert listed["pacs"]["held"] is True
    [entry] = events(engine, "target.held")
    assert entry.details["by"] == "web:otto"
    assert entry.details["reason"] == "PACS upgrade"
    released = client.post("/api/targets/pacs/release", headers=operator.headers)
    assert released.json()["target"]["held"] is False
    [entry] = events(engine, "target.released")
    assert entry.details["by"] == "web:otto"
    assert client.post("/api/targets/nowhere/hold", headers=operator.headers).status_code == 404
    control = client.post(
        "/api/targets/pacs/hold", json={"reason": "bad\x00reason"}, headers=operator.headers
    )
    assert control.status_code == 422
    assert control.json()["errors"][0]["parameter"] == "reason"


def test_force_complete_a_study(
    client: TestClient, operator: Account, data: Data, engine: Engine, config_path: Path
) -> None:
    answer = client.post(f"/api/studies/{STUDY_1}/force-complete", headers=operator.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["pending_rules"] == ["mr_study"]
    [entry] = events(engine, "study.force_requested")
    assert (entry.details["user"], entry.study_uid) == ("otto", STUDY_1)
    # The study's quiet period (900 s) and force timeout are far off: the request decides.
    Router(engine, RuleSet.from_config(load_config(config_path))).scan()
    with Session(engine) as session:
        study = session.get(StudyRow, STUDY_1)
        assert study is not None
        assert (study.state, study.completion_reason, study.pending_rules) == (
            "routed",
            "manual",
            [],
        )
        decision = session.scalars(
            select(DecisionRow).where(
                DecisionRow.study_uid == STUDY_1, DecisionRow.scope == "study"
            )
        ).one()
        assert (decision.reason, decision.triggered) == ("manual", ["mr_study"])
        [archive_job] = session.scalars(select(JobRow).where(JobRow.target == "archive"))
        assert archive_job.scope == "study"
    shown = client.get(f"/api/series/{MR}", headers=operator.headers).json()
    assert any(d["scope"] == "study" and d["reason"] == "manual" for d in shown["decisions"])
    done = client.post(f"/api/studies/{STUDY_1}/force-complete", headers=operator.headers)
    assert done.status_code == 409
    nothing_waits = client.post(f"/api/studies/{STUDY_2}/force-complete", headers=operator.headers)
    assert nothing_waits.status_code == 409
    missing = client.post("/api/studies/1.2.3/force-complete", headers=operator.headers)
    assert missing.status_code == 404


def test_force_request_survives_a_series_routed_in_the_same_scan(
    client: TestClient, operator: Account, data: Data, engine: Engine, config_path: Path
) -> None:
    client.post(f"/api/studies/{STUDY_1}/force-complete", headers=operator.headers)
    writer = IndexWriter(engine)
    writer.start()
    try:
        late = receive(writer, LATE_MR, STUDY_1, 2, utcnow() - timedelta(minutes=2), Modality="MR")
    finally:
        writer.stop()
    report = Router(engine, RuleSet.from_config(load_config(config_path))).scan()
    assert LATE_MR in report.series_routed
    assert report.studies_routed == [STUDY_1]
    with Session(engine) as session:
        [archive_job] = session.scalars(select(JobRow).where(JobRow.target == "archive"))
        assert set(late) <= set(job_instances(session, archive_job.id))
