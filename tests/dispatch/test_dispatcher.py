"""The dispatcher against a real index (SQLite and PostgreSQL) and real targets (folders),
with an injectable clock: delivery records, retries with backoff, give-up, resend, the
circuit breaker, hold and release, multi-target jobs, lease take-over, missing files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.orm import Session

from mercury.config.load import config_from_data
from mercury.config.models import MercuryConfig
from mercury.dispatch.dispatcher import Dispatcher
from mercury.store import target_state
from mercury.store.db import make_engine, upgrade
from mercury.store.delivery_models import DeliveryRow, JobAttemptRow, TargetStateRow
from mercury.store.jobs import JobSpec, create_jobs, requeue
from mercury.store.models import EventRow, InstanceRow, JobRow
from mercury.store.spool import Spool
from tests.helpers import make_small_images, wait_for

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


class World:
    """A spool with stored instances, an index, folder targets, and a dispatcher."""

    def __init__(self, engine: Engine, tmp: Path) -> None:
        self.engine = engine
        self.tmp = tmp
        self.clock = Clock()
        self.spool = Spool(tmp / "spool")
        self.spool.prepare()
        self.outbox = tmp / "outbox"
        self.second = tmp / "second"
        self.dispatchers: list[Dispatcher] = []
        self.uids: list[str] = []
        self.study = self.series = ""

    def config(self, **dispatch: Any) -> MercuryConfig:
        data = {
            "storage": {"spool": str(self.spool.root), "database": "sqlite://"},
            "dispatch": {
                "retry": {"base": 10, "factor": 2, "cap": 100, "jitter": 0, "max_retries": 2},
                "circuit_failures": 3,
                "circuit_probe_interval": 30,
                **dispatch,
            },
            "targets": {
                "out": {"target_type": "folder", "folder": str(self.outbox)},
                "second": {"target_type": "folder", "folder": str(self.second)},
                "gone": {"target_type": "rsync", "folder": "/x", "user": "u", "host": "h"},
            },
        }
        return config_from_data(data, source="test.yaml")

    def store(self, count: int = 3) -> list[str]:
        files = make_small_images(self.tmp / "images", count, per_series=count, size=16)
        rows = []
        for path in files:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            relative = self.spool.relative_path(
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
            )
            target = self.spool.absolute(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            self.study, self.series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            rows.append(
                {
                    "sop_instance_uid": str(ds.SOPInstanceUID),
                    "series_uid": self.series,
                    "study_uid": self.study,
                    "sop_class_uid": str(ds.SOPClassUID),
                    "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
                    "path": relative,
                    "size": target.stat().st_size,
                    "calling_ae": "MODALITY",
                    "called_ae": "MERCURY",
                    "peer_host": "127.0.0.1",
                    "association_id": "a1",
                    "received_at": T0,
                }
            )
        with Session(self.engine) as session, session.begin():
            session.execute(insert(InstanceRow), rows)
        self.uids = [row["sop_instance_uid"] for row in rows]
        return self.uids

    def job(self, target: str | None = "out", targets: tuple[str, ...] = ()) -> str:
        spec = JobSpec(
            kind="dispatch",
            rule="r",
            scope="series",
            study_uid=self.study,
            series_uid=self.series,
            instances=self.uids,
            target=target,
            targets=targets,
        )
        with Session(self.engine) as session, session.begin():
            return create_jobs(session, [spec], now=self.clock(), decision_id=None)[0]

    def dispatcher(self, config: MercuryConfig, owner: str = "d1") -> Dispatcher:
        dispatcher = Dispatcher(self.engine, config, self.spool, owner=owner, clock=self.clock)
        self.dispatchers.append(dispatcher)
        return dispatcher

    @staticmethod
    def run(dispatcher: Dispatcher) -> int:
        started = dispatcher.tick()
        wait_for(lambda: not dispatcher.busy(), 30, "the dispatcher's sends to finish")
        return started

    def row(self, job_id: str) -> JobRow:
        with Session(self.engine) as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            session.expunge(row)
            return row

    def events(self, kind: str) -> list[EventRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(EventRow).where(EventRow.kind == kind)))

    def close(self) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.close(grace=5)


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    world = World(engine, tmp_path)
    yield world
    world.close()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_delivers_and_records_every_instance(world: World) -> None:
    world.outbox.mkdir()
    uids = world.store(3)
    job = world.job()
    dispatcher = world.dispatcher(world.config())
    assert world.run(dispatcher) == 1
    assert world.row(job).state == "succeeded"
    delivered = sorted(p.name for p in (world.outbox / job).iterdir())
    assert delivered == sorted([".complete", *(f"{world.series}#{uid}.dcm" for uid in uids)])
    with Session(world.engine) as session:
        statuses = dict(
            session.execute(
                select(DeliveryRow.sop_instance_uid, DeliveryRow.status).where(
                    DeliveryRow.job_id == job
                )
            ).all()
        )
        attempts = list(session.scalars(select(JobAttemptRow)))
    assert statuses == dict.fromkeys(uids, "sent")
    assert [(a.target, a.outcome, a.sent) for a in attempts] == [("out", "delivered", 3)]
    assert len(world.events("dispatch.sent")) == 1
    assert len(world.events("job.succeeded")) == 1


def test_target_down_at_first_is_retried_with_backoff_then_delivered(world: World) -> None:
    world.store(2)
    job = world.job()
    dispatcher = world.dispatcher(world.config())
    world.run(dispatcher)  # the folder's share is "not mounted": it does not exist
    row = world.row(job)
    assert (row.state, row.attempts) == ("queued", 1)
    assert _aware(row.next_attempt_at) == T0 + timedelta(seconds=10)
    assert "does not exist" in (row.last_error or "")
    assert world.run(dispatcher) == 0  # not due yet
    world.clock.advance(10)
    world.run(dispatcher)
    row = world.row(job)
    assert (row.state, row.attempts) == ("queued", 2)
    assert _aware(row.next_attempt_at) == world.clock() + timedelta(seconds=20)  # doubled
    world.outbox.mkdir()  # the share comes back
    world.clock.advance(20)
    world.run(dispatcher)
    assert world.row(job).state == "succeeded"
    assert (world.outbox / job / ".complete").exists()
    assert len(world.events("job.retry_scheduled")) == 2


def test_gives_up_after_max_retries_keeps_reasons_and_can_be_resent(world: World) -> None:
    world.store(2)
    job = world.job()
    dispatcher = world.dispatcher(world.config(circuit_failures=10))
    for _ in range(3):  # first attempt + max_retries 2
        world.run(dispatcher)
        world.clock.advance(1000)
    row = world.row(job)
    assert (row.state, row.attempts) == ("failed", 3)
    with Session(world.engine) as session:
        reasons = list(session.scalars(select(JobAttemptRow.error).order_by(JobAttemptRow.id)))
    assert len(reasons) == 3
    assert all("does not exist" in (reason or "") for reason in reasons)
    failed = world.events("job.failed")
    assert len(failed) == 1
    assert "mercury jobs retry" in failed[0].message
    world.clock.advance(1000)
    assert world.run(dispatcher) == 0  # failed jobs stay failed

    world.outbox.mkdir()
    with Session(world.engine) as session, session.begin():
        requeue(session, job, now=world.clock(), by="test")
    world.run(dispatcher)
    row = world.row(job)
    assert (row.state, row.attempts) == ("succeeded", 1)


def test_circuit_opens_jobs_wait_without_burning_attempts_probe_closes_it(world: World) -> None:
    world.store(1)
    jobs = [world.job() for _ in range(4)]
    dispatcher = world.dispatcher(world.config(workers=1))
    for _ in range(3):  # three consecutive failures open the circuit
        world.run(dispatcher)
    with Session(world.engine) as session:
        state = session.get(TargetStateRow, "out")
        assert state is not None
        assert (state.circuit, state.consecutive_failures) == ("open", 3)
    assert len(world.events("target.down")) == 1
    waiting = [j for j in jobs if world.row(j).attempts == 0]
    assert len(waiting) == 1
    world.clock.advance(1000)  # retries due, but the target is down: nothing is claimed
    assert world.run(dispatcher) == 0
    assert world.row(waiting[0]).attempts == 0

    world.run(dispatcher)  # the probe runs (interval passed) and fails: still down
    with Session(world.engine) as session:
        state = session.get(TargetStateRow, "out")
        assert state is not None
        assert state.circuit == "open"
    world.outbox.mkdir()
    world.clock.advance(30)
    world.run(dispatcher)  # the probe succeeds: circuit closed
    assert len(world.events("target.up")) == 1
    for _ in range(4):
        world.run(dispatcher)
    assert {world.row(j).state for j in jobs} == {"succeeded"}


def test_held_target_waits_until_released(world: World) -> None:
    world.outbox.mkdir()
    world.store(1)
    job = world.job()
    dispatcher = world.dispatcher(world.config())
    with Session(world.engine) as session, session.begin():
        assert target_state.hold(session, "out", now=world.clock(), by="op", reason="PACS upgrade")
    assert world.run(dispatcher) == 0
    assert world.row(job).attempts == 0
    with Session(world.engine) as session, session.begin():
        assert target_state.release(session, "out", now=world.clock(), by="op")
    world.run(dispatcher)
    assert world.row(job).state == "succeeded"
    assert [e.kind for e in world.events("target.held") + world.events("target.released")] == [
        "target.held",
        "target.released",
    ]


def test_multi_target_job_does_not_resend_to_a_target_that_has_it(world: World) -> None:
    world.outbox.mkdir()
    world.store(2)
    job = world.job(target=None, targets=("out", "second"))
    dispatcher = world.dispatcher(world.config())
    world.run(dispatcher)
    row = world.row(job)
    assert row.state == "queued"
    assert row.details["delivered_to"] == ["out"]
    world.second.mkdir()
    world.clock.advance(10)
    world.run(dispatcher)
    assert world.row(job).state == "succeeded"
    with Session(world.engine) as session:
        per_target = dict(
            session.execute(
                select(JobAttemptRow.target, func.count()).group_by(JobAttemptRow.target)
            ).all()
        )
    assert per_target == {"out": 1, "second": 2}


def test_unsupported_target_type_waits_and_says_why(world: World) -> None:
    world.store(1)
    job = world.job(target="gone")
    dispatcher = world.dispatcher(world.config())
    assert "gone" in dispatcher.unusable
    assert "not supported" in dispatcher.unusable["gone"]
    assert world.run(dispatcher) == 0
    assert world.row(job).state == "queued"


def test_missing_spool_file_fails_that_instance_permanently(world: World) -> None:
    world.outbox.mkdir()
    uids = world.store(2)
    with Session(world.engine) as session:
        path = session.get(InstanceRow, uids[0])
        assert path is not None
        world.spool.absolute(path.path).unlink()
    job = world.job()
    dispatcher = world.dispatcher(world.config())
    world.run(dispatcher)
    row = world.row(job)
    assert row.state == "failed"
    assert "missing from the spool" in (row.last_error or "")
    with Session(world.engine) as session:
        failed = session.get(DeliveryRow, (job, "out", uids[0]))
        assert failed is not None
        assert failed.status == "failed"


def test_an_expired_lease_is_taken_over_by_another_dispatcher(world: World) -> None:
    world.outbox.mkdir()
    world.store(2)
    job = world.job()
    with Session(world.engine) as session, session.begin():  # a dispatcher that died mid-send
        session.execute(
            update(JobRow)
            .where(JobRow.id == job)
            .values(
                state="running",
                lease_owner="dead",
                lease_expires_at=world.clock() + timedelta(seconds=60),
                attempts=1,
            )
        )
    dispatcher = world.dispatcher(world.config(), owner="d2")
    assert world.run(dispatcher) == 0  # the lease still holds
    world.clock.advance(61)
    assert world.run(dispatcher) == 1
    row = world.row(job)
    assert (row.state, row.attempts) == ("succeeded", 2)
