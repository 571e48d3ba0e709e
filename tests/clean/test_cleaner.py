"""The cleaner against a real index (SQLite and PostgreSQL) and a real spool, with an
injectable clock: retention per outcome, pending data, processing folders, a crash between
the two steps, images received during a clean, index row expiry, the off-peak window."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from mercury.clean.files import DiskUsage
from mercury.store.delivery_models import DeliveryRow
from mercury.store.jobs import requeue
from mercury.store.models import EventRow, JobInstanceRow, JobRow, SeriesRow
from tests.clean.support import DISCARD, ERROR, INDEX_ROWS, SUCCESS, World
from tests.route.support import Clock

OK, DROPPED, FAILED, QUEUED, RECEIVING = "1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4", "1.2.3.5"


def cleaned_uids(world: World) -> list[str]:
    return [str(event.series_uid) for event in world.events("series.cleaned")]


def test_each_outcome_is_kept_for_its_own_retention(world: World, clock: Clock) -> None:
    world.receive(OK, 3)
    world.receive(DROPPED, 2, description="Scout")
    world.receive(FAILED, 2)
    world.receive(QUEUED, 2)
    assert sorted(world.route()) == [OK, DROPPED, FAILED, QUEUED]
    world.receive(RECEIVING, 2)  # arrives after routing: still receiving
    world.finish(OK)
    world.finish(FAILED, "failed")
    cleaner = world.cleaner()

    clock.advance(DISCARD - 1)
    assert cleaner.scan().cleaned == []
    clock.advance(1)
    [dropped] = cleaner.scan().cleaned
    assert (dropped.series_uid, dropped.outcome, dropped.reason) == (
        DROPPED,
        "discard",
        "retention",
    )
    assert (dropped.files, dropped.bytes) == (2, 4000)
    assert world.files(DROPPED) == []
    assert not (world.spool.data_dir / "1.2.9" / DROPPED).exists()
    assert world.state(DROPPED) == "cleaned"
    assert world.instance_rows(DROPPED) == 2  # index rows stay until retention.index_rows

    clock.advance(SUCCESS - DISCARD)
    assert [c.series_uid for c in cleaner.scan().cleaned] == [OK]
    clock.advance(ERROR - SUCCESS - 1)
    assert cleaner.scan().cleaned == []
    clock.advance(1)
    assert [(c.series_uid, c.outcome) for c in cleaner.scan().cleaned] == [(FAILED, "error")]

    assert cleaned_uids(world) == [DROPPED, OK, FAILED]
    event = world.events("series.cleaned", OK)[0]
    assert event.stage == "clean"
    assert event.details["reason"] == "retention"
    assert event.details["outcome"] == "success"
    assert event.details["files"] == 3
    assert event.details["retention"] == SUCCESS
    assert "Removed 3 image(s)" in event.message

    clock.advance(10**7)  # pending data is never removed
    assert cleaner.scan().cleaned == []
    assert len(world.files(QUEUED)) == 2
    assert len(world.files(RECEIVING)) == 2
    assert (world.state(QUEUED), world.state(RECEIVING)) == ("routed", "receiving")


def test_a_series_with_a_queued_dispatch_job_is_not_cleaned(world: World, clock: Clock) -> None:
    world.receive(OK, 2)
    world.route()
    world.finish(OK, "failed")
    [job] = world.jobs(OK)
    with Session(world.engine) as session, session.begin():  # someone retries it
        requeue(session, job.id, now=clock(), by="cli:test")
    clock.advance(10**6)
    cleaner = world.cleaner()
    assert cleaner.due(clock()) == []
    assert cleaner.scan().cleaned == []
    assert len(world.files(OK)) == 2
    world.finish(OK)
    clock.advance(SUCCESS)
    assert [c.outcome for c in cleaner.scan().cleaned] == ["success"]


def test_processing_folders_go_with_the_series(world: World, clock: Clock) -> None:
    world.receive(OK, 2, description="Process")
    world.route()
    process, _dispatch = world.publish_results(OK)
    cleaner = world.cleaner()
    clock.advance(10**6)
    assert cleaner.scan().cleaned == []  # the results are still to be sent
    world.finish(OK, kind="dispatch")
    clock.advance(SUCCESS)
    [item] = cleaner.scan().cleaned
    assert item.outcome == "success"
    assert sorted(item.folders) == sorted([f"runs/{process}", f"results/{process}"])
    assert not (world.spool.root / "runs" / process).exists()
    assert not (world.spool.root / "results" / process).exists()
    assert item.bytes == 2 * 2000 + 2 * 1000 + len("ran\n")


def test_results_stay_while_a_dispatch_job_still_sends_them(world: World, clock: Clock) -> None:
    world.receive(OK, 2, description="Process")
    world.route()
    process, dispatch = world.publish_results(OK)
    world.finish(OK, kind="dispatch")
    clock.advance(SUCCESS)
    cleaner = world.cleaner()
    [candidate] = cleaner.due(clock())
    assert cleaner.begin(candidate)
    with Session(world.engine) as session, session.begin():  # retried between the steps
        requeue(session, dispatch, now=clock(), by="cli:test")
    item = cleaner.complete(OK, reason="retention", outcome=candidate.outcome)
    assert item is not None
    assert item.files == 2
    assert item.folders == []
    results = world.spool.root / "results" / process
    assert len(list(results.iterdir())) == 2
    assert (world.spool.root / "runs" / process).is_dir()
    [event] = world.events("series.cleaned", OK)
    [kept] = event.details["folders_kept"]
    assert kept.startswith(process)
    assert "still sends its results" in kept

    assert cleaner.scan().folders == []  # still queued
    world.finish(OK, kind="dispatch")
    swept = cleaner.scan().folders
    assert sorted(swept) == sorted([f"runs/{process}", f"results/{process}"])
    assert not results.exists()
    [removed] = world.events("clean.folders_removed")
    assert removed.details["folders"] == swept


def test_a_clean_interrupted_between_its_steps_is_finished(world: World, clock: Clock) -> None:
    world.receive(OK, 4)
    world.route()
    world.finish(OK)
    clock.advance(SUCCESS)
    [candidate] = world.cleaner().due(clock())
    assert world.cleaner().begin(candidate)
    # Stopped here: the index says the series is being cleaned; its files are all there.
    assert world.state(OK) == "cleaning"
    files = world.files(OK)
    assert len(files) == 4
    assert world.route() == []  # routing leaves it alone
    files[0].unlink()  # ... or stopped in the middle of removing them

    report = world.cleaner().scan()
    assert report.resumed == 1
    [item] = report.cleaned
    assert (item.series_uid, item.resumed, item.reason, item.files) == (OK, True, "retention", 3)
    assert world.files(OK) == []
    assert world.state(OK) == "cleaned"
    [event] = world.events("series.cleaned", OK)
    assert event.details["resumed"] is True
    assert event.details["missing"] == 1
    assert world.cleaner().scan().cleaned == []  # nothing left to do
    assert len(world.events("series.cleaned", OK)) == 1


def test_a_series_is_checked_again_when_it_is_marked(world: World, clock: Clock) -> None:
    world.receive(OK, 2)
    world.route()
    world.finish(OK)
    clock.advance(SUCCESS)
    cleaner = world.cleaner()
    [candidate] = cleaner.due(clock())
    [job] = world.jobs(OK)
    with Session(world.engine) as session, session.begin():
        requeue(session, job.id, now=clock(), by="cli:test")
    assert not cleaner.begin(candidate)
    assert world.state(OK) == "routed"
    assert len(world.files(OK)) == 2


def test_images_received_during_a_clean_are_kept(world: World, clock: Clock) -> None:
    uids = world.receive(OK, 3)
    world.route()
    world.finish(OK)
    clock.advance(SUCCESS)
    cleaner = world.cleaner()
    [candidate] = cleaner.due(clock())
    assert cleaner.begin(candidate)
    world.resend(OK, uids[0], size=3000)  # the same image again: its file is replaced
    [late] = world.receive(OK, 1)  # and a new one
    item = cleaner.complete(OK, reason="retention", outcome=candidate.outcome)
    assert item is not None
    assert item.files == 2  # the re-sent image's row is unrouted again: not a candidate
    remaining = {path.name: path.stat().st_size for path in world.files(OK)}
    assert remaining == {f"{uids[0]}.dcm": 3000, f"{late}.dcm": 2000}
    # Routing takes them as late arrivals: the series is open again, with a job for them.
    assert world.route() == [OK]
    assert world.state(OK) == "routed"
    queued = [job for job in world.jobs(OK) if job.state == "queued"]
    assert len(queued) == 1
    with Session(world.engine) as session:
        linked = set(
            session.scalars(
                select(JobInstanceRow.sop_instance_uid).where(JobInstanceRow.job_id == queued[0].id)
            )
        )
    assert linked == {uids[0], late}


def _count(engine: Engine, model: type, *where: object) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_index_rows_expire_after_their_own_retention(world: World, clock: Clock) -> None:
    uids = world.receive(OK, 3)
    world.receive(QUEUED, 1)
    world.route()
    world.finish(OK)
    [job] = world.jobs(OK)
    with Session(world.engine) as session, session.begin():
        session.execute(
            insert(DeliveryRow),
            [
                {"job_id": job.id, "target": "pacs", "sop_instance_uid": uid, "status": "sent"}
                for uid in uids
            ],
        )
    cleaner = world.cleaner()
    clock.advance(SUCCESS)
    assert [c.series_uid for c in cleaner.scan().cleaned] == [OK]
    clock.advance(INDEX_ROWS - 1)
    report = cleaner.scan()
    assert report.index is not None
    assert report.index.series == 0
    assert world.instance_rows(OK) == 3

    clock.advance(1)
    report = cleaner.scan()
    assert report.index is not None
    assert report.index.series == 1
    assert report.index.rows == {"instances": 3, "job_instances": 3, "deliveries": 3, "events": 4}
    assert world.instance_rows(OK) == 0
    assert _count(world.engine, JobInstanceRow, JobInstanceRow.job_id == job.id) == 0
    assert _count(world.engine, DeliveryRow) == 0
    assert _count(world.engine, EventRow, EventRow.series_uid == OK) == 0
    # The record of what happened stays: the series, its jobs; the other series is untouched.
    assert world.state(OK) == "cleaned"
    assert _count(world.engine, JobRow, JobRow.series_uid == OK) == 1
    assert world.instance_rows(QUEUED) == 1
    [expired] = world.events("index.expired")
    assert expired.details["uids"] == [OK]
    assert cleaner.scan().index.series == 0  # type: ignore[union-attr]


def _local(hour: int) -> datetime:
    """A time of day on this machine's clock, as the index stores it (UTC)."""
    return datetime(2026, 11, 25, hour, 0).astimezone().astimezone(UTC)


