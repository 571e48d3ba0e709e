"""Orthanc, a real PACS, as a sender: C-STORE from its REST API into mercury."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import create_engine, select

from mercury.store.models import InstanceRow, SeriesRow
from tests.conftest import MercuryProcess
from tests.helpers import make_ct_series
from tests.peers import Orthanc


@pytest.fixture
def orthanc(tmp_path: Path, mercury: MercuryProcess) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path / "orthanc", {"mercury": ["MERCURY", "127.0.0.1", mercury.port]})
    server.start()
    yield server
    server.stop()


def test_orthanc_pushes_a_series(orthanc: Orthanc, mercury: MercuryProcess, tmp_path: Path) -> None:
    files = make_ct_series(tmp_path / "ct", 20, rows=256, columns=256)
    ids = [orthanc.post("/instances", f.read_bytes())["ID"] for f in files]
    job = orthanc.post("/modalities/mercury/store", {"Resources": ids, "Synchronous": True})
    assert job["FailedInstancesCount"] == 0, job
    engine = create_engine(f"sqlite:///{mercury.config.parent / 'mercury.db'}")
    with engine.connect() as conn:
        uids = set(conn.execute(select(InstanceRow.sop_instance_uid)).scalars())
        series = conn.execute(select(SeriesRow)).one()
    engine.dispose()
    assert uids == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert series.tags["SenderAET"] == "ORTHANC"
    assert series.instance_count == 20
