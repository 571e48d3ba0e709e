"""End to end with real processes: storescu -> `mercury serve` (receiver, router,
dispatcher) -> a folder, DCMTK's storescp and Orthanc; and `mercury serve` killed with
SIGKILL in the middle of a send, then restarted: every instance still arrives."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import create_engine, select

from mercury.store.delivery_models import DeliveryRow
from mercury.store.models import JobRow
from tests.conftest import MercuryProcess, write_config
from tests.helpers import free_port, make_small_images, port_open, storescu, wait_for
from tests.peers import Orthanc


def _same_dataset(a: Path, b: Path) -> bool:
    """Every data element equal, pixel data included (the sender may have chosen another
    transfer syntax on the way in, so the files' bytes may legitimately differ)."""
    return bool(pydicom.dcmread(a) == pydicom.dcmread(b))


def _start(tmp_path: Path, extra: str) -> MercuryProcess:
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + extra)
    mercury = MercuryProcess(config, port)
    mercury.start()
    return mercury


def _jobs(tmp_path: Path) -> list[JobRow]:
    engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(JobRow).where(JobRow.kind == "dispatch")))
    finally:
        engine.dispose()


def test_storescu_to_mercury_to_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    mercury = _start(
        tmp_path,
        f"""
targets:
  share: {{target_type: folder, folder: "{outbox}"}}
rules:
  all:
    rule: "True"
    target: share
    series_complete_on: [association_end]
""",
    )
    try:
        files = make_small_images(tmp_path / "img", 12, per_series=12)
        assert storescu(files, mercury.port).returncode == 0
        marker = wait_for(
            lambda: next(outbox.glob("*/.complete"), None), 60, "the job folder to complete"
        )
        delivered = sorted(p for p in marker.parent.iterdir() if p.suffix == ".dcm")
        assert len(delivered) == 12
        spooled = {p.name.removesuffix(".dcm"): p for p in (tmp_path / "spool").rglob("*.dcm")}
        originals = {pydicom.dcmread(f).SOPInstanceUID: f for f in files}
        for path in delivered:
            uid = path.name.split("#")[1].removesuffix(".dcm")
            assert _same_dataset(path, originals[uid])
            assert path.read_bytes() == spooled[uid].read_bytes()  # exactly what was stored
        job = wait_for(
            lambda: [j for j in _jobs(tmp_path) if j.state == "succeeded"], 30, "job succeeded"
        )
        assert job[0].target == "share"
    finally:
        mercury.stop()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    received = tmp_path / "storescp"
    received.mkdir()
    proc = subprocess.Popen(
        ["storescp", "-aet", "PACS", "-od", str(received), "+B", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), 30, "storescp to listen")
        yield port, received
    finally:
        proc.terminate()
        proc.wait(30)


def test_relay_to_storescp_keeps_every_byte_and_records_delivery(
    tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    port, received = storescp
    mercury = _start(
        tmp_path,
        f"""
targets:
  pacs: {{target_type: dicom, ip: 127.0.0.1, port: {port}, aet_target: PACS}}
rules:
  all:
    rule: "True"
    target: pacs
    series_complete_on: [association_end]
""",
    )
    try:
        files = make_small_images(tmp_path / "img", 20, per_series=20)
        assert storescu(files, mercury.port).returncode == 0
        wait_for(lambda: [j for j in _jobs(tmp_path) if j.state == "succeeded"], 60, "delivery")
        arrived = {pydicom.dcmread(p).SOPInstanceUID: p for p in received.iterdir()}
        originals = {pydicom.dcmread(f).SOPInstanceUID: f for f in files}
        assert set(arrived) == set(originals)
        for uid, path in originals.items():
            assert _same_dataset(arrived[uid], path)
        engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
        with engine.connect() as conn:
            statuses = {row.status for row in conn.execute(select(DeliveryRow))}
            count = len(conn.execute(select(DeliveryRow)).all())
        engine.dispose()
        assert (statuses, count) == ({"sent"}, 20)
    finally:
        mercury.stop()


def test_sigkill_mid_send_then_restart_delivers_everything(tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc")
    orthanc.start()
    config = f"""
dispatch: {{lease: 2}}
targets:
  pacs: {{target_type: dicom, ip: 127.0.0.1, port: {orthanc.dicom_port}, aet_target: ORTHANC}}
rules:
  all:
    rule: "True"
    target: pacs
    series_complete_on: [association_end]
"""
    mercury = _start(tmp_path, config)
    try:
        files = make_small_images(tmp_path / "img", 150, per_series=150)
        assert storescu(files, mercury.port).returncode == 0

        def stored() -> int:
            return int(orthanc.get("/statistics")["CountInstances"])

        wait_for(lambda: stored() >= 5, 60, "the dispatcher to start sending to Orthanc")
        mercury.kill()
        at_kill = stored()
        running = [j for j in _jobs(tmp_path) if j.state == "running"]
        assert at_kill < 150, "the send finished before the kill; nothing was tested"
        assert len(running) == 1, "the job should be left running with a lease"

        mercury.start()
        wait_for(
            lambda: [j for j in _jobs(tmp_path) if j.state == "succeeded"],
            120,
            "the job to be taken over and delivered after the restart",
        )
        job = _jobs(tmp_path)[0]
        assert job.attempts == 2
        sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        in_orthanc = {
            orthanc.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
            for i in orthanc.get("/instances")
        }
        assert in_orthanc == sent
    finally:
        mercury.stop()
        orthanc.stop()


def test_storage_commitment_is_recorded_per_instance(tmp_path: Path) -> None:
    commitment_port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc", modalities={"mercury": ["MERCURY", "127.0.0.1", commitment_port]}
    )
    orthanc.start()
    mercury = _start(
        tmp_path,
        f"""
dispatch: {{storage_commitment_port: {commitment_port}}}
targets:
  pacs:
    target_type: dicom
    ip: 127.0.0.1
    port: {orthanc.dicom_port}
    aet_target: ORTHANC
    storage_commitment: true
    commitment_timeout: 30
rules:
  all:
    rule: "True"
    target: pacs
    series_complete_on: [association_end]
""",
    )
    try:
        files = make_small_images(tmp_path / "img", 4, per_series=4)
        assert storescu(files, mercury.port).returncode == 0
        wait_for(lambda: [j for j in _jobs(tmp_path) if j.state == "succeeded"], 90, "delivery")
        engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
        with engine.connect() as conn:
            rows = conn.execute(select(DeliveryRow)).all()
        engine.dispose()
        assert len(rows) == 4
        assert {(row.status, row.commitment) for row in rows} == {("sent", "committed")}
    finally:
        mercury.stop()
        orthanc.stop()
