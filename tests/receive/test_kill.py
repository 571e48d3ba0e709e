"""SIGKILL the receiver mid-stream, restart it: every acknowledged instance is there, intact."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
from pynetdicom import AE
from sqlalchemy import create_engine, select

from mercury.dicom.file_meta import split_file
from mercury.store.models import AssociationRow, InstanceRow
from tests.conftest import MercuryProcess, write_config
from tests.helpers import SECONDARY_CAPTURE, free_port, make_small_images, wait_for


class StubbornSender(threading.Thread):
    """Sends every file until it is acknowledged, reconnecting whenever the receiver vanishes."""

    def __init__(self, port: int, files: list[Path]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.files = files
        self.acknowledged: list[Path] = []
        self.failures = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _run(self) -> None:
        ae = AE(ae_title="STUBBORN")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(SECONDARY_CAPTURE, "1.2.840.10008.1.2.1")
        pending = list(self.files)
        assoc = None
        while pending:
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", self.port, ae_title="MERCURY")
                if not assoc.is_established:
                    self.failures += 1
                    assoc = None
                    time.sleep(0.05)  # pacing reconnects while the receiver restarts
                    continue
            status = assoc.send_c_store(str(pending[0]))
            if status and int(status.Status) == 0:
                self.acknowledged.append(pending.pop(0))
            else:
                self.failures += 1
        assert assoc is not None
        assoc.release()


def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    files = make_small_images(tmp_path / "source", 900, per_series=300, size=128)
    port = free_port()
    config = write_config(tmp_path, port)
    mercury = MercuryProcess(config, port)
    mercury.start()
    sender = StubbornSender(port, files)
    sender.start()
    try:
        for kill_after in (150, 400, 650):
            wait_for(
                lambda n=kill_after: len(sender.acknowledged) >= n or sender.error,
                120,
                f"{kill_after} acknowledgements",
            )
            mercury.kill()
            leftovers = list((tmp_path / "spool" / "tmp").iterdir())
            mercury.start()
            # a restart removes unfinished temp files; none is ever taken for data
            assert not any(path.exists() for path in leftovers)
        sender.join(300)
        assert not sender.is_alive()
        assert sender.error is None, sender.error
    finally:
        mercury.stop()
    assert sender.failures > 0, "the kills never interrupted the sender"
    assert len(sender.acknowledged) == len(files)

    engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    with engine.connect() as conn:
        rows = {r.sop_instance_uid: r for r in conn.execute(select(InstanceRow))}
        open_associations = conn.execute(
            select(AssociationRow).where(AssociationRow.ended_at.is_(None))
        ).all()
    engine.dispose()
    assert open_associations == []
    for path in sender.acknowledged:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert uid in rows, f"acknowledged {path.name} is not in the index"
        stored = (tmp_path / "spool" / rows[uid].path).read_bytes()
        assert split_file(stored)[1] == split_file(path.read_bytes())[1]
    # and no index row points at a missing or partial file
    for row in rows.values():
        assert (tmp_path / "spool" / row.path).stat().st_size == row.size
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []
