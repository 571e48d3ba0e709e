"""Upper-layer PDUs and their items (DICOM PS3.8 section 9.3), encoded and decoded.

Only bytes in, dataclasses out and back: no I/O and no state, so every PDU can be
round-tripped in tests. Decoders raise :class:`PDUError` carrying the A-ABORT reason the
association layer should send.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ: Final = 0x01
A_ASSOCIATE_AC: Final = 0x02
A_ASSOCIATE_RJ: Final = 0x03
P_DATA_TF: Final = 0x04
A_RELEASE_RQ: Final = 0x05
A_RELEASE_RP: Final = 0x06
A_ABORT: Final = 0x07
PDU_TYPES: Final = frozenset(range(0x01, 0x08))

# Item and sub-item types (PS3.8 9.3.2 - 9.3.3, PS3.7 Annex D.3.3)
ITEM_APPLICATION_CONTEXT: Final = 0x10
ITEM_PRESENTATION_CONTEXT_RQ: Final = 0x20
ITEM_PRESENTATION_CONTEXT_AC: Final = 0x21
ITEM_ABSTRACT_SYNTAX: Final = 0x30
ITEM_TRANSFER_SYNTAX: Final = 0x40
ITEM_USER_INFORMATION: Final = 0x50
SUB_MAXIMUM_LENGTH: Final = 0x51
SUB_IMPLEMENTATION_CLASS_UID: Final = 0x52
SUB_ASYNC_OPERATIONS_WINDOW: Final = 0x53
SUB_ROLE_SELECTION: Final = 0x54
SUB_IMPLEMENTATION_VERSION_NAME: Final = 0x55
SUB_SOP_CLASS_EXTENDED: Final = 0x56
SUB_SOP_CLASS_COMMON_EXTENDED: Final = 0x57
SUB_USER_IDENTITY_RQ: Final = 0x58
SUB_USER_IDENTITY_AC: Final = 0x59

# A-ABORT sources and reasons (PS3.8 9.3.8)
ABORT_SOURCE_USER: Final = 0
ABORT_SOURCE_PROVIDER: Final = 2
ABORT_REASON_NOT_SPECIFIED: Final = 0
ABORT_REASON_UNRECOGNIZED_PDU: Final = 1
ABORT_REASON_UNEXPECTED_PDU: Final = 2
ABORT_REASON_UNRECOGNIZED_PARAMETER: Final = 4
ABORT_REASON_UNEXPECTED_PARAMETER: Final = 5
ABORT_REASON_INVALID_PARAMETER: Final = 6

# Presentation context results (PS3.8 9.3.3.2)
CONTEXT_ACCEPTED: Final = 0
CONTEXT_USER_REJECTION: Final = 1
CONTEXT_NO_REASON: Final = 2
CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED: Final = 3
CONTEXT_TRANSFER_SYNTAXES_NOT_SUPPORTED: Final = 4

PDU_HEADER_LENGTH: Final = 6
PDV_HEADER_LENGTH: Final = 6  # 4-byte item length, context id, message control header

_HEADER = struct.Struct(">BBI")
_ITEM_HEADER = struct.Struct(">BBH")
_ASSOCIATE_FIXED = struct.Struct(">HH16s16s32s")
_FOUR_BYTES = struct.Struct(">BBBB")
_PDV_HEADER = struct.Struct(">IBB")
PDATA_ONE_PDV_HEADER: Final = struct.Struct(">BBIIBB")
"""PDU header and PDV header of a P-DATA-TF carrying one PDV: type, reserved, PDU length
(PDV length + 4), PDV length (fragment + 2), context ID, message control header. Senders
pack it in place in front of each fragment (:func:`encode_pdata` builds the same bytes)."""


class PDUError(ValueError):
    """A PDU that cannot be decoded; ``reason`` is the A-ABORT reason to answer with."""

    def __init__(self, message: str, reason: int = ABORT_REASON_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


def _text(raw: bytes | memoryview) -> str:
    """Decode a UID or AE field; peers pad with NUL or space, both insignificant."""
    return bytes(raw).decode("ascii", "replace").strip("\x00 ")


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} too long ({len(value)} bytes)")
    return _ITEM_HEADER.pack(item_type, 0, len(value)) + value


def _uid_item(item_type: int, uid: str) -> bytes:
    return _item(item_type, uid.encode("ascii"))


def _iter_items(data: memoryview, where: str) -> Iterator[tuple[int, memoryview]]:
    """Yield (item type, item value) for a run of items with 2-byte lengths."""
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < _ITEM_HEADER.size:
            raise PDUError(f"truncated item header in {where}")
        item_type, _, length = _ITEM_HEADER.unpack_from(data, offset)
        offset += _ITEM_HEADER.size
        if length > end - offset:
            raise PDUError(f"item 0x{item_type:02X} in {where} overruns its container")
        yield item_type, data[offset : offset + length]
        offset += length


def ae_title_field(title: str) -> bytes:
    """Encode an AE title as the 16-byte, space-padded PDU field."""
    raw = title.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"AE title longer than 16 characters: {title!r}")
    return raw.ljust(16, b" ")


# --- A-ASSOCIATE items ---------------------------------------------------------------------


@dataclass(frozen=True)
class PresentationContextRQ:
    """One proposed presentation context; abstract syntax is empty if the peer left it out."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    def encode(self) -> bytes:
        body = bytes((self.context_id, 0, 0, 0)) + _uid_item(
            ITEM_ABSTRACT_SYNTAX, self.abstract_syntax
        )
        body += b"".join(_uid_item(ITEM_TRANSFER_SYNTAX, ts) for ts in self.transfer_syntaxes)
        return _item(ITEM_PRESENTATION_CONTEXT_RQ, body)


