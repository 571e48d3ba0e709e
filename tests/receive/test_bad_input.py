"""Bad input gets the right DICOM status, a journal entry, and the receiver keeps serving."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy import create_engine, select

from mercury.dicom.net import dimse, pdu
from mercury.store.models import EventRow, InstanceRow
from tests.conftest import MercuryProcess, write_config
from tests.helpers import SECONDARY_CAPTURE, free_port, make_ct_series, storescu, wait_for
from tests.net.netsupport import RawPeer


def journal(mercury: MercuryProcess, kind: str) -> list[Any]:
    engine = create_engine(f"sqlite:///{mercury.config.parent / 'mercury.db'}")
    with engine.connect() as conn:
        rows = list(
            conn.execute(select(EventRow).where(EventRow.kind == kind).order_by(EventRow.id))
        )
    engine.dispose()
    return rows


def stored_uids(mercury: MercuryProcess) -> set[str]:
    engine = create_engine(f"sqlite:///{mercury.config.parent / 'mercury.db'}")
    with engine.connect() as conn:
        uids = set(conn.execute(select(InstanceRow.sop_instance_uid)).scalars())
    engine.dispose()
    return uids


def still_serves(mercury: MercuryProcess) -> None:
    result = subprocess.run(
        ["echoscu", "-aec", "MERCURY", "127.0.0.1", str(mercury.port)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, f"receiver stopped serving: {result.stderr}"


def good_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Bad^Input"
    ds.Modality = "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def send_datasets(port: int, items: list[Dataset | str], ae_title: str = "MERCURY") -> list[int]:
    """Send datasets (or paths of raw files) with pynetdicom; return each response status."""
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    statuses = []
    for item in items:
        status = assoc.send_c_store(item)
        statuses.append(int(status.Status))
    assoc.release()
    return statuses


def raw_store(port: int, sop_instance_uid: str, data: bytes) -> int:
    """One C-STORE of arbitrary dataset bytes (explicit VR little endian), bypassing any
    SCU-side checks; returns the status on the wire."""
    with RawPeer(port) as peer:
        peer.associate([(1, SECONDARY_CAPTURE, (ExplicitVRLittleEndian,))])
        command = dimse.encode_request(
            dimse.C_STORE_RQ,
            1,
            sop_class_uid=SECONDARY_CAPTURE,
            sop_instance_uid=sop_instance_uid,
            priority=0,
            has_data_set=True,
        )
        peer.send_message(1, command, data)
        response = dimse.decode_command(peer.recv_command())
        peer.send(pdu.ReleaseRQ().encode())
        peer.expect(pdu.A_RELEASE_RP)
    return response.us(dimse.STATUS)


def test_dataset_that_does_not_parse(mercury: MercuryProcess, tmp_path: Path) -> None:
    uid = generate_uid()
    # A valid start, then an element whose length runs far past the end of the data.
    garbage = b"\x08\x00\x16\x00UI\x04\x001.2\x00" + b"\x10\x00\x10\x00PN\xff\x7fA"
    assert raw_store(mercury.port, uid, garbage) == 0xC000
    events = wait_for(lambda: journal(mercury, "instance.rejected"), 10, "the rejection event")
    assert "0xC000" in events[-1].message
    assert events[-1].severity == "error"
    assert uid not in stored_uids(mercury)
    still_serves(mercury)


@pytest.mark.parametrize(
    ("attribute", "value", "status"),
    [
        ("StudyInstanceUID", None, 0xC001),
        ("SeriesInstanceUID", None, 0xC001),
        ("SeriesInstanceUID", "1.2.840.abc", 0xC002),
        ("StudyInstanceUID", "1.2.03.4", 0xC002),
        ("SeriesInstanceUID", "1." + "2" * 70, 0xC002),
    ],
)
def test_missing_or_invalid_uids(
    mercury: MercuryProcess, attribute: str, value: str | None, status: int
) -> None:
    bad = good_dataset()
    if value is None:
        delattr(bad, attribute)
    else:
        setattr(bad, attribute, value)
    good = good_dataset()
    assert send_datasets(mercury.port, [bad, good]) == [status, 0x0000]
    assert bad.SOPInstanceUID not in stored_uids(mercury)
    assert good.SOPInstanceUID in stored_uids(mercury)
    events = wait_for(lambda: journal(mercury, "instance.rejected"), 10, "the rejection event")
    assert attribute in events[-1].details["reason"]
    assert events[-1].details["status"] == status
    spool_tmp = mercury.config.parent / "spool" / "tmp"
    assert list(spool_tmp.iterdir()) == []
    still_serves(mercury)


def test_unknown_called_ae_is_rejected(mercury: MercuryProcess) -> None:
    ae = AE(ae_title="SOMEONE")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", mercury.port, ae_title="NOT_MERCURY")
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 7)
    events = wait_for(lambda: journal(mercury, "association.rejected"), 10, "the refusal event")
    assert "NOT_MERCURY" in events[-1].message
    assert events[-1].details["cause"] == "called_ae"
    still_serves(mercury)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[MercuryProcess]:
    """A receiver that only accepts CT1 from loopback and STATION2 from 10.0.0.0/8."""
    port = free_port()
    extra = """  allowed_callers:
    - {ae_title: CT1, address: 127.0.0.1}
    - {ae_title: STATION2, address: 10.0.0.0/8}"""
    process = MercuryProcess(write_config(tmp_path, port, receiver_extra=extra), port)
    process.start()
    yield process
    process.stop()


def test_allow_list(guarded: MercuryProcess) -> None:
    for calling in ("INTRUDER", "STATION2"):  # STATION2 is allowed only from 10/8
        result = subprocess.run(
            ["echoscu", "-aet", calling, "-aec", "MERCURY", "127.0.0.1", str(guarded.port)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode != 0
        assert "Calling AE Title Not Recognized" in result.stderr + result.stdout
    events = wait_for(
        lambda: (
            len(journal(guarded, "association.rejected")) == 2
            and journal(guarded, "association.rejected")
        ),
        10,
        "two refusal events",
    )
    assert {e.details["calling_ae"] for e in events} == {"INTRUDER", "STATION2"}
    assert all(e.details["cause"] == "calling_ae" for e in events)
    ok = subprocess.run(
        ["echoscu", "-aet", "CT1", "-aec", "MERCURY", "127.0.0.1", str(guarded.port)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr


@pytest.fixture
def reserved(tmp_path: Path) -> Iterator[MercuryProcess]:
    """A receiver whose free-space reserve is larger than the disk."""
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text().replace("reserve_mb: 0", "reserve_mb: 100000000"))
    process = MercuryProcess(config, port)
    process.start()
    yield process
    process.stop()


def test_below_reserve_refuses_with_a700(reserved: MercuryProcess) -> None:
    ds = good_dataset()
    assert send_datasets(reserved.port, [ds]) == [0xA700]
    events = wait_for(lambda: journal(reserved, "instance.rejected"), 10, "the refusal event")
    assert "reserve" in events[-1].details["reason"]
    assert ds.SOPInstanceUID not in stored_uids(reserved)
    still_serves(reserved)


@pytest.fixture
def tiny_disk_mercury(tmp_path: Path) -> Iterator[MercuryProcess]:
    """A receiver whose spool is a real 8 MiB filesystem."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text().replace(str(tmp_path / "spool"), str(mount / "spool")))
    process = MercuryProcess(config, port)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_refuses_with_a700_and_keeps_what_it_has(
    tiny_disk_mercury: MercuryProcess, tmp_path: Path
) -> None:
    files = make_ct_series(tmp_path / "ct", 40)  # ~21 MB into an 8 MiB disk
    result = storescu(files, tiny_disk_mercury.port, extra=["-v"])
    assert "outofresources" in (result.stdout + result.stderr).lower().replace(" ", "")
    stored = stored_uids(tiny_disk_mercury)
    assert 0 < len(stored) < 40
    events = wait_for(lambda: journal(tiny_disk_mercury, "instance.rejected"), 10, "refusals")
    assert all(e.details["status"] == 0xA700 for e in events)
    spool = tiny_disk_mercury.config.parent / "disk" / "spool"
    assert list((spool / "tmp").iterdir()) == []
    # everything it acknowledged is complete on disk
    import pydicom

    for path in (spool / "data").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID in stored
        assert len(ds.PixelData) == 512 * 512 * 2
    still_serves(tiny_disk_mercury)


