"""The spool: durable writes, UID-only file names, leftovers, a real full disk."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mercury.dicom.file_meta import build_file_meta, split_file
from mercury.store.spool import Spool, SpoolFullError


def test_write_and_prepare(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.prepare() == 0
    (spool.tmp_dir / "dead.part").write_bytes(b"half")
    assert spool.prepare() == 1
    assert list(spool.tmp_dir.iterdir()) == []
    rel = Spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.5")
    size, dirs = spool.write(rel, [b"abc", bytearray(b"def"), memoryview(b"ghi")])
    assert size == 9
    assert spool.absolute(rel).read_bytes() == b"abcdefghi"
    assert spool.absolute(rel).parent in dirs
    # rewriting replaces atomically and leaves no temp file behind
    spool.write(rel, [b"new"])
    assert spool.absolute(rel).read_bytes() == b"new"
    assert list(spool.tmp_dir.iterdir()) == []


@pytest.mark.parametrize(
    "uid", ["../../etc", "1.2/3", "1.2.3\x00", "", "1..2", "01.2", "a.b", "1.2 ", "1" * 65]
)
def test_invalid_uid_never_names_a_file(uid: str) -> None:
    with pytest.raises(ValueError, match="not a valid DICOM UID"):
        Spool.relative_path("1.2.3", uid, "1.2.3.4")


def test_reserve(tmp_path: Path) -> None:
    spool = Spool(tmp_path, reserve_bytes=0)
    spool.prepare()
    assert spool.has_room(1000)
    spool.reserve_bytes = spool.free_bytes() + 1
    assert not spool.has_room(0)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs) that the test can fill."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_leaves_nothing_half_written(tiny_disk: Path) -> None:
    spool = Spool(tiny_disk)
    spool.prepare()
    rel = Spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.1")
    spool.write(rel, [b"x" * 1000])
    big = Spool.relative_path("1.2.3", "1.2.3.4", "1.2.3.4.2")
    with pytest.raises(SpoolFullError):
        spool.write(big, [b"y" * (2 * 2**20)])
    assert not spool.absolute(big).exists()
    assert list(spool.tmp_dir.iterdir()) == []
    assert spool.absolute(rel).read_bytes() == b"x" * 1000


def test_file_meta_is_read_by_pydicom() -> None:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = "A^B"
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True)
    meta = build_file_meta(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid="1.2.3.4.5",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_class_uid="1.2.3",
        implementation_version_name="MERCURY_010",
        source_ae_title="ODD",
    )
    data = meta + body.getvalue()
    parsed = pydicom.dcmread(io.BytesIO(data))
    assert parsed.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert parsed.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"
    assert parsed.file_meta.SourceApplicationEntityTitle == "ODD"
    assert parsed.PatientName == "A^B"
    assert split_file(data) == (meta, body.getvalue())
