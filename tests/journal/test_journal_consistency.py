"""The journal is written in the transaction of the state change it describes: after
`kill -9` at random points during a load, every committed transition has its event and
no event describes a transition that did not commit."""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select

from mercury.store.delivery_models import JobAttemptRow
from mercury.store.models import DecisionRow, EventRow, JobRow, SeriesRow
from tests.conftest import MercuryProcess, write_config
from tests.helpers import free_port, make_small_images, storescu, wait_for

RULES = """
targets:
  share: {{target_type: folder, folder: "{outbox}"}}
rules:
  all:
    rule: "True"
    target: share
    series_complete_on: [association_end]
dispatch: {{lease: 2}}
"""


def _violations(engine: Engine) -> list[str]:
    problems: list[str] = []
    with engine.connect() as conn:
        events = list(conn.execute(select(EventRow)))
        by_kind: dict[str, list[EventRow]] = {}
        for event in events:
            by_kind.setdefault(event.kind, []).append(event)

        received = Counter(e.series_uid for e in by_kind.get("series.received", []))
        for (uid,) in conn.execute(select(SeriesRow.series_uid)):
            if received[uid] != 1:
                problems.append(f"series {uid}: {received[uid]} series.received events")
        series_uids = {uid for (uid,) in conn.execute(select(SeriesRow.series_uid))}
        for uid in received:
            if uid not in series_uids:
                problems.append(f"series.received for {uid}, which is not in the index")

        decided = Counter(
            uid
            for (uid,) in conn.execute(
                select(DecisionRow.series_uid).where(DecisionRow.scope == "series")
            )
        )
        routed = Counter(
            e.series_uid
            for kind in ("series.routed", "series.discarded")
            for e in by_kind.get(kind, [])
        )
        if decided != routed:
            problems.append(f"decisions {dict(decided)} != routing events {dict(routed)}")

        jobs = {job.id: job for job in conn.execute(select(JobRow))}
        claimed = Counter(e.details.get("job") for e in by_kind.get("job.claimed", []))
        succeeded = Counter(e.details.get("job") for e in by_kind.get("job.succeeded", []))
        for job_id, job in jobs.items():
            if claimed[job_id] != job.attempts:
                problems.append(f"job {job_id}: {job.attempts} attempts, {claimed[job_id]} claims")
            expected = 1 if job.state == "succeeded" else 0
            if succeeded[job_id] != expected:
                problems.append(f"job {job_id} is {job.state}: {succeeded[job_id]} job.succeeded")
        for job_id in set(claimed) | set(succeeded):
            if job_id not in jobs:
                problems.append(f"events for job {job_id}, which does not exist")

        attempts = Counter(job_id for (job_id,) in conn.execute(select(JobAttemptRow.job_id)))
        sends = Counter(
            e.details.get("job")
            for kind in ("dispatch.sent", "dispatch.failed")
            for e in by_kind.get(kind, [])
        )
        if attempts != sends:
            problems.append(f"attempt rows {dict(attempts)} != send events {dict(sends)}")
    return problems


def test_journal_matches_state_after_kill_9_during_load(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + RULES.format(outbox=outbox))
    mercury = MercuryProcess(config, port)
    mercury.start()
    engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    files = make_small_images(tmp_path / "img", 240, per_series=20, size=32)
    batches = [files[i : i + 20] for i in range(0, 240, 20)]
    delivered: set[int] = set()
    stop = threading.Event()

    def load() -> None:
        """Send each series until the sender saw it accepted (a kill breaks the send)."""
        for index, batch in enumerate(batches):
            while not stop.is_set():
                if storescu(batch, port, timeout=60).returncode == 0:
                    delivered.add(index)
                    break
                wait_for(lambda: mercury.proc is not None and mercury.proc.poll() is None, 60)

    sender = threading.Thread(target=load)
    sender.start()
    rng = random.Random(20261125)
    try:
        for _ in range(3):
            with engine.connect() as conn:
                before = conn.execute(select(func.count()).select_from(EventRow)).scalar_one()
            # kill somewhere in the middle of the work: after a random amount of progress
            target = before + rng.randint(5, 40)
            wait_for(lambda t=target: _count_events(engine) >= t, 60, "progress before the kill")
            mercury.kill()
            assert _violations(engine) == []
            mercury.start()
        sender.join(300)
        assert delivered == set(range(len(batches)))
        wait_for(lambda: _all_done(engine, len(batches)), 120, "every series routed and delivered")
        assert _violations(engine) == []
    finally:
        stop.set()
        sender.join(60)
        mercury.stop()
        engine.dispose()


def _count_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EventRow)).scalar_one())


def _all_done(engine: Engine, series: int) -> bool:
    with engine.connect() as conn:
        states = Counter(state for (state,) in conn.execute(select(JobRow.state)))
        routed = conn.execute(
            select(func.count(func.distinct(DecisionRow.series_uid)))
        ).scalar_one()
    return (
        routed == series and states.get("succeeded", 0) >= series and set(states) == {"succeeded"}
    )
