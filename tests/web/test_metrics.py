"""GET /metrics: Prometheus text that parses, with every family, read from the index."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from mercury.store.jobs import Claimer, finish_job
from mercury.store.journal import record
from mercury.store.models import utcnow
from mercury.store.process_models import ModuleRunRow
from tests.web.conftest import TestClient
from tests.web.support import CT_B, Data

FAMILIES = {
    "mercury_index_up",
    "mercury_instances_received",
    "mercury_received_bytes",
    "mercury_duplicates_received",
    "mercury_series_completed",
    "mercury_series",
    "mercury_router_backlog_instances",
    "mercury_jobs",
    "mercury_queue_depth",
    "mercury_target_instances_sent",
    "mercury_target_instances_failed",
    "mercury_target_attempts",
    "mercury_target_down",
    "mercury_target_held",
    "mercury_target_consecutive_failures",
    "mercury_module_runs",
    "mercury_module_run_seconds",
    "mercury_stage_latency_seconds",
    "mercury_events_last_hour",
    "mercury_config_version",
    "mercury_spool_free_bytes",
    "mercury_spool_reserve_bytes",
    "mercury_scrape_seconds",
}


def finish_queued_job(engine: Engine, data: Data) -> None:
    """The dispatcher's part, done by hand: deliver the queued job, and a module run."""
    now = utcnow()
    with Session(engine) as session, session.begin():
        [job] = Claimer("dispatch", "test").claim(session, now=now, offpeak_open=False)
        assert job.id == data.queued_job
        finish_job(session, job.id, "test", now=now, state="succeeded")
        record(
            session,
            stage="dispatch",
            kind="job.succeeded",
            message="delivered",
            series_uid=CT_B,
            study_uid=job.study_uid,
            details={"job": job.id},
        )
        session.add(
            ModuleRunRow(
                job_id="f" * 32,
                attempt=1,
                step=0,
                module="blur",
                runner="local",
                run_id="r1",
                owner="test",
                status="succeeded",
                message="",
                log_path="/nowhere",
                started_at=now - timedelta(seconds=42),
                ended_at=now,
            )
        )


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_parse_and_describe_the_index(
    client: TestClient, data: Data, engine: Engine
) -> None:
    finish_queued_job(engine, data)
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(answer.text)}
    assert families >= FAMILIES
    values = samples(answer.text)
    assert values["mercury_index_up"][()] == 1
    assert values["mercury_instances_received_total"][()] == 8
    assert values["mercury_received_bytes_total"][()] == 8000
    assert values["mercury_series"][(("state", "discarded"),)] == 1
    assert values["mercury_jobs"][(("kind", "dispatch"), ("state", "failed"))] == 1
    assert values["mercury_jobs"][(("kind", "dispatch"), ("state", "succeeded"))] == 1
    assert values["mercury_target_instances_sent_total"][(("target", "pacs"),)] == 2
    assert values["mercury_target_instances_failed_total"][(("target", "pacs"),)] == 1
    assert values["mercury_target_down"][(("target", "archive"),)] == 0
    assert values["mercury_module_runs_total"][(("module", "blur"), ("status", "succeeded"))] == 1
    assert values["mercury_module_run_seconds_gcount"][(("module", "blur"),)] == 1
    assert values["mercury_module_run_seconds_bucket"][(("le", "30.0"), ("module", "blur"))] == 0
    assert values["mercury_module_run_seconds_bucket"][(("le", "60.0"), ("module", "blur"))] == 1
    latency = values["mercury_stage_latency_seconds_gcount"]
    assert latency[(("stage", "completion"),)] == 4
    assert latency[(("stage", "dispatch"),)] == 1
    assert latency[(("stage", "end_to_end"),)] == 1
    assert latency[(("stage", "processing"),)] == 0
    assert values["mercury_config_version"][()] == 1
    assert values["mercury_spool_free_bytes"][()] > 0


def test_metrics_and_health_report_a_lost_database(client: TestClient) -> None:
    context = client.app.state.mercury  # type: ignore[attr-defined]
    context.engine.dispose()
    context.engine = create_engine("sqlite:////nonexistent/folder/index.db")
    context.sessions.configure(bind=context.engine)
    values = samples(client.get("/metrics").text)
    assert values["mercury_index_up"][()] == 0
    assert values["mercury_spool_free_bytes"][()] > 0
    health = client.get("/api/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["database"]["reachable"] is False
