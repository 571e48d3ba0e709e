"""DIMSE command sets (PS3.7 section 9.3 and annex E): group 0000, always Implicit VR LE.

The receiver reads requests and writes C-STORE/C-ECHO responses; the requestor
(:mod:`.client`) writes requests and reads responses. Both only need a flat element map,
not a general data set codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

# Command Field values (PS3.7 E.1)
C_STORE_RQ: Final = 0x0001
C_STORE_RSP: Final = 0x8001
C_GET_RQ: Final = 0x0010
C_FIND_RQ: Final = 0x0020
C_MOVE_RQ: Final = 0x0021
C_ECHO_RQ: Final = 0x0030
C_ECHO_RSP: Final = 0x8030
C_CANCEL_RQ: Final = 0x0FFF
RESPONSE_BIT: Final = 0x8000
NO_DATA_SET: Final = 0x0101

# Status codes (PS3.7 annex C, PS3.4 B.2.3)
SUCCESS: Final = 0x0000
WARNING_COERCION: Final = 0xB000
WARNING_ELEMENTS_DISCARDED: Final = 0xB006
WARNING_DATA_SET_MISMATCH: Final = 0xB007
OUT_OF_RESOURCES: Final = 0xA700
DATA_SET_MISMATCH: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000
PROCESSING_FAILURE: Final = 0x0110
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
UNRECOGNIZED_OPERATION: Final = 0x0211
HANDLER_FAILURE: Final = 0xC001  # ours: the on_store callback raised

VERIFICATION_SOP_CLASS: Final = "1.2.840.10008.1.1"

# Priority (0000,0700)
PRIORITY_MEDIUM: Final = 0x0000
PRIORITY_HIGH: Final = 0x0001
PRIORITY_LOW: Final = 0x0002

StatusCategory = Literal["Success", "Warning", "Failure", "Cancel", "Pending", "Unknown"]
_FAILURE_CODES: Final = frozenset(
    {0x0105, 0x0106, 0x0110, 0x0111, 0x0112, 0x0113, 0x0114, 0x0115, 0x0117, 0x0118}
    | {0x0119, 0x0120, 0x0121, 0x0122, 0x0123, 0x0124, 0x0210, 0x0211, 0x0212, 0x0213}
)

# Element numbers in group 0000
COMMAND_GROUP_LENGTH: Final = 0x0000
AFFECTED_SOP_CLASS_UID: Final = 0x0002
COMMAND_FIELD: Final = 0x0100
MESSAGE_ID: Final = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO: Final = 0x0120
PRIORITY: Final = 0x0700
COMMAND_DATA_SET_TYPE: Final = 0x0800
STATUS: Final = 0x0900
ERROR_COMMENT: Final = 0x0902
AFFECTED_SOP_INSTANCE_UID: Final = 0x1000
MOVE_ORIGINATOR_AE: Final = 0x1030
MOVE_ORIGINATOR_MESSAGE_ID: Final = 0x1031

_ELEMENT_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
_MAX_ERROR_COMMENT = 64


def status_category(status: int) -> StatusCategory:
    """The category of a DIMSE status code (PS3.7 annex C): a warning still means stored."""
    if status == SUCCESS:
        return "Success"
    if status in (0xFF00, 0xFF01):
        return "Pending"
    if status == 0xFE00:
        return "Cancel"
    if status in _FAILURE_CODES or 0xA000 <= status <= 0xAFFF or 0xC000 <= status <= 0xCFFF:
        return "Failure"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "Warning"
    return "Unknown"


class DimseError(ValueError):
    """A command set that cannot be decoded or lacks a mandatory element."""


@dataclass(frozen=True)
class Command:
    """A decoded request command set: the raw element values, read on demand."""

    elements: dict[int, bytes]

    @property
    def command_field(self) -> int:
        return self.us(COMMAND_FIELD)

    @property
    def message_id(self) -> int:
        return self.us(MESSAGE_ID)

    @property
    def has_data_set(self) -> bool:
        raw = self.elements.get(COMMAND_DATA_SET_TYPE)
        if raw is None or len(raw) != 2:
            raise DimseError("missing or malformed CommandDataSetType (0000,0800)")
        return bool(_US.unpack(raw)[0] != NO_DATA_SET)

    def us(self, element: int) -> int:
        raw = self.elements.get(element)
        if raw is None:
            raise DimseError(f"missing (0000,{element:04X})")
        if len(raw) != 2:
            raise DimseError(f"(0000,{element:04X}) is not a 2-byte US value")
        return int(_US.unpack(raw)[0])

    def optional_us(self, element: int) -> int | None:
        return self.us(element) if element in self.elements else None

    def text(self, element: int) -> str:
        raw = self.elements.get(element)
        if raw is None:
            raise DimseError(f"missing (0000,{element:04X})")
        return raw.decode("ascii", "replace").strip("\x00 ")

    def optional_text(self, element: int) -> str | None:
        return self.text(element) if element in self.elements else None


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Parse an Implicit VR LE group 0000 element list; anything else is a DimseError."""
    elements: dict[int, bytes] = {}
    view = memoryview(data)
    offset = 0
    end = len(view)
    while offset < end:
        if end - offset < _ELEMENT_HEADER.size:
            raise DimseError("truncated element header in command set")
        group, element, length = _ELEMENT_HEADER.unpack_from(view, offset)
        offset += _ELEMENT_HEADER.size
        if group != 0x0000:
            raise DimseError(f"element ({group:04X},{element:04X}) outside group 0000")
        if length > end - offset:
            raise DimseError(f"(0000,{element:04X}) length {length} overruns the command set")
        elements[element] = bytes(view[offset : offset + length])
        offset += length
    if COMMAND_FIELD not in elements:
        raise DimseError("command set has no CommandField (0000,0100)")
    return Command(elements)


