"""The DICOM file meta group (PS3.10) by hand: built for the receiver, read for senders.

The receiver stores datasets exactly as they came off the wire; it only needs to put a
preamble and a meta group in front. Encoding those few elements directly is much
cheaper than building a pydicom FileMetaDataset for every instance. Senders stream a
file's dataset as stored; they need only the few meta elements that choose a presentation
context and where the dataset starts (:func:`read_file_meta`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def build_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str,
    source_ae_title: str = "",
) -> bytes:
    """Return preamble, 'DICM' and the complete group 0002 for one instance."""
    body = bytearray()
    # (0002,0001) FileMetaInformationVersion OB: 2-byte reserved + 4-byte length
    body += struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
    body += _element(0x0002, 0x0002, b"UI", _uid(sop_class_uid))
    body += _element(0x0002, 0x0003, b"UI", _uid(sop_instance_uid))
    body += _element(0x0002, 0x0010, b"UI", _uid(transfer_syntax_uid))
    body += _element(0x0002, 0x0012, b"UI", _uid(implementation_class_uid))
    body += _element(0x0002, 0x0013, b"SH", _text(implementation_version_name[:16]))
    if source_ae_title:
        body += _element(0x0002, 0x0016, b"AE", _text(source_ae_title[:16]))
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return PREAMBLE + group_length + bytes(body)


def split_file(data: bytes) -> tuple[bytes, bytes]:
    """Split a Part 10 file into (preamble + meta group, dataset); used to compare datasets."""
    if data[128:132] != b"DICM":
        raise ValueError("not a DICOM Part 10 file (no DICM prefix)")
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    end = 132 + 12 + group_length
    return data[:end], data[end:]


class FileMetaError(ValueError):
    """The start of a file is not a usable DICOM Part 10 preamble and file meta group."""


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What a sender needs from a Part 10 file's meta group, and where its dataset starts."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int


_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"})
_LONG_VRS |= {b"UR", b"UT", b"UV"}
_META_ELEMENTS = {0x0002: "sop_class_uid", 0x0003: "sop_instance_uid", 0x0010: "transfer_syntax"}
_MAX_META = 1 << 20


class _Truncated(Exception):
    pass


def _parse_meta(head: bytes, at_end: bool) -> FileMeta:
    """Walk the group 0002 elements after the DICM prefix (explicit VR, as PS3.10 requires;
    implicit VR meta groups written by broken tools are read too)."""
    if len(head) < 132:
        if at_end:
            raise FileMetaError("not a DICOM Part 10 file (shorter than preamble and prefix)")
        raise _Truncated
    if head[128:132] != b"DICM":
        raise FileMetaError("not a DICOM Part 10 file (no DICM prefix at byte 128)")
    values: dict[str, str] = {}
    offset = 132
    end = len(head)
    while True:
        if end - offset < 4:
            if at_end and end == offset:
                break  # meta group only, empty dataset
            if at_end:
                raise FileMetaError("file ends inside its file meta information")
            raise _Truncated
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            break
        if end - offset < 8:
            if at_end:
                raise FileMetaError("file ends inside its file meta information")
            raise _Truncated
        vr = head[offset + 4 : offset + 6]
        if vr.isalpha() and vr.isupper():
            if vr in _LONG_VRS:
                if end - offset < 12:
                    if at_end:
                        raise FileMetaError("file ends inside its file meta information")
                    raise _Truncated
                (length,) = struct.unpack_from("<I", head, offset + 8)
                start = offset + 12
            else:
                (length,) = struct.unpack_from("<H", head, offset + 6)
                start = offset + 8
        else:  # implicit VR little endian
            (length,) = struct.unpack_from("<I", head, offset + 4)
            start = offset + 8
        if length == 0xFFFFFFFF or start + length > _MAX_META:
            raise FileMetaError(f"implausible length in file meta element (0002,{element:04X})")
        if start + length > end:
            if at_end:
                raise FileMetaError("file ends inside its file meta information")
            raise _Truncated
        name = _META_ELEMENTS.get(element)
        if name is not None:
            values[name] = head[start : start + length].decode("ascii", "replace").strip("\x00 ")
        offset = start + length
    syntax = values.get("transfer_syntax", "")
    if not syntax:
        raise FileMetaError("file meta information has no Transfer Syntax UID (0002,0010)")
    return FileMeta(
        values.get("sop_class_uid", ""), values.get("sop_instance_uid", ""), syntax, offset
    )


def read_file_meta(handle: BinaryIO, first_read: int = 65536) -> tuple[FileMeta, bytes]:
    """Read a Part 10 file's meta group from ``handle`` (at its start) in one pass.

    Returns the meta and every byte read so far, so a sender can go on with the dataset
    bytes after ``dataset_offset`` and then the rest of the file, reading nothing twice.
    Raises :class:`FileMetaError` if the file is not a DICOM Part 10 file.
    """
    head = handle.read(max(first_read, 256))
    at_end = len(head) < max(first_read, 256)
    while True:
        try:
            return _parse_meta(head, at_end), head
        except _Truncated:
            pass
        if len(head) > _MAX_META:
            raise FileMetaError("file meta information is implausibly large")
        more = handle.read(65536)
        at_end = not more
        head += more
