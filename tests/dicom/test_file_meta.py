"""Reading a Part 10 file's meta group for sending: the same answers as pydicom, in one pass."""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pynetdicom.dsutils import split_dataset

from mercury.dicom.file_meta import (
    PREAMBLE,
    FileMetaError,
    build_file_meta,
    read_file_meta,
    split_file,
)

SAMPLES = [
    "CT_small.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",  # deflated
    "SC_rgb_jpeg_dcmtk.dcm",
    "rtplan.dcm",
]


class CountingReader(io.BytesIO):
    """Counts the bytes handed out, to prove nothing is read twice."""

    handed_out = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.handed_out += len(data)
        return data


@pytest.mark.parametrize("name", SAMPLES)
def test_agrees_with_pydicom(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    meta = pydicom.filereader.read_file_meta_info(path)
    with open(path, "rb") as handle:
        found, head = read_file_meta(handle, 4096)
    assert found.sop_class_uid == meta.MediaStorageSOPClassUID
    assert found.sop_instance_uid == meta.MediaStorageSOPInstanceUID
    assert found.transfer_syntax_uid == meta.TransferSyntaxUID
    assert found.dataset_offset == split_dataset(Path(path))[1]
    assert head == Path(path).read_bytes()[: len(head)]


def test_one_pass_whatever_the_first_read() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    data = Path(path).read_bytes()
    offset = split_dataset(Path(path))[1]
    for first_read in (1, 132, 200, offset, offset + 1, len(data), 10 * len(data)):
        reader = CountingReader(data)
        found, head = read_file_meta(reader, first_read)
        assert found.dataset_offset == offset
        assert reader.handed_out == len(head) >= offset
        assert head + reader.read() == data


def test_meta_only_file_has_an_empty_dataset() -> None:
    data = build_file_meta(
        sop_class_uid="1.2.3",
        sop_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_class_uid="1.2.3.5",
        implementation_version_name="TEST",
    )
    found, head = read_file_meta(io.BytesIO(data))
    assert (found.sop_class_uid, found.sop_instance_uid) == ("1.2.3", "1.2.3.4")
    assert found.dataset_offset == len(data) == len(head)
    assert split_file(data + b"rest") == (data, b"rest")


def test_implicit_vr_meta_group_is_read_too() -> None:
    def element(number: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0x0002, number, len(value)) + value

    data = PREAMBLE + element(0x0002, b"1.2.3\x00") + element(0x0010, b"1.2.840.10008.1.2")
    data += b"\x08\x00\x16\x00"  # first dataset element
    found, _ = read_file_meta(io.BytesIO(data))
    assert found.transfer_syntax_uid == "1.2.840.10008.1.2"
    assert found.sop_class_uid == "1.2.3"
    assert found.dataset_offset == len(data) - 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than preamble"),
        (b"\x00" * 200, "no DICM prefix"),
        (PREAMBLE + b"\x02\x00\x10\x00UI\x20\x00abc", "ends inside"),
        (PREAMBLE + b"\x02\x00\x02\x00UI\x04\x001.2\x00", "no Transfer Syntax UID"),
        (PREAMBLE + b"\x02\x00\x01\x00OB\x00\x00\xff\xff\xff\xff", "implausible length"),
    ],
)
def test_broken_files(data: bytes, message: str) -> None:
    with pytest.raises(FileMetaError, match=message):
        read_file_meta(io.BytesIO(data))


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=400))
@settings(max_examples=300)
def test_garbage_never_raises_anything_else(tail: bytes, first_read: int) -> None:
    with contextlib.suppress(FileMetaError):
        read_file_meta(io.BytesIO(PREAMBLE + tail), first_read)
