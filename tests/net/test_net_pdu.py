"""PDU and item codec (PS3.8 9.3): round trips, tolerated extras, and rejected damage."""

from __future__ import annotations

import struct

import pytest

from mercury.dicom.net import pdu


def _rq(**overrides: object) -> pdu.AssociateRQ:
    fields: dict[str, object] = {
        "called_ae_field": pdu.ae_title_field("MERCURY"),
        "calling_ae_field": pdu.ae_title_field("MODALITY"),
        "application_context": "1.2.840.10008.3.1.1.1",
        "presentation_contexts": (
            pdu.PresentationContextRQ(1, "1.2.840.10008.1.1", ("1.2.840.10008.1.2",)),
            pdu.PresentationContextRQ(
                3,
                "1.2.840.10008.5.1.4.1.1.2",
                ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"),
            ),
        ),
        "user_information": pdu.UserInformation(
            maximum_length=16384,
            implementation_class_uid="1.2.3.4.5",
            implementation_version_name="TEST_1",
            async_operations=(1, 1),
            role_selections=(pdu.RoleSelection("1.2.840.10008.5.1.4.1.1.2", True, True),),
        ),
    }
    fields.update(overrides)
    return pdu.AssociateRQ(**fields)  # type: ignore[arg-type]


def test_associate_rq_round_trip() -> None:
    rq = _rq()
    decoded = pdu.decode_pdu(rq.encode())
    assert decoded == rq
    assert isinstance(decoded, pdu.AssociateRQ)
    assert decoded.called_ae == "MERCURY"
    assert decoded.calling_ae == "MODALITY"


def test_associate_ac_round_trip() -> None:
    ac = pdu.AssociateAC(
        called_ae_field=pdu.ae_title_field("MERCURY"),
        calling_ae_field=pdu.ae_title_field("MODALITY"),
        application_context="1.2.840.10008.3.1.1.1",
        presentation_contexts=(
            pdu.PresentationContextAC(1, pdu.CONTEXT_ACCEPTED, "1.2.840.10008.1.2"),
            pdu.PresentationContextAC(3, pdu.CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED, "1.2"),
        ),
        user_information=pdu.UserInformation(262144, "2.25.1", "MERCURY_010"),
    )
    assert pdu.decode_pdu(ac.encode()) == ac


@pytest.mark.parametrize(
    "value",
    [
        pdu.AssociateRJ(1, 1, 7),
        pdu.ReleaseRQ(),
        pdu.ReleaseRP(),
        pdu.Abort(2, 6),
        pdu.PDataTF(
            (
                pdu.PDV(1, True, True, b"\x00\x00\x00\x00"),
                pdu.PDV(1, False, False, b"abc"),
                pdu.PDV(1, False, True, b""),
            )
        ),
    ],
)
def test_small_pdus_round_trip(value: pdu.PDU) -> None:
    assert pdu.decode_pdu(value.encode()) == value


def test_wire_layout_of_fixed_pdus() -> None:
    # Byte-exact against PS3.8 tables 9-21, 9-24, 9-25, 9-26.
    assert pdu.AssociateRJ(2, 3, 2).encode() == bytes.fromhex("03 00 00000004 00 02 03 02")
    assert pdu.ReleaseRQ().encode() == bytes.fromhex("05 00 00000004 00000000")
    assert pdu.ReleaseRP().encode() == bytes.fromhex("06 00 00000004 00000000")
    assert pdu.Abort(2, 1).encode() == bytes.fromhex("07 00 00000004 00 00 02 01")
    assert pdu.encode_pdata(5, True, b"ab", 0) == bytes.fromhex(
        "04 00 00000008 00000004 05 03 6162"
    )
    header = pdu.PDATA_ONE_PDV_HEADER.pack(pdu.P_DATA_TF, 0, 8, 4, 5, 3)
    assert header + b"ab" == pdu.encode_pdata(5, True, b"ab", 0)


def test_unknown_items_and_sub_items_are_skipped() -> None:
    rq = _rq(user_information=pdu.UserInformation(maximum_length=32768))
    raw = bytearray(rq.encode())
    # Append to the user information item: SOP class extended negotiation, user identity,
    # common extended negotiation and a sub-item type no edition defines yet.
    extras = b"".join(
        struct.pack(">BBH", item_type, 0, len(value)) + value
        for item_type, value in [
            (0x56, struct.pack(">H", 3) + b"1.2" + b"\x01\x00"),
            (0x58, b"\x01\x01" + struct.pack(">H", 4) + b"user" + struct.pack(">H", 0)),
            (0x57, b"\x00\x00"),
            (0x7E, b"future"),
        ]
    )
    user_offset = raw.index(bytes([pdu.ITEM_USER_INFORMATION, 0]))
    old_length = struct.unpack_from(">H", raw, user_offset + 2)[0]
    struct.pack_into(">H", raw, user_offset + 2, old_length + len(extras))
    raw[user_offset + 4 + old_length : user_offset + 4 + old_length] = extras
    # ... and an unknown top-level item after it.
    raw += struct.pack(">BBH", 0x6F, 0, 3) + b"xyz"
    struct.pack_into(">I", raw, 2, len(raw) - 6)

    decoded = pdu.decode_pdu(bytes(raw))
    assert isinstance(decoded, pdu.AssociateRQ)
    assert decoded.user_information.maximum_length == 32768
    assert decoded.user_information.other_items == (0x56, 0x58, 0x57, 0x7E)
    assert decoded.presentation_contexts == rq.presentation_contexts


