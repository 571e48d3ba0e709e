"""Jobs with leases on SQLite and PostgreSQL: claim, take over an expired lease, the 2:1
urgent/normal interleave and the off-peak window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from mercury.store.db import make_engine, upgrade
from mercury.store.jobs import (
    Claimer,
    JobSpec,
    create_jobs,
    finish_job,
    in_window,
    job_instances,
    renew_lease,
    retry_later,
)
from mercury.store.models import JobRow

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def sessions(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    upgrade(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def spec(priority: str = "normal", target: str = "pacs") -> JobSpec:
    return JobSpec(
        kind="dispatch",
        rule="r",
        scope="series",
        study_uid="1.2",
        series_uid="1.2.3",
        instances=["1.2.3.1", "1.2.3.2"],
        priority=priority,  # type: ignore[arg-type]
        target=target,
    )


def test_create_and_claim_once(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        [job_id] = create_jobs(session, [spec()], now=T0, decision_id=None)
    a, b = Claimer("dispatch", "a"), Claimer("dispatch", "b")
    with sessions.begin() as session:
        [job] = a.claim(session, now=T0, offpeak_open=False)
        assert (job.id, job.state, job.lease_owner, job.attempts) == (job_id, "running", "a", 1)
    with sessions.begin() as session:
        assert b.claim(session, now=T0 + timedelta(minutes=1), offpeak_open=False) == []
        assert job_instances(session, job_id) == ["1.2.3.1", "1.2.3.2"]


def test_expired_lease_is_taken_over(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        [job_id] = create_jobs(session, [spec()], now=T0, decision_id=None)
    dead, alive = Claimer("dispatch", "dead"), Claimer("dispatch", "alive")
    with sessions.begin() as session:
        dead.claim(session, now=T0, offpeak_open=False)
    later = T0 + dead.lease + timedelta(seconds=1)
    with sessions.begin() as session:
        [job] = alive.claim(session, now=later, offpeak_open=False)
        assert (job.lease_owner, job.attempts) == ("alive", 2)
    with sessions.begin() as session:
        # The old owner can no longer renew or finish it.
        assert not renew_lease(session, job_id, "dead", now=later, lease=dead.lease)
        assert not finish_job(session, job_id, "dead", now=later, state="succeeded")
        assert finish_job(session, job_id, "alive", now=later, state="succeeded")
        assert session.get(JobRow, job_id).state == "succeeded"  # type: ignore[union-attr]


def test_retry_later_waits_for_its_time(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        [job_id] = create_jobs(session, [spec()], now=T0, decision_id=None)
    claimer = Claimer("dispatch", "a")
    with sessions.begin() as session:
        claimer.claim(session, now=T0, offpeak_open=False)
        retry_later(session, job_id, "a", now=T0, at=T0 + timedelta(minutes=10), error="down")
    with sessions.begin() as session:
        assert claimer.claim(session, now=T0 + timedelta(minutes=5), offpeak_open=False) == []
        [job] = claimer.claim(session, now=T0 + timedelta(minutes=10), offpeak_open=False)
        assert job.last_error == "down"


def test_urgent_and_normal_interleave_two_to_one(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        create_jobs(
            session,
            [spec("urgent", f"u{i}") for i in range(6)]
            + [spec("normal", f"n{i}") for i in range(6)],
            now=T0,
            decision_id=None,
        )
    claimer = Claimer("dispatch", "a")
    with sessions.begin() as session:
        jobs = claimer.claim(session, now=T0, offpeak_open=False, limit=9)
    assert [j.priority for j in jobs] == ["urgent", "urgent", "normal"] * 3


def test_offpeak_waits_for_the_window(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        create_jobs(session, [spec("offpeak")], now=T0, decision_id=None)
    claimer = Claimer("dispatch", "a")
    with sessions.begin() as session:
        assert claimer.claim(session, now=T0, offpeak_open=False) == []
        assert len(claimer.claim(session, now=T0, offpeak_open=True)) == 1
        assert session.scalars(select(JobRow.state)).one() == "running"


@pytest.mark.parametrize(
    ("clock", "start", "end", "inside"),
    [
        ("23:00", "22:00", "06:00", True),
        ("05:59", "22:00", "06:00", True),
        ("06:00", "22:00", "06:00", False),
        ("12:00", "22:00", "06:00", False),
        ("12:00", "09:00", "17:00", True),
        ("17:00", "09:00", "17:00", False),
    ],
)
def test_offpeak_window(clock: str, start: str, end: str, inside: bool) -> None:
    hours, minutes = map(int, clock.split(":"))
    assert in_window(T0.replace(hour=hours, minute=minutes), start, end) is inside
