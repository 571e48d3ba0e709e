"""Command set codec, checked against pynetdicom's encoder and pydicom's decoder."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode

from mercury.dicom.net import dimse


def _pynetdicom_command(message: C_STORE_RQ | C_ECHO_RQ, primitive: C_STORE | C_ECHO) -> bytes:
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def _read(command: bytes) -> Dataset:
    return read_dataset(BytesIO(command), is_implicit_VR=True, is_little_endian=True)


def test_decodes_a_pynetdicom_c_store_rq() -> None:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5.6.7"  # odd length: padded with NUL
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "MOVER"
    primitive.MoveOriginatorMessageID = 3
    primitive.DataSet = BytesIO(b"\x00" * 8)
    command = dimse.decode_command(_pynetdicom_command(C_STORE_RQ(), primitive))
    assert command.command_field == dimse.C_STORE_RQ
    assert command.message_id == 7
    assert command.has_data_set
    assert command.text(dimse.AFFECTED_SOP_CLASS_UID) == "1.2.840.10008.5.1.4.1.1.2"
    assert command.text(dimse.AFFECTED_SOP_INSTANCE_UID) == "1.2.3.4.5.6.7"
    assert command.optional_us(dimse.PRIORITY) == 2
    assert command.optional_text(dimse.MOVE_ORIGINATOR_AE) == "MOVER"
    assert command.optional_us(dimse.MOVE_ORIGINATOR_MESSAGE_ID) == 3


def test_decodes_a_pynetdicom_c_echo_rq() -> None:
    primitive = C_ECHO()
    primitive.MessageID = 65535
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    command = dimse.decode_command(_pynetdicom_command(C_ECHO_RQ(), primitive))
    assert command.command_field == dimse.C_ECHO_RQ
    assert command.message_id == 65535
    assert not command.has_data_set
    assert command.optional_us(dimse.PRIORITY) is None


def test_store_rsp_reads_back_with_pydicom() -> None:
    raw = dimse.encode_store_rsp(
        12, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", 0xA700, "disk\\full \x07 é" + "x" * 80
    )
    ds = _read(raw)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 12
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == 0xA700
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"
    assert len(ds.ErrorComment) == 64
    assert ds.ErrorComment.startswith("disk?full ? ?x")
    assert [elem.tag.element for elem in ds] == sorted(elem.tag.element for elem in ds)


def test_success_never_carries_an_error_comment() -> None:
    ds = _read(dimse.encode_store_rsp(1, "1.2", "1.3", 0x0000, "ignored"))
    assert "ErrorComment" not in ds
    assert len(dimse.encode_store_rsp(1, "1.2", "1.3", 0x0000)) % 2 == 0


def test_echo_rsp_reads_back_with_pydicom() -> None:
    ds = _read(dimse.encode_echo_rsp(9))
    assert ds.CommandField == 0x8030
    assert ds.MessageIDBeingRespondedTo == 9
    assert ds.Status == 0
    assert ds.AffectedSOPClassUID == "1.2.840.10008.1.1"
    assert "AffectedSOPInstanceUID" not in ds


def test_request_encoder_round_trips() -> None:
    raw = dimse.encode_request(
        dimse.C_STORE_RQ,
        5,
        sop_class_uid="1.2",
        sop_instance_uid="1.2.3",
        priority=0,
        has_data_set=True,
        move_originator=("AE1", 4),
    )
    command = dimse.decode_command(raw)
    assert command.message_id == 5
    assert command.optional_text(dimse.MOVE_ORIGINATOR_AE) == "AE1"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x00\x00\x00", "truncated"),
        (b"\x00\x00\x10\x01\x02\x00\x00\x00ab", "CommandField"),
        (b"\x08\x00\x00\x01\x02\x00\x00\x00ab", "outside group 0000"),
        (b"\x00\x00\x00\x01\xff\xff\xff\xff", "overruns"),
    ],
)
def test_undecodable_command_sets(raw: bytes, message: str) -> None:
    with pytest.raises(dimse.DimseError, match=message):
        dimse.decode_command(raw)


def test_missing_and_malformed_elements() -> None:
    command = dimse.decode_command(b"\x00\x00\x00\x01\x04\x00\x00\x00\x01\x00\x00\x00")
    with pytest.raises(dimse.DimseError, match="not a 2-byte"):
        _ = command.command_field
    command = dimse.decode_command(b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00")
    with pytest.raises(dimse.DimseError, match="missing"):
        _ = command.message_id
    with pytest.raises(dimse.DimseError, match="CommandDataSetType"):
        _ = command.has_data_set


def test_status_categories_agree_with_pynetdicom() -> None:
    from pynetdicom.status import code_to_category

    for status in range(0x10000):
        assert dimse.status_category(status) == code_to_category(status), hex(status)


def test_store_request_reads_back_with_pynetdicom() -> None:
    raw = dimse.encode_request(
        dimse.C_STORE_RQ,
        65535,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3.4.5",
        priority=dimse.PRIORITY_LOW,
        has_data_set=True,
    )
    message = C_STORE_RQ()
    message.command_set = _read(raw)
    primitive = message.message_to_primitive()
    assert primitive.MessageID == 65535
    assert primitive.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert primitive.AffectedSOPInstanceUID == "1.2.3.4.5"
    assert primitive.Priority == 2
    assert message.command_set.CommandDataSetType != 0x0101
    echo = _read(
        dimse.encode_request(
            dimse.C_ECHO_RQ, 3, sop_class_uid=dimse.VERIFICATION_SOP_CLASS, has_data_set=False
        )
    )
    assert (echo.CommandField, echo.MessageID, echo.CommandDataSetType) == (0x0030, 3, 0x0101)
