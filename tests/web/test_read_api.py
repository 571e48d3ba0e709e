"""Read endpoints on an index filled by the real stages: search filters, pages, the series
view with decisions, jobs and timeline, studies, jobs, events, targets, invalid input."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import TestClient
from tests.web.support import (
    CT_A,
    CT_B,
    MR,
    OT,
    STUDY_1,
    STUDY_2,
    Account,
    Data,
    sqlite_only,
)


def get(client: TestClient, account: Account, path: str, **params: Any) -> Any:
    answer = client.get(path, params=params, headers=account.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def uids(page: dict[str, Any], key: str = "series_uid") -> list[str]:
    return [item[key] for item in page["items"]]


def test_series_search_filters(client: TestClient, viewer: Account, data: Data) -> None:
    everything = get(client, viewer, "/api/series")
    assert everything["total"] == 4
    assert uids(everything)[0] == CT_B  # newest first
    assert set(uids(get(client, viewer, "/api/series", patient_id="MRN1"))) == {CT_A, MR}
    assert set(uids(get(client, viewer, "/api/series", accession="ACC2"))) == {OT, CT_B}
    assert set(uids(get(client, viewer, "/api/series", modality="CT"))) == {CT_A, CT_B}
    assert uids(get(client, viewer, "/api/series", state="discarded")) == [OT]
    assert set(uids(get(client, viewer, "/api/series", rule="ct"))) == {CT_A, CT_B}
    assert uids(get(client, viewer, "/api/series", rule="mr_study")) == [MR]
    assert uids(get(client, viewer, "/api/series", study_uid=STUDY_2, modality="OT")) == [OT]
    newest = everything["items"][0]["last_received_at"]
    assert uids(get(client, viewer, "/api/series", received_from=newest)) == [CT_B]
    before = get(client, viewer, "/api/series", received_to="2000-01-01")
    assert before == {"items": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": None}
    item = get(client, viewer, "/api/series", modality="OT")["items"][0]
    assert (item["patient_id"], item["accession_number"], item["instance_count"]) == (
        "MRN2",
        "ACC2",
        2,
    )


def test_series_pages_by_offset_and_cursor(client: TestClient, viewer: Account, data: Data) -> None:
    all_uids = uids(get(client, viewer, "/api/series"))
    by_offset = [uids(get(client, viewer, "/api/series", limit=1, offset=n))[0] for n in range(4)]
    assert by_offset == all_uids
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = get(client, viewer, "/api/series", **params)
        assert page["total"] == 4
        seen.extend(uids(page))
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == all_uids
    assert get(client, viewer, "/api/series", offset=10)["items"] == []


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("/api/series", {"limit": 0}, "limit"),
    ("/api/series", {"limit": 501}, "limit"),
    ("/api/series", {"offset": -1}, "offset"),
    ("/api/series", {"received_from": "yesterday"}, "received_from"),
    ("/api/series", {"received_to": "0001-01-01T00:00:00+05:00"}, "received_to"),
    ("/api/series", {"modality": "ct"}, "modality"),
    ("/api/series", {"state": "lost"}, "state"),
    ("/api/series", {"rule": "no such rule!"}, "rule"),
    ("/api/series", {"patient_id": "a\x00b"}, "patient_id"),
    ("/api/series", {"cursor": "bm9wZQ"}, "cursor"),
    ("/api/series", {"cursor": "!!"}, "cursor"),
    ("/api/series", {"cursor": "WyJ4Il0", "offset": 1}, "offset"),
    ("/api/series/1.02.3", {}, "uid"),
    ("/api/series/abc", {}, "uid"),
    ("/api/series/1.2.3", {"instances_limit": 10001}, "instances_limit"),
    ("/api/studies", {"study_date": "2026-01-01"}, "study_date"),
    ("/api/studies/1..2", {}, "uid"),
    ("/api/jobs", {"state": "done"}, "state"),
    ("/api/jobs", {"kind": "route"}, "kind"),
    ("/api/jobs/XYZ", {}, "job_id"),
    ("/api/events", {"severity": "fatal"}, "severity"),
    ("/api/events", {"stage": "Route"}, "stage"),
    ("/api/events", {"since": "2026-13-01"}, "since"),
    ("/api/config/versions/0", {}, "number"),
    ("/api/config/versions/1/diff", {"against": -1}, "against"),
]


@sqlite_only
def test_invalid_input_names_the_parameter(client: TestClient, admin: Account) -> None:
    for path, params, parameter in INVALID:
        answer = client.get(path, params=params, headers=admin.headers)
        assert answer.status_code == 422, (path, params, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["status"] == 422
        assert problem["title"] == "Invalid request"
        assert parameter in [error["parameter"] for error in problem["errors"]], (path, params)
        assert parameter in problem["detail"]
        assert "\x00" not in answer.text


def test_series_view(client: TestClient, viewer: Account, data: Data) -> None:
    series = get(client, viewer, f"/api/series/{CT_A}")
    assert (series["study_uid"], series["modality"], series["state"]) == (STUDY_1, "CT", "routed")
    assert [i["sop_instance_uid"] for i in series["instances"]] == data.instances[CT_A]
    assert series["instances_shown"] == 3
    [decision] = series["decisions"]
    assert decision["triggered"] == ["ct"]
    rules = {rule["rule"]: rule for rule in decision["rules"]}
    assert rules["ct"]["fired"] is True
    assert "Modality" in rules["ct"]["tags_read"]
    assert rules["mr_study"]["fired"] is False
    [job] = series["jobs"]
    assert job["id"] == data.failed_job
    assert job["deliveries"] == {"pacs": {"sent": 2, "failed": 1}}
    stages = {stage["stage"]: stage for stage in series["timeline"]["stages"]}
    assert stages["received"]["seconds"] == 2.0  # three images a second apart
    assert stages["complete"]["state"] == "done"
    assert stages["complete"]["seconds"] == 68.0  # quiet period after the last image
    assert stages["routed"]["state"] == "done"
    assert stages["routed"]["seconds"] == 0.0  # one transaction with the completion
    assert stages["processed"]["state"] == "skipped"
    assert stages["delivered"]["state"] == "failed"
    assert stages["delivered"]["seconds"] == 12.0
    assert series["timeline"]["total_seconds"] == 82.0
    kinds = [event["kind"] for event in series["timeline"]["events"]]
    assert kinds.index("series.received") < kinds.index("series.completed")
    assert "series.routed" in kinds
    assert get(client, viewer, f"/api/series/{CT_A}", instances_limit=1)["instances_shown"] == 1


def test_series_waiting_for_its_study(client: TestClient, viewer: Account, data: Data) -> None:
    series = get(client, viewer, f"/api/series/{MR}")
    assert series["jobs"] == []
    assert series["decisions"][0]["details"]["study_rules"] == ["mr_study"]
    stages = {stage["stage"]: stage["state"] for stage in series["timeline"]["stages"]}
    assert stages == {
        "received": "done",
        "complete": "done",
        "routed": "done",
        "processed": "skipped",
        "delivered": "skipped",
    }
    missing = client.get("/api/series/1.2.3.4", headers=viewer.headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_studies(client: TestClient, viewer: Account, data: Data) -> None:
    page = get(client, viewer, "/api/studies")
    assert page["total"] == 2
    assert uids(page, "study_uid") == [STUDY_2, STUDY_1]
    assert uids(get(client, viewer, "/api/studies", patient_id="MRN1"), "study_uid") == [STUDY_1]
    # Study 1 waits for its study rule; study 2's series are all decided and none waits.
    receiving = get(client, viewer, "/api/studies", state="receiving")
    assert uids(receiving, "study_uid") == [STUDY_1]
    assert uids(get(client, viewer, "/api/studies", state="routed"), "study_uid") == [STUDY_2]
    assert uids(get(client, viewer, "/api/studies", accession="ACC2"), "study_uid") == [STUDY_2]
    study = get(client, viewer, f"/api/studies/{STUDY_1}")
    assert study["pending_rules"] == ["mr_study"]
    assert {s["series_uid"] for s in study["series"]} == {CT_A, MR}
    assert [job["id"] for job in study["jobs"]] == [data.failed_job]
    assert any(event["kind"] == "series.routed" for event in study["events"])
    assert client.get("/api/studies/1.2.3", headers=viewer.headers).status_code == 404


def test_jobs(client: TestClient, viewer: Account, data: Data) -> None:
    page = get(client, viewer, "/api/jobs")
    assert page["total"] == 2
    assert uids(page, "id") == [data.queued_job, data.failed_job]
    assert uids(get(client, viewer, "/api/jobs", state="failed"), "id") == [data.failed_job]
    assert get(client, viewer, "/api/jobs", kind="process")["total"] == 0
    assert get(client, viewer, "/api/jobs", target="pacs")["total"] == 2
    assert get(client, viewer, "/api/jobs", target="archive")["total"] == 0
    assert get(client, viewer, "/api/jobs", rule="ct", series_uid=CT_B)["total"] == 1
    second = get(client, viewer, "/api/jobs", limit=1)
    rest = get(client, viewer, "/api/jobs", limit=1, cursor=second["next_cursor"])
    assert uids(rest, "id") == [data.failed_job]
    assert rest["next_cursor"] is None
    job = get(client, viewer, f"/api/jobs/{data.failed_job[:8]}")  # a prefix, as the CLI shows
    assert job["id"] == data.failed_job
    assert (job["state"], job["instance_count"]) == ("failed", 3)
    [attempt] = job["attempt_log"]
    assert (attempt["target"], attempt["outcome"], attempt["error"]) == (
        "pacs",
        "rejected",
        "disk full at the PACS",
    )
    statuses = sorted(d["status"] for d in job["delivery_log"])
    assert statuses == ["failed", "sent", "sent"]
    assert job["module_runs"] == []
    assert client.get("/api/jobs/ffffffff", headers=viewer.headers).status_code == 404


def test_events(client: TestClient, viewer: Account, data: Data) -> None:
    page = get(client, viewer, "/api/events", stage="route", kind="series.routed")
    assert {item["series_uid"] for item in page["items"]} == {CT_A, MR, CT_B}
    ids = [item["id"] for item in get(client, viewer, "/api/events")["items"]]
    assert ids == sorted(ids, reverse=True)
    assert get(client, viewer, "/api/events", severity="error")["total"] == 0
    assert get(client, viewer, "/api/events", series_uid=OT, kind="series.discarded")["total"] == 1
    assert get(client, viewer, "/api/events", since="2100-01-01T00:00:00Z")["total"] == 0
    collected: list[int] = []
    params: dict[str, Any] = {"limit": 2, "study_uid": STUDY_1}
    while True:
        page = get(client, viewer, "/api/events", **params)
        collected.extend(item["id"] for item in page["items"])
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert len(collected) == page["total"] == len(set(collected))


def test_targets(client: TestClient, viewer: Account, data: Data) -> None:
    targets = {t["name"]: t for t in get(client, viewer, "/api/targets")}
    assert set(targets) == {"pacs", "archive"}
    assert targets["pacs"]["type"] == "folder"
    assert (targets["pacs"]["circuit"], targets["pacs"]["held"]) == ("closed", False)


def test_health(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok"
    assert health["database"]["reachable"] is True
    assert health["spool"]["free_bytes"] > 0
    assert health["services"] == {}