def test_uid_mismatch_between_command_and_dataset(mercury: MercuryProcess, tmp_path: Path) -> None:
    ds = good_dataset()
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True)
    assert raw_store(mercury.port, generate_uid(), body.getvalue()) == 0xC003
    assert ds.SOPInstanceUID not in stored_uids(mercury)
    still_serves(mercury)


def test_dataset_without_sop_instance_uid(mercury: MercuryProcess) -> None:
    ds = good_dataset()
    uid = ds.SOPInstanceUID
    del ds.SOPInstanceUID
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True)
    assert raw_store(mercury.port, uid, body.getvalue()) == 0xC001
    events = wait_for(lambda: journal(mercury, "instance.rejected"), 10, "the rejection event")
    assert "SOPInstanceUID" in events[-1].details["reason"]
    assert uid not in stored_uids(mercury)
    still_serves(mercury)


def test_invalid_sop_instance_uid_never_names_a_file(mercury: MercuryProcess) -> None:
    ds = good_dataset()
    ds.SOPInstanceUID = "../../etc/passwd"
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True)
    assert raw_store(mercury.port, "../../etc/passwd", body.getvalue()) == 0xC002
    spool = mercury.config.parent / "spool"
    assert not [p for p in spool.rglob("*") if "passwd" in p.name]
    still_serves(mercury)