def _uid_value(uid: str) -> bytes:
    # A peer's garbled UID is echoed back as best we can rather than failing the response.
    raw = uid.encode("ascii", "replace")
    return raw + b"\x00" if len(raw) % 2 else raw


def _error_comment_value(comment: str) -> bytes:
    # LO in the default repertoire: no backslash, no control characters, at most 64 chars.
    cleaned = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in comment)
    raw = cleaned[:_MAX_ERROR_COMMENT].encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """Encode (element, value) pairs, sorted, with CommandGroupLength in front."""
    body = b"".join(
        _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value
        for element, value in sorted(elements)
    )
    return _ELEMENT_HEADER.pack(0x0000, COMMAND_GROUP_LENGTH, 4) + _UL.pack(len(body)) + body


def encode_response(
    command_field: int,
    message_id: int,
    status: int,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    error_comment: str | None = None,
) -> bytes:
    """A response command set with no data set; ErrorComment is only sent for non-success."""
    elements = [
        (COMMAND_FIELD, _US.pack(command_field)),
        (MESSAGE_ID_BEING_RESPONDED_TO, _US.pack(message_id)),
        (COMMAND_DATA_SET_TYPE, _US.pack(NO_DATA_SET)),
        (STATUS, _US.pack(status)),
    ]
    if sop_class_uid is not None:
        elements.append((AFFECTED_SOP_CLASS_UID, _uid_value(sop_class_uid)))
    if sop_instance_uid is not None:
        elements.append((AFFECTED_SOP_INSTANCE_UID, _uid_value(sop_instance_uid)))
    if error_comment and status != SUCCESS:
        elements.append((ERROR_COMMENT, _error_comment_value(error_comment)))
    return encode_command(elements)


def encode_store_rsp(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int,
    error_comment: str | None = None,
) -> bytes:
    return encode_response(
        C_STORE_RSP,
        message_id,
        status,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        error_comment=error_comment,
    )


def encode_echo_rsp(message_id: int) -> bytes:
    return encode_response(C_ECHO_RSP, message_id, SUCCESS, sop_class_uid=VERIFICATION_SOP_CLASS)


def encode_request(
    command_field: int,
    message_id: int,
    *,
    sop_class_uid: str,
    sop_instance_uid: str | None = None,
    priority: int | None = None,
    has_data_set: bool,
    move_originator: tuple[str, int] | None = None,
) -> bytes:
    """A request command set: what the requestor sends (and tests that speak raw)."""
    elements = [
        (AFFECTED_SOP_CLASS_UID, _uid_value(sop_class_uid)),
        (COMMAND_FIELD, _US.pack(command_field)),
        (MESSAGE_ID, _US.pack(message_id)),
        (COMMAND_DATA_SET_TYPE, _US.pack(0x0000 if has_data_set else NO_DATA_SET)),
    ]
    if priority is not None:
        elements.append((PRIORITY, _US.pack(priority)))
    if sop_instance_uid is not None:
        elements.append((AFFECTED_SOP_INSTANCE_UID, _uid_value(sop_instance_uid)))
    if move_originator is not None:
        ae = move_originator[0].encode("ascii")
        elements.append((MOVE_ORIGINATOR_AE, ae + b" " if len(ae) % 2 else ae))
        elements.append((MOVE_ORIGINATOR_MESSAGE_ID, _US.pack(move_originator[1])))
    return encode_command(elements)