def test_padded_uids_are_stripped() -> None:
    item = struct.pack(">BBH", pdu.ITEM_APPLICATION_CONTEXT, 0, 22) + b"1.2.840.10008.3.1.1.1\x00"
    body = struct.pack(">HH16s16s32s", 1, 0, b"A" * 16, b"B" * 16, bytes(32)) + item
    decoded = pdu.decode_associate_rq(body)
    assert decoded.application_context == "1.2.840.10008.3.1.1.1"
    assert decoded.user_information.maximum_length is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes.fromhex("01 00 00000010") + bytes(16), "fixed fields"),
        (
            bytes.fromhex("01 00 0000004A") + bytes(68) + struct.pack(">BBH", 0x10, 0, 200) + b"12",
            "overruns",
        ),
        (bytes.fromhex("01 00 00000047") + bytes(68) + b"\x10\x00\x00", "truncated item"),
        (bytes.fromhex("05 00 00000002 0000"), "4-byte body"),
        (bytes.fromhex("07 00 00000005 0000000000"), "4-byte body"),
        (bytes.fromhex("04 00 00000006 00000001 01 03"), "PDV item length"),
        (bytes.fromhex("04 00 00000007 000000ff 01 03 00"), "PDV item length"),
        (bytes.fromhex("04 00 00000003 000000"), "truncated PDV"),
        (bytes.fromhex("09 00 00000004 00000000"), "unknown PDU type"),
        (bytes.fromhex("05 00 00000008 00000000"), "does not match"),
    ],
)
def test_damaged_pdus_raise(data: bytes, message: str) -> None:
    with pytest.raises(pdu.PDUError, match=message):
        pdu.decode_pdu(data)


def test_maximum_length_sub_item_must_be_four_bytes() -> None:
    user = struct.pack(">BBH", 0x51, 0, 2) + b"\x10\x00"
    item = struct.pack(">BBH", pdu.ITEM_USER_INFORMATION, 0, len(user)) + user
    body = struct.pack(">HH16s16s32s", 1, 0, b"A" * 16, b"B" * 16, bytes(32)) + item
    with pytest.raises(pdu.PDUError, match="maximum length"):
        pdu.decode_associate_rq(body)


@pytest.mark.parametrize("max_pdu", [7, 64, 100, 4096, 0])
def test_encode_pdata_fragments_to_the_peer_maximum(max_pdu: int) -> None:
    payload = bytes(range(256)) * 3
    encoded = pdu.encode_pdata(7, True, payload, max_pdu)
    offset = 0
    fragments: list[pdu.PDV] = []
    while offset < len(encoded):
        length = struct.unpack_from(">I", encoded, offset + 2)[0]
        if max_pdu:
            assert length <= max_pdu
        decoded = pdu.decode_pdu(encoded[offset : offset + 6 + length])
        assert isinstance(decoded, pdu.PDataTF)
        fragments.extend(decoded.pdvs)
        offset += 6 + length
    assert b"".join(f.data for f in fragments) == payload
    assert all(f.context_id == 7 and f.is_command for f in fragments)
    assert [f.is_last for f in fragments] == [False] * (len(fragments) - 1) + [True]
    if max_pdu == 0:
        assert len(fragments) == 1


def test_ae_title_field() -> None:
    assert pdu.ae_title_field("AE") == b"AE" + b" " * 14
    with pytest.raises(ValueError, match="longer than 16"):
        pdu.ae_title_field("X" * 17)


def test_public_values_are_hashable_and_immutable() -> None:
    from dataclasses import FrozenInstanceError
    from types import MappingProxyType

    from mercury.dicom.net import Association, AssociationRequest, PresentationContext

    request = AssociationRequest("A", "B", "127.0.0.1", 104, 0, "1.2", "X", ((1, "1.2", ("1.2",)),))
    contexts = MappingProxyType({1: PresentationContext(1, "1.2", "1.2.840.10008.1.2")})
    association = Association("id", request, contexts, 0.0)
    assert {association: 1}[association] == 1  # handlers may key on associations
    with pytest.raises(FrozenInstanceError):
        association.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "options",
    [
        {"max_pdu": 1024},
        {"max_associations": 0},
        {"implementation_class_uid": "not-a-uid"},
        {"implementation_class_uid": "1." * 40},
        {"implementation_version_name": "MUCH_TOO_LONG_NAME"},
    ],
)
def test_server_rejects_bad_configuration(options: dict[str, object]) -> None:
    from mercury.dicom.net import DicomServer

    with pytest.raises(ValueError):
        DicomServer(
            object(),  # type: ignore[arg-type]
            accept_abstract_syntax=lambda uid: True,
            transfer_syntaxes=["1.2.840.10008.1.2"],
            **options,  # type: ignore[arg-type]
        )
