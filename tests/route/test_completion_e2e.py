"""Series completion end to end against a real `mercury serve`: the quiet period with a
sender that pauses, the expected count with the association held open, and a restart while
a series is pending (SIGKILL, then back after longer than the quiet period)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from mercury.route.completion import aware
from mercury.store.models import (
    DecisionRow,
    EventRow,
    InstanceRow,
    JobInstanceRow,
    JobRow,
    SeriesRow,
    utcnow,
)
from tests.conftest import MercuryProcess, write_config
from tests.helpers import (
    SECONDARY_CAPTURE,
    free_port,
    make_small_images,
    port_open,
    storescu,
    wait_for,
)

QUIET = 4  # seconds: timings.series_complete_trigger for these tests
RULES = f"""
timings:
  series_complete_trigger: {QUIET}
targets:
  pacs: {{target_type: dummy}}
rules:
  counted:
    rule: "tags.SeriesDescription.startswith('Counted')"
    target: pacs
    series_complete_on: [expected_count]
  everything_else:
    rule: "not tags.SeriesDescription.startswith('Counted')"
    target: pacs
"""


class Running:
    """A mercury process with the rules above, and its index."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        config = write_config(folder, self.port)
        config.write_text(config.read_text() + RULES)
        self.process = MercuryProcess(config, self.port)
        self.engine: Engine = create_engine(f"sqlite:///{folder / 'mercury.db'}")

    def series(self, uid: str) -> SeriesRow | None:
        with Session(self.engine) as session:
            return session.get(SeriesRow, uid)

    def indexed(self, uid: str) -> int:
        row = self.series(uid)
        return row.instance_count if row is not None else 0

    def decisions(self, uid: str) -> list[DecisionRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(DecisionRow).where(DecisionRow.series_uid == uid)))

    def job_instances(self, uid: str) -> set[str]:
        with Session(self.engine) as session:
            [job] = session.scalars(select(JobRow).where(JobRow.series_uid == uid))
            return set(
                session.scalars(
                    select(JobInstanceRow.sop_instance_uid).where(JobInstanceRow.job_id == job.id)
                )
            )

    def completed_events(self, uid: str) -> list[EventRow]:
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(EventRow).where(
                        EventRow.kind == "series.completed", EventRow.series_uid == uid
                    )
                )
            )

    def stored_uids(self, uid: str) -> set[str]:
        with Session(self.engine) as session:
            return set(
                session.scalars(
                    select(InstanceRow.sop_instance_uid).where(InstanceRow.series_uid == uid)
                )
            )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    server = Running(tmp_path)
    server.process.start()
    try:
        yield server
    finally:
        server.process.stop()
        server.engine.dispose()


def series_files(folder: Path, count: int, description: str) -> tuple[list[Path], str, set[str]]:
    """``count`` images of one series: the files, the series UID, the SOP Instance UIDs."""
    files = make_small_images(folder, count, per_series=count)
    uids: set[str] = set()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = description
        ds.save_as(path)
        uids.add(str(ds.SOPInstanceUID))
    return files, str(pydicom.dcmread(files[0]).SeriesInstanceUID), uids


def send(files: list[Path], port: int) -> None:
    result = storescu(files, port)
    assert result.returncode == 0, result.stderr


def test_quiet_period_survives_a_sender_pause(running: Running, tmp_path: Path) -> None:
    files, series_uid, uids = series_files(tmp_path / "img", 6, "Slow sender")
    send(files[:3], running.port)
    wait_for(lambda: running.indexed(series_uid) == 3, 30, "the first three images indexed")
    time.sleep(QUIET / 4)  # the sender pauses, for less than the quiet period
    pending = running.series(series_uid)
    assert pending is not None
    assert (pending.state, pending.completed_at) == ("receiving", None)
    assert running.decisions(series_uid) == []
    send(files[3:], running.port)

    [decision] = wait_for(lambda: running.decisions(series_uid), 30, "the routing decision")
    assert decision.reason == "quiet"
    assert decision.details["instances"] == 6
    assert running.job_instances(series_uid) == uids  # one job with every image
    done = running.series(series_uid)
    assert done is not None
    assert (done.state, done.completion_reason) == ("routed", "quiet")
    [event] = running.completed_events(series_uid)
    assert event.details["reason"] == "quiet"


def send_held_open(files: list[Path], port: int, while_open: Callable[[], None]) -> None:
    """Send with pynetdicom, run ``while_open`` with the association still established,
    then release it."""
    from pynetdicom import AE

    ae = AE(ae_title="HOLDER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", port, ae_title="MERCURY")
    assert association.is_established
    try:
        for path in files:
            status = association.send_c_store(pydicom.dcmread(path))
            assert status.Status == 0x0000
        while_open()
        assert association.is_established
    finally:
        association.release()


def test_expected_count_completes_on_the_last_image(running: Running, tmp_path: Path) -> None:
    files, series_uid, uids = series_files(tmp_path / "img", 5, "Counted series")
    for path in files:
        ds = pydicom.dcmread(path)
        ds.NumberOfSeriesRelatedInstances = len(files)
        ds.save_as(path)
    seen: list[DecisionRow] = []

    def routed_while_open() -> None:
        seen.extend(wait_for(lambda: running.decisions(series_uid), 30, "the routing decision"))

    send_held_open(files, running.port, routed_while_open)
    [decision] = seen
    assert decision.reason == "expected_count"
    assert running.job_instances(series_uid) == uids
    assert running.completed_events(series_uid)[0].details["reason"] == "expected_count"


def test_restart_completes_a_pending_series_by_its_own_time(tmp_path: Path) -> None:
    server = Running(tmp_path)
    server.process.start()
    try:
        files, series_uid, uids = series_files(tmp_path / "img", 6, "Before the crash")
        send(files, server.port)
        wait_for(lambda: server.indexed(series_uid) == 6, 30, "the series indexed")
        server.process.kill()  # SIGKILL while the series waits for its quiet period
        pending = server.series(series_uid)
        assert pending is not None
        assert (pending.state, pending.completed_at) == ("receiving", None)
        assert server.stored_uids(series_uid) == uids
        last = aware(pending.last_received_at)

        # Down for longer than the quiet period (measured on the index's own timestamp).
        wait_for(
            lambda: utcnow() - last > timedelta(seconds=QUIET + 0.5),
            QUIET + 30,
            "the quiet period to pass while mercury is down",
        )
        server.process.start()
        listening = utcnow()
        assert port_open(server.port)

        [decision] = wait_for(lambda: server.decisions(series_uid), 30, "the routing decision")
        done = server.series(series_uid)
        assert done is not None
        assert (done.state, done.completion_reason, decision.reason) == ("routed", "quiet", "quiet")
        [event] = server.completed_events(series_uid)
        assert event.details["reason"] == "quiet"
        assert server.job_instances(series_uid) == uids
        # Completed on the first scans after the restart, not a new quiet period counted from
        # the restart (that would be at least QUIET seconds after mercury listened again).
        assert done.completed_at is not None
        assert aware(done.completed_at) < listening + timedelta(seconds=QUIET / 2)
    finally:
        server.process.stop()
        server.engine.dispose()