@dataclass(frozen=True)
class PresentationContextAC:
    """One answered presentation context; transfer syntax is not significant unless accepted."""

    context_id: int
    result: int
    transfer_syntax: str

    def encode(self) -> bytes:
        body = bytes((self.context_id, 0, self.result, 0)) + _uid_item(
            ITEM_TRANSFER_SYNTAX, self.transfer_syntax
        )
        return _item(ITEM_PRESENTATION_CONTEXT_AC, body)


@dataclass(frozen=True)
class RoleSelection:
    """SCP/SCU role selection (PS3.7 D.3.3.4); parsed for logging, never negotiated."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True)
class UserInformation:
    """The user information item; sub-items we do not negotiate are kept only as types."""

    maximum_length: int | None = None
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    async_operations: tuple[int, int] | None = None
    role_selections: tuple[RoleSelection, ...] = ()
    other_items: tuple[int, ...] = ()  # types of sub-items parsed and skipped

    def encode(self) -> bytes:
        body = b""
        if self.maximum_length is not None:
            body += _item(SUB_MAXIMUM_LENGTH, struct.pack(">I", self.maximum_length))
        if self.implementation_class_uid:
            body += _uid_item(SUB_IMPLEMENTATION_CLASS_UID, self.implementation_class_uid)
        if self.async_operations is not None:
            body += _item(SUB_ASYNC_OPERATIONS_WINDOW, struct.pack(">HH", *self.async_operations))
        for role in self.role_selections:
            uid = role.sop_class_uid.encode("ascii")
            value = struct.pack(">H", len(uid)) + uid + bytes((role.scu_role, role.scp_role))
            body += _item(SUB_ROLE_SELECTION, value)
        if self.implementation_version_name:
            body += _uid_item(SUB_IMPLEMENTATION_VERSION_NAME, self.implementation_version_name)
        return _item(ITEM_USER_INFORMATION, body)


def _decode_user_information(data: memoryview) -> UserInformation:
    maximum_length: int | None = None
    class_uid = ""
    version_name = ""
    async_ops: tuple[int, int] | None = None
    roles: list[RoleSelection] = []
    others: list[int] = []
    for sub_type, value in _iter_items(data, "user information"):
        if sub_type == SUB_MAXIMUM_LENGTH:
            if len(value) != 4:
                raise PDUError("maximum length sub-item must hold 4 bytes")
            maximum_length = int.from_bytes(value, "big")
        elif sub_type == SUB_IMPLEMENTATION_CLASS_UID:
            class_uid = _text(value)
        elif sub_type == SUB_IMPLEMENTATION_VERSION_NAME:
            version_name = _text(value)
        elif sub_type == SUB_ASYNC_OPERATIONS_WINDOW and len(value) == 4:
            invoked, performed = struct.unpack(">HH", value)
            async_ops = (invoked, performed)
        elif sub_type == SUB_ROLE_SELECTION and len(value) >= 2:
            uid_length = int.from_bytes(value[:2], "big")
            if len(value) == uid_length + 4:
                roles.append(
                    RoleSelection(
                        _text(value[2 : 2 + uid_length]),
                        bool(value[2 + uid_length]),
                        bool(value[3 + uid_length]),
                    )
                )
            else:
                others.append(sub_type)
        else:
            # Extended negotiation, user identity, and anything a later edition adds: the
            # standard lets an acceptor ignore them, which keeps the default behaviour.
            others.append(sub_type)
    return UserInformation(
        maximum_length=maximum_length,
        implementation_class_uid=class_uid,
        implementation_version_name=version_name,
        async_operations=async_ops,
        role_selections=tuple(roles),
        other_items=tuple(others),
    )


def _decode_context_rq(data: memoryview) -> PresentationContextRQ:
    if len(data) < 4:
        raise PDUError("truncated presentation context item")
    abstract = ""
    transfers: list[str] = []
    for sub_type, value in _iter_items(data[4:], "presentation context"):
        if sub_type == ITEM_ABSTRACT_SYNTAX:
            abstract = _text(value)
        elif sub_type == ITEM_TRANSFER_SYNTAX:
            transfers.append(_text(value))
    return PresentationContextRQ(data[0], abstract, tuple(transfers))


def _decode_context_ac(data: memoryview) -> PresentationContextAC:
    if len(data) < 4:
        raise PDUError("truncated presentation context item")
    transfer = ""
    for sub_type, value in _iter_items(data[4:], "presentation context"):
        if sub_type == ITEM_TRANSFER_SYNTAX:
            transfer = _text(value)
    return PresentationContextAC(data[0], data[2], transfer)


# --- PDUs ----------------------------------------------------------------------------------


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return _HEADER.pack(pdu_type, 0, len(body)) + body


@dataclass(frozen=True)
class AssociateRQ:
    """A-ASSOCIATE-RQ. AE titles are kept as raw 16-byte fields so the AC can echo them."""

    called_ae_field: bytes
    calling_ae_field: bytes
    application_context: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    protocol_version: int = 1

    @property
    def called_ae(self) -> str:
        return _text(self.called_ae_field)

    @property
    def calling_ae(self) -> str:
        return _text(self.calling_ae_field)

    def encode(self) -> bytes:
        body = _ASSOCIATE_FIXED.pack(
            self.protocol_version, 0, self.called_ae_field, self.calling_ae_field, bytes(32)
        )
        body += _uid_item(ITEM_APPLICATION_CONTEXT, self.application_context)
        body += b"".join(cx.encode() for cx in self.presentation_contexts)
        body += self.user_information.encode()
        return _pdu(A_ASSOCIATE_RQ, body)


@dataclass(frozen=True)
class AssociateAC:
    """A-ASSOCIATE-AC, answering every proposed context in the order proposed."""

    called_ae_field: bytes
    calling_ae_field: bytes
    application_context: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation = field(default_factory=UserInformation)
    protocol_version: int = 1

    def encode(self) -> bytes:
        body = _ASSOCIATE_FIXED.pack(
            self.protocol_version, 0, self.called_ae_field, self.calling_ae_field, bytes(32)
        )
        body += _uid_item(ITEM_APPLICATION_CONTEXT, self.application_context)
        body += b"".join(cx.encode() for cx in self.presentation_contexts)
        body += self.user_information.encode()
        return _pdu(A_ASSOCIATE_AC, body)


def _decode_associate(
    body: memoryview, kind: str
) -> tuple[
    int,
    bytes,
    bytes,
    str,
    list[PresentationContextRQ],
    list[PresentationContextAC],
    UserInformation,
]:
    if len(body) < _ASSOCIATE_FIXED.size:
        raise PDUError(f"{kind} shorter than its fixed fields")
    version, _, called, calling, _ = _ASSOCIATE_FIXED.unpack_from(body)
    app_context = ""
    requested: list[PresentationContextRQ] = []
    answered: list[PresentationContextAC] = []
    user_info = UserInformation()
    for item_type, value in _iter_items(body[_ASSOCIATE_FIXED.size :], kind):
        if item_type == ITEM_APPLICATION_CONTEXT:
            app_context = _text(value)
        elif item_type == ITEM_PRESENTATION_CONTEXT_RQ:
            requested.append(_decode_context_rq(value))
        elif item_type == ITEM_PRESENTATION_CONTEXT_AC:
            answered.append(_decode_context_ac(value))
        elif item_type == ITEM_USER_INFORMATION:
            user_info = _decode_user_information(value)
        # Unknown item types are skipped (PS3.8 9.3.1: unrecognised items are ignored).
    return version, called, calling, app_context, requested, answered, user_info


def decode_associate_rq(body: memoryview | bytes) -> AssociateRQ:
    version, called, calling, app, requested, _, user = _decode_associate(
        memoryview(body), "A-ASSOCIATE-RQ"
    )
    return AssociateRQ(called, calling, app, tuple(requested), user, version)


def decode_associate_ac(body: memoryview | bytes) -> AssociateAC:
    version, called, calling, app, _, answered, user = _decode_associate(
        memoryview(body), "A-ASSOCIATE-AC"
    )
    return AssociateAC(called, calling, app, tuple(answered), user, version)


@dataclass(frozen=True)
class AssociateRJ:
    result: int
    source: int
    reason: int

    def encode(self) -> bytes:
        return _pdu(A_ASSOCIATE_RJ, _FOUR_BYTES.pack(0, self.result, self.source, self.reason))


@dataclass(frozen=True)
class ReleaseRQ:
    def encode(self) -> bytes:
        return _pdu(A_RELEASE_RQ, bytes(4))


@dataclass(frozen=True)
class ReleaseRP:
    def encode(self) -> bytes:
        return _pdu(A_RELEASE_RP, bytes(4))


@dataclass(frozen=True)
class Abort:
    source: int = ABORT_SOURCE_PROVIDER
    reason: int = ABORT_REASON_NOT_SPECIFIED

    def encode(self) -> bytes:
        return _pdu(A_ABORT, _FOUR_BYTES.pack(0, 0, self.source, self.reason))


@dataclass(frozen=True)
class PDV:
    """A presentation data value: one fragment of a command set or data set."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes

    @property
    def control_header(self) -> int:
        return int(self.is_command) | (int(self.is_last) << 1)