def test_offpeak_only(engine: Engine, clock: Clock, tmp_path: Path) -> None:
    clock.now = _local(9)
    world = World(
        engine,
        clock,
        tmp_path / "spool",
        retention={"offpeak_only": True},
        timings={"offpeak_start": "22:00", "offpeak_end": "06:00"},
    )
    try:
        world.receive(OK, 2)
        world.receive(FAILED, 2, description="Other", study="1.2.8")
        world.route()
        world.finish(OK)
        clock.advance(60)
        world.finish(FAILED)
        clock.now = _local(14)
        cleaner = world.cleaner()
        report = cleaner.scan()
        assert (report.retention_ran, report.cleaned) == (False, [])
        assert len(world.files(OK)) == 2

        # The emergency clean does not wait for the window: the oldest goes first.
        def usage() -> DiskUsage:
            used = 95 if world.files(OK) else 50
            return DiskUsage(total=100, used=used, available=100 - used)

        [item] = world.cleaner(usage).scan().cleaned
        assert (item.series_uid, item.reason) == (OK, "emergency")
        assert len(world.files(FAILED, "1.2.8")) == 2

        clock.now = _local(23)
        report = cleaner.scan()
        assert report.retention_ran
        assert [(c.series_uid, c.reason) for c in report.cleaned] == [(FAILED, "retention")]
        assert cleaner.scan(anytime=True).cleaned == []
    finally:
        world.close()


def test_the_series_row_is_held_in_state_cleaned(world: World, clock: Clock) -> None:
    world.receive(OK, 1)
    world.route()
    world.finish(OK)
    clock.advance(SUCCESS)
    world.cleaner().scan()
    with Session(world.engine) as session:
        row = session.get(SeriesRow, OK)
        assert row is not None
        assert (row.state, row.instance_count) == ("cleaned", 1)
