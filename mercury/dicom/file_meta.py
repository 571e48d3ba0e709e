"""Build the DICOM file meta group (PS3.10) by hand.

The receiver stores datasets exactly as they came off the wire; it only needs to put a
preamble and a meta group in front. Encoding those few elements directly is much
cheaper than building a pydicom FileMetaDataset for every instance.
"""

from __future__ import annotations

import struct

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