@dataclass(frozen=True)
class PDataTF:
    pdvs: tuple[PDV, ...]

    def encode(self) -> bytes:
        body = b"".join(
            _PDV_HEADER.pack(len(pdv.data) + 2, pdv.context_id, pdv.control_header) + pdv.data
            for pdv in self.pdvs
        )
        return _pdu(P_DATA_TF, body)


def iter_pdvs(body: memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """Yield (context id, message control header, fragment) without copying the fragment."""
    offset = 0
    end = len(body)
    while offset < end:
        if end - offset < PDV_HEADER_LENGTH:
            raise PDUError("truncated PDV item header")
        length, context_id, control = _PDV_HEADER.unpack_from(body, offset)
        if length < 2 or length > end - offset - 4:
            raise PDUError(f"PDV item length {length} does not fit the P-DATA-TF PDU")
        yield context_id, control, body[offset + PDV_HEADER_LENGTH : offset + 4 + length]
        offset += 4 + length


def decode_pdata(body: memoryview | bytes) -> PDataTF:
    return PDataTF(
        tuple(
            PDV(cid, bool(control & 1), bool(control & 2), bytes(fragment))
            for cid, control, fragment in iter_pdvs(memoryview(body))
        )
    )


def encode_pdata(context_id: int, is_command: bool, data: bytes, max_pdu: int) -> bytes:
    """Fragment one command or data set into P-DATA-TF PDUs of at most ``max_pdu`` (0: any).

    One PDV per PDU keeps the arithmetic obvious; the result is a single buffer so that a
    response leaves in one write.
    """
    chunk = len(data) if max_pdu <= 0 else max(1, max_pdu - PDV_HEADER_LENGTH)
    control = int(is_command)
    if len(data) <= chunk:
        return (
            _HEADER.pack(P_DATA_TF, 0, len(data) + PDV_HEADER_LENGTH)
            + _PDV_HEADER.pack(len(data) + 2, context_id, control | 2)
            + data
        )
    parts: list[bytes] = []
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        fragment = view[start : start + chunk]
        last = 2 if start + chunk >= len(data) else 0
        parts.append(_HEADER.pack(P_DATA_TF, 0, len(fragment) + PDV_HEADER_LENGTH))
        parts.append(_PDV_HEADER.pack(len(fragment) + 2, context_id, control | last))
        parts.append(bytes(fragment))
    return b"".join(parts)


def _four_bytes(body: memoryview | bytes, kind: str) -> tuple[int, int, int, int]:
    if len(body) != 4:
        raise PDUError(f"{kind} must have a 4-byte body, got {len(body)}")
    a, b, c, d = _FOUR_BYTES.unpack(body)
    return a, b, c, d


def decode_associate_rj(body: memoryview | bytes) -> AssociateRJ:
    _, result, source, reason = _four_bytes(body, "A-ASSOCIATE-RJ")
    return AssociateRJ(result, source, reason)


def decode_release_rq(body: memoryview | bytes) -> ReleaseRQ:
    _four_bytes(body, "A-RELEASE-RQ")
    return ReleaseRQ()


def decode_release_rp(body: memoryview | bytes) -> ReleaseRP:
    _four_bytes(body, "A-RELEASE-RP")
    return ReleaseRP()


def decode_abort(body: memoryview | bytes) -> Abort:
    _, _, source, reason = _four_bytes(body, "A-ABORT")
    return Abort(source, reason)


PDU = AssociateRQ | AssociateAC | AssociateRJ | PDataTF | ReleaseRQ | ReleaseRP | Abort


def decode_pdu(data: bytes | memoryview) -> PDU:
    """Decode one complete PDU including its 6-byte header (tests and tools; not the hot path)."""
    view = memoryview(data)
    if len(view) < PDU_HEADER_LENGTH:
        raise PDUError("truncated PDU header")
    pdu_type, _, length = _HEADER.unpack_from(view)
    if length != len(view) - PDU_HEADER_LENGTH:
        raise PDUError(f"PDU length {length} does not match {len(view) - PDU_HEADER_LENGTH}")
    body = view[PDU_HEADER_LENGTH:]
    if pdu_type == A_ASSOCIATE_RQ:
        return decode_associate_rq(body)
    if pdu_type == A_ASSOCIATE_AC:
        return decode_associate_ac(body)
    if pdu_type == A_ASSOCIATE_RJ:
        return decode_associate_rj(body)
    if pdu_type == P_DATA_TF:
        return decode_pdata(body)
    if pdu_type == A_RELEASE_RQ:
        return decode_release_rq(body)
    if pdu_type == A_RELEASE_RP:
        return decode_release_rp(body)
    if pdu_type == A_ABORT:
        return decode_abort(body)
    raise PDUError(f"unknown PDU type 0x{pdu_type:02X}", ABORT_REASON_UNRECOGNIZED_PDU)


def read_header(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """(PDU type, body length) of the header at ``offset``."""
    pdu_type, _, length = _HEADER.unpack_from(data, offset)
    return int(pdu_type), int(length)
