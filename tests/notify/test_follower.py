"""The journal follower on both databases: RECEIVED from ``series.received`` for the rules
that fire and notify on reception, ERROR from ``job.failed`` for rules that notify on
errors; its cursor survives a restart, is shared by two followers, and waits for an
event id that is missing until it appears or is given up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from mercury.notify.follower import JournalFollower
from mercury.route.ruleset import RuleSet
from mercury.store.models import JobRow
from mercury.store.notify_models import JournalCursorRow
from tests.notify.support import SERIES, STUDY, make_config
from tests.notify.support import Index as World

HOOK = {"notification_webhook": "http://127.0.0.1:9/hook"}
CT = "tags.Modality == 'CT'"
RULES: dict[str, Any] = {
    "scout": {"rule": "tags.SeriesDescription == 'Scout'", "action": "discard"},
    "ct_hook": {"rule": CT, "action": "notification", **HOOK},
    "ct_urgent": {
        "rule": CT,
        "action": "route",
        "target": "pacs",
        "priority": "offpeak",
        "notification_email": "ops@example.org",
    },
    "ct_quiet": {
        "rule": CT,
        "action": "notification",
        "notification_trigger_reception": False,
        **HOOK,
    },
    "ct_nowhere": {"rule": CT, "action": "notification"},
    "mr_hook": {"rule": "tags.Modality == 'MR'", "action": "notification", **HOOK},
    "errors": {"rule": "False", "action": "route", "target": "pacs", **HOOK},
    "no_errors": {
        "rule": "False",
        "action": "route",
        "target": "pacs",
        "notification_trigger_error": False,
        **HOOK,
    },
}


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def follower(index: World, tmp_path: Path, monotonic: Monotonic | None = None) -> JournalFollower:
    rules = RuleSet.from_config(make_config(tmp_path, RULES))
    return JournalFollower(
        index.engine, rules, clock=index.clock, monotonic=monotonic or Monotonic()
    )


def received(index: World, series: str, **tags: str) -> None:
    index.store_series(series, **tags)
    index.insert_event("series.received", study_uid=STUDY, series_uid=series)


def by_rule(index: World) -> dict[str, dict[str, Any]]:
    return {job.rule: {"priority": job.priority, **job.details} for job in index.jobs()}


def test_reception_notifies_the_rules_that_fire(index: World, tmp_path: Path) -> None:
    watcher = follower(index, tmp_path)
    index.insert_event("series.received", study_uid=STUDY, series_uid=SERIES)  # a CT series
    created = watcher.poll()
    jobs = by_rule(index)
    assert set(jobs) == {"ct_hook", "ct_urgent"}  # not quiet, not without an address
    assert len(created) == 2
    assert jobs["ct_hook"]["event"] == "received"
    assert jobs["ct_urgent"]["priority"] == "normal"  # never held for the off-peak window
    assert {job.series_uid for job in index.jobs()} == {SERIES}
    assert watcher.poll() == []

    received(index, "1.2.3.4", Modality="MR")
    received(index, "1.2.3.5", SeriesDescription="Scout")  # discarded: nothing
    received(index, "1.2.3.6", Modality="US")  # no rule fires
    watcher.poll()
    assert [job.rule for job in index.jobs() if job.series_uid != SERIES] == ["mr_hook"]


def test_errors_notify_the_failed_jobs_rule(index: World, tmp_path: Path) -> None:
    watcher = follower(index, tmp_path)
    failed = []
    for rule, kind in [("errors", "dispatch"), ("no_errors", "dispatch"), ("errors", "notify")]:
        job = index.source_job(rule, kind=kind)
        with Session(index.engine) as session, session.begin():
            session.execute(
                update(JobRow)
                .where(JobRow.id == job)
                .values(state="failed", last_error="pacs: association rejected")
            )
        index.insert_event("job.failed", stage="dispatch", details={"job": job})
        failed.append(job)
    index.insert_event("job.failed", details={"job": "no-such-job"})
    index.insert_event("job.failed", details={})
    watcher.poll()
    (notify,) = [row for row in index.jobs() if row.id not in failed]
    assert notify.rule == "errors"
    assert notify.details["event"] == "error"
    assert notify.details["source_job"] == failed[0]
    assert notify.details["text"] == "pacs: association rejected"


def test_the_cursor_survives_a_restart_and_is_shared(index: World, tmp_path: Path) -> None:
    first = follower(index, tmp_path)
    index.insert_event("series.received", study_uid=STUDY, series_uid=SERIES)
    assert len(first.poll()) == 2
    restarted = follower(index, tmp_path)
    assert restarted.poll() == []
    received(index, "1.2.3.4", Modality="MR")
    assert len(restarted.poll()) == 1
    assert first.poll() == []  # the other follower's write is seen: nothing twice
    received(index, "1.2.3.5", Modality="MR")
    assert len(first.poll()) == 1
    assert restarted.poll() == []
    assert len(index.jobs()) == 4


def test_a_missing_event_id_is_waited_for(index: World, tmp_path: Path) -> None:
    """Ids 2 and 4 are taken by transactions that have not committed (or never will)."""
    clock = Monotonic()
    watcher = follower(index, tmp_path, clock)
    index.store_series("1.2.3.2", Modality="MR")
    index.store_series("1.2.3.3", Modality="MR")
    index.store_series("1.2.3.4", Modality="MR")
    mr = {"study_uid": STUDY}
    index.insert_event("series.received", event_id=1, series_uid=SERIES, **mr)
    index.insert_event("series.received", event_id=3, series_uid="1.2.3.3", **mr)
    assert len(watcher.poll()) == 3  # two CT rules for 1, mr_hook for 3
    assert cursor(index) == (1, [3])

    restarted = follower(index, tmp_path, clock)
    assert restarted.poll() == []  # 3 is done: not again
    index.insert_event("series.received", event_id=2, series_uid="1.2.3.2", **mr)
    assert len(restarted.poll()) == 1
    assert cursor(index) == (3, [])

    index.insert_event("series.received", event_id=5, series_uid="1.2.3.4", **mr)
    assert len(restarted.poll()) == 1
    assert cursor(index) == (3, [5])
    clock.now += 29
    restarted.poll()
    assert cursor(index) == (3, [5])
    clock.now += 2  # id 4 never came: move on
    restarted.poll()
    assert cursor(index) == (5, [])
    assert sorted(job.series_uid or "" for job in index.jobs() if job.rule == "mr_hook") == [
        "1.2.3.2",
        "1.2.3.3",
        "1.2.3.4",
    ]


def test_a_removed_cursor_starts_at_the_end(index: World, tmp_path: Path) -> None:
    index.insert_event("series.received", study_uid=STUDY, series_uid=SERIES)
    with Session(index.engine) as session, session.begin():
        session.execute(delete(JournalCursorRow))
    watcher = follower(index, tmp_path)
    assert watcher.poll() == []
    assert watcher.poll() == []
    assert index.jobs() == []
    received(index, "1.2.3.4", Modality="MR")
    assert len(watcher.poll()) == 1


def cursor(index: World) -> tuple[int, list[int]]:
    with Session(index.engine) as session:
        row = session.get(JournalCursorRow, "notifier")
        assert row is not None
        return row.position, list(row.done)
