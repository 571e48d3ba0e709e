"""End to end: real DICOM senders (DCMTK, pynetdicom, Orthanc) into a running `mercury serve`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import create_engine, select

from mercury.dicom.file_meta import split_file
from mercury.store.models import EventRow, InstanceRow, SeriesRow, StudyRow
from tests.conftest import MercuryProcess
from tests.helpers import (
    free_port,
    make_ct_series,
    make_small_images,
    port_open,
    storescu,
    wait_for,
)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_ct_series(tmp_path_factory.mktemp("ct"), 300)


@pytest.fixture(scope="session")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_small_images(tmp_path_factory.mktemp("small"), 2000, per_series=100)


def _engine(mercury: MercuryProcess):  # type: ignore[no-untyped-def]
    return create_engine(f"sqlite:///{mercury.config.parent / 'mercury.db'}")


def assert_stored_identically(mercury: MercuryProcess, files: list[Path]) -> None:
    """Every file's dataset is in the spool byte for byte, and indexed at that path."""
    engine = _engine(mercury)
    with engine.connect() as conn:
        rows = {r.sop_instance_uid: r for r in conn.execute(select(InstanceRow))}
    engine.dispose()
    for path in files:
        original = path.read_bytes()
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert uid in rows, f"{path.name} ({uid}) not indexed"
        stored = (mercury.config.parent / "spool" / rows[uid].path).read_bytes()
        assert split_file(stored)[1] == split_file(original)[1], f"{path.name} differs"
        assert rows[uid].size == len(stored)


def test_ct_series_stored_byte_identical(mercury: MercuryProcess, ct_series: list[Path]) -> None:
    result = storescu(ct_series, mercury.port)
    assert result.returncode == 0, result.stderr
    assert_stored_identically(mercury, ct_series)
    engine = _engine(mercury)
    with engine.connect() as conn:
        series = conn.execute(select(SeriesRow)).one()
        study = conn.execute(select(StudyRow)).one()
    engine.dispose()
    assert series.instance_count == 300
    assert series.modality == "CT"
    assert series.tags["SeriesDescription"] == "CT Thorax 1mm"
    assert series.tags["SliceThickness"] == "1.0"
    assert series.tags["ImageType"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert series.tags["SenderAET"] == "STORESCU"
    assert series.tags["ReceiverAET"] == "MERCURY"
    assert series.tags["SenderAddress"] == "127.0.0.1"
    assert (study.patient_id, study.accession_number, study.instance_count) == (
        "MRN0001",
        "ACC0001",
        300,
    )
    # Not one of mercure's tags, read for the index all the same (search by study date).
    assert study.study_date == "20260101"
    assert "StudyDate" not in series.tags


def test_two_thousand_small_images(mercury: MercuryProcess, small_images: list[Path]) -> None:
    result = storescu(small_images, mercury.port, aec="MERCURY2")
    assert result.returncode == 0, result.stderr
    assert_stored_identically(mercury, small_images)
    engine = _engine(mercury)
    with engine.connect() as conn:
        counts = sorted(r.instance_count for r in conn.execute(select(SeriesRow)))
    engine.dispose()
    assert counts == [100] * 20


def test_echo(mercury: MercuryProcess) -> None:
    result = subprocess.run(
        ["echoscu", "-aec", "MERCURY", "127.0.0.1", str(mercury.port)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


COMPRESSED = [
    "693_J2KI.dcm",  # JPEG 2000
    "GDCMJ2K_TextGBR.dcm",  # JPEG 2000 lossless
    "JPEG-lossy.dcm",  # JPEG extended
    "SC_rgb_dcmtk_+eb+cr.dcm",  # JPEG baseline
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_RLE.dcm",  # RLE; the same SOP Instance UID as JPEG-lossy: the newest is kept
]


def _dcmsend(port: int, path: Path) -> None:
    result = subprocess.run(
        ["dcmsend", "-aec", "MERCURY", "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK's own SCP in bit-preserving mode: dcmsend may re-encode a file (it drops
    trailing padding), so what storescp +B writes, not the file, is what was sent."""
    folder = tmp_path / "storescp"
    folder.mkdir()
    port = free_port()
    scp = subprocess.Popen(
        ["storescp", "+xa", "+B", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), 10, "storescp to listen")
        yield port, folder
    finally:
        scp.terminate()
        scp.wait(10)


def test_compressed_transfer_syntaxes_stored_unchanged(
    mercury: MercuryProcess, storescp: tuple[int, Path]
) -> None:
    scp_port, scp_folder = storescp
    syntaxes = set()
    for name in COMPRESSED:
        path = Path(str(get_testdata_file(name)))
        header = pydicom.dcmread(path, stop_before_pixels=True)
        syntaxes.add(str(header.file_meta.TransferSyntaxUID))
        _dcmsend(scp_port, path)
        (written,) = scp_folder.iterdir()
        sent = split_file(written.read_bytes())[1]
        written.unlink()
        _dcmsend(mercury.port, path)
        engine = _engine(mercury)
        with engine.connect() as conn:
            row = conn.execute(
                select(InstanceRow).where(InstanceRow.sop_instance_uid == header.SOPInstanceUID)
            ).one()
        engine.dispose()
        stored = (mercury.config.parent / "spool" / row.path).read_bytes()
        assert split_file(stored)[1] == sent, f"{name} is not stored as it was sent"
        assert row.transfer_syntax == header.file_meta.TransferSyntaxUID
    assert len(syntaxes) == 7


@pytest.fixture
def postgres_mercury(tmp_path: Path, pg_url: str) -> Iterator[MercuryProcess]:
    from tests.conftest import write_config
    from tests.helpers import free_port

    port = free_port()
    process = MercuryProcess(write_config(tmp_path, port, database=pg_url), port)
    process.start()
    yield process
    process.stop()


def test_receive_into_postgresql(
    postgres_mercury: MercuryProcess, small_images: list[Path], pg_url: str
) -> None:
    files = small_images[:300]
    result = storescu(files, postgres_mercury.port)
    assert result.returncode == 0, result.stderr
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))

    def kinds() -> list[str]:
        with engine.connect() as conn:
            return list(conn.execute(select(EventRow.kind)).scalars())

    with engine.connect() as conn:
        stored = {r.sop_instance_uid for r in conn.execute(select(InstanceRow.sop_instance_uid))}
    assert stored == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    wait_for(lambda: "association.closed" in kinds(), 30, "the association's end in the journal")
    engine.dispose()
