"""Byte-level peers: malformed input, timeouts, ordering, release edge cases."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable

import pytest

from mercury.dicom.net import dimse, pdu
from tests.net.netsupport import (
    CT_IMAGE_STORAGE,
    EXPLICIT,
    IMPLICIT,
    REFUSED_SOP_CLASS,
    VERIFICATION,
    RawPeer,
    RecordingHandler,
    ServerThread,
    associate_rq,
)

CONTEXTS = (
    (1, VERIFICATION, (IMPLICIT,)),
    (3, CT_IMAGE_STORAGE, (EXPLICIT,)),
    (5, REFUSED_SOP_CLASS, (EXPLICIT,)),
)


def _echo_rq(message_id: int = 1) -> bytes:
    return dimse.encode_request(
        dimse.C_ECHO_RQ, message_id, sop_class_uid=VERIFICATION, has_data_set=False
    )


def _store_rq(message_id: int, uid: str = "1.2.3.4") -> bytes:
    return dimse.encode_request(
        dimse.C_STORE_RQ,
        message_id,
        sop_class_uid=CT_IMAGE_STORAGE,
        sop_instance_uid=uid,
        priority=0,
        has_data_set=True,
    )


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def _pdata(*pdvs: bytes) -> bytes:
    body = b"".join(pdvs)
    return struct.pack(">BBI", 4, 0, len(body)) + body


def _status(command: bytes) -> int:
    return dimse.decode_command(command).us(dimse.STATUS)


def _assert_echo_works(port: int) -> None:
    with RawPeer(port) as peer:
        peer.associate()
        peer.send_message(1, _echo_rq())
        assert _status(peer.recv_command()) == 0
        peer.send(pdu.ReleaseRQ().encode())
        peer.expect(pdu.A_RELEASE_RP)


_RQ_FIXED = struct.pack(">HH16s16s32s", 1, 0, b"MERCURY".ljust(16), b"RAW".ljust(16), bytes(32))
_STORE_NO_UID = dimse.encode_command(
    [
        (dimse.AFFECTED_SOP_CLASS_UID, b"1.2.840.10008.5.1.4.1.1.2\x00"),
        (dimse.COMMAND_FIELD, struct.pack("<H", dimse.C_STORE_RQ)),
        (dimse.MESSAGE_ID, struct.pack("<H", 1)),
        (dimse.COMMAND_DATA_SET_TYPE, struct.pack("<H", 0)),
    ]
)

BEFORE_ASSOCIATION = {
    "http request": (b"GET / HTTP/1.1\r\nHost: mercury\r\n\r\n", 1),
    "unknown PDU type": (bytes.fromhex("09 00 00000004 00000000"), 1),
    "zero bytes": (bytes(16), 1),
    "P-DATA before association": (_pdata(_pdv(1, 3, _echo_rq())), 2),
    "A-RELEASE-RQ before association": (pdu.ReleaseRQ().encode(), 2),
    "A-ASSOCIATE-AC from the requestor": (
        bytes.fromhex("02 00 00000044") + _RQ_FIXED,
        2,
    ),
    "truncated A-ASSOCIATE-RQ": (bytes.fromhex("01 00 00000010") + bytes(16), 6),
    "item overrunning the RQ": (
        struct.pack(">BBI", 1, 0, 68 + 6) + _RQ_FIXED + struct.pack(">BBH", 0x10, 0, 300) + b"1.",
        6,
    ),
    "presentation context item too short": (
        struct.pack(">BBI", 1, 0, 68 + 6)
        + _RQ_FIXED
        + struct.pack(">BBH", 0x20, 0, 2)
        + b"\x01\x00",
        6,
    ),
    "A-ASSOCIATE-RQ claiming 4 GiB": (bytes.fromhex("01 00 FFFFFFFF"), 6),
    "A-RELEASE-RQ with a 16-byte body": (bytes.fromhex("05 00 00000010") + bytes(16), 6),
}

AFTER_ASSOCIATION = {
    "P-DATA larger than our max PDU": (struct.pack(">BBI", 4, 0, 262145), 6),
    "PDV for a context never proposed": (_pdata(_pdv(9, 3, _echo_rq())), 6),
    "PDV for a rejected context": (_pdata(_pdv(5, 3, _echo_rq())), 6),
    "PDV length past the PDU": (_pdata(struct.pack(">IBB", 200, 1, 3) + b"xx"), 6),
    "PDV shorter than its header": (_pdata(struct.pack(">IBB", 1, 1, 3)), 6),
    "garbage command set": (_pdata(_pdv(1, 3, b"\x01\x02\x03\x04\x05")), 6),
    "command set outside group 0000": (
        _pdata(_pdv(1, 3, bytes.fromhex("0800 0001 02000000 3000"))),
        6,
    ),
    "C-STORE-RQ without an instance UID": (
        _pdata(_pdv(3, 3, _STORE_NO_UID), _pdv(3, 2, b"\x08\x00\x18\x00")),
        6,
    ),
    "data set without a command": (_pdata(_pdv(3, 2, b"data")), 5),
    "command while a data set is due": (
        _pdata(_pdv(3, 3, _store_rq(1)), _pdv(3, 3, _store_rq(2))),
        5,
    ),
    "data set switching context": (_pdata(_pdv(3, 3, _store_rq(1)), _pdv(1, 2, b"xx")), 6),
    "second A-ASSOCIATE-RQ": (associate_rq(CONTEXTS), 2),
    "unsolicited A-RELEASE-RP": (pdu.ReleaseRP().encode(), 2),
    "A-ABORT with a 2-byte body": (bytes.fromhex("07 00 00000002 0000"), 6),
}


@pytest.mark.parametrize("case", BEFORE_ASSOCIATION)
def test_malformed_before_association_is_aborted(
    server: ServerThread, handler: RecordingHandler, case: str
) -> None:
    data, reason = BEFORE_ASSOCIATION[case]
    with RawPeer(server.port) as peer:
        peer.send(data)
        abort = peer.expect(pdu.A_ABORT)
        assert abort == pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, reason)
    handler.wait(lambda: len(handler.protocol_errors) == 1, what="on_protocol_error")
    assert handler.protocol_errors[0][0] == "127.0.0.1"
    assert handler.closes == []  # nothing was associated
    _assert_echo_works(server.port)


@pytest.mark.parametrize("case", AFTER_ASSOCIATION)
def test_malformed_after_association_is_aborted(
    server: ServerThread, handler: RecordingHandler, case: str
) -> None:
    data, reason = AFTER_ASSOCIATION[case]
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        peer.send(data)
        abort = peer.expect(pdu.A_ABORT)
        assert abort == pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, reason)
    handler.wait(lambda: handler.close_reasons() == ["protocol_error"], what="on_close")
    assert len(handler.protocol_errors) == 1
    assert handler.stores == []
    _assert_echo_works(server.port)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"protocol_version": 2}, pdu.AssociateRJ(1, 2, 2)),
        ({"application_context": "1.2.3.4"}, pdu.AssociateRJ(1, 1, 2)),
    ],
)
def test_standard_rejections(
    server: ServerThread,
    handler: RecordingHandler,
    options: dict[str, object],
    expected: pdu.AssociateRJ,
) -> None:
    with RawPeer(server.port) as peer:
        peer.send(associate_rq(CONTEXTS, **options))  # type: ignore[arg-type]
        assert peer.expect(pdu.A_ASSOCIATE_RJ) == expected
    handler.wait(lambda: len(handler.protocol_errors) == 1, what="on_protocol_error")
    assert handler.requests == []  # refused before the handler was asked
    _assert_echo_works(server.port)


def test_context_negotiation_edge_cases(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        ac = peer.associate(
            [
                (1, VERIFICATION, (IMPLICIT,)),
                (2, VERIFICATION, (IMPLICIT,)),  # even id
                (1, CT_IMAGE_STORAGE, (EXPLICIT,)),  # duplicate id
                (3, "", (EXPLICIT,)),  # no abstract syntax
                (5, CT_IMAGE_STORAGE, ()),  # no transfer syntax
                (7, CT_IMAGE_STORAGE, ("1.2.3.999", IMPLICIT, EXPLICIT)),
            ]
        )
    assert [(cx.context_id, cx.result) for cx in ac.presentation_contexts] == [
        (1, 0),
        (2, 2),
        (1, 2),
        (3, 2),
        (5, 4),
        (7, 0),
    ]
    assert ac.presentation_contexts[-1].transfer_syntax == IMPLICIT
    assert ac.user_information.maximum_length == 262144
    assert ac.user_information.async_operations is None
    assert ac.called_ae_field == b"MERCURY".ljust(16)
    assert ac.calling_ae_field == b"RAWPEER".ljust(16)


def test_unknown_user_information_sub_items_are_skipped(
    server: ServerThread, handler: RecordingHandler
) -> None:
    user = pdu.UserInformation(
        maximum_length=0,
        implementation_class_uid="1.2.3",
        role_selections=(pdu.RoleSelection(CT_IMAGE_STORAGE, True, True),),
    ).encode()
    extra = struct.pack(">BBH", 0x58, 0, 8) + b"\x01\x00\x00\x02ab\x00\x00"
    extra += struct.pack(">BBH", 0x7F, 0, 3) + b"new"
    user = struct.pack(">BBH", 0x50, 0, len(user) - 4 + len(extra)) + user[4:] + extra
    rq = bytearray(associate_rq(CONTEXTS, user_information=pdu.UserInformation()))
    cut = rq.rindex(b"\x50\x00\x00\x00")
    rq[cut:] = user
    struct.pack_into(">I", rq, 2, len(rq) - 6)
    with RawPeer(server.port) as peer:
        peer.send(bytes(rq))
        ac = peer.expect(pdu.A_ASSOCIATE_AC)
        assert isinstance(ac, pdu.AssociateAC)
        assert not ac.user_information.role_selections  # roles are not negotiated
        peer.send_message(1, _echo_rq())
        assert _status(peer.recv_command()) == 0
    assert handler.requests[0].peer_max_pdu == 0
    assert handler.protocol_errors == []


def test_acse_timeout_closes_silent_and_partial_connections(
    make_server: Callable[..., ServerThread],
) -> None:
    handler = RecordingHandler()
    server = make_server(handler, acse_timeout=0.4)
    started = time.monotonic()
    with RawPeer(server.port) as silent, RawPeer(server.port) as partial:
        partial.send(associate_rq(CONTEXTS)[:20])
        silent.expect_closed()
        partial.expect_closed()
    assert time.monotonic() - started >= 0.35
    assert handler.requests == []
    assert handler.closes == []
    _assert_echo_works(server.port)


def test_server_closes_after_abort_if_the_peer_does_not(
    make_server: Callable[..., ServerThread],
) -> None:
    handler = RecordingHandler()
    server = make_server(handler, acse_timeout=0.3)
    with RawPeer(server.port) as peer:
        peer.send(b"\xff" * 10)
        peer.expect(pdu.A_ABORT)
        peer.send(b"ignored while closing")
        peer.expect_closed()


def test_connection_dropped_mid_pdu(server: ServerThread, handler: RecordingHandler) -> None:
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        peer.send(_pdata(_pdv(3, 3, _store_rq(1)), _pdv(3, 0, b"partial data"))[:-3])
    handler.wait(lambda: handler.close_reasons() == ["connection_lost"], what="close")
    assert handler.stores == []
    _assert_echo_works(server.port)


def test_our_responses_are_fragmented_to_the_peer_max_pdu(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS, max_pdu=64)
        peer.send_message(3, _store_rq(1, "1.2.826.0.1.3680043.10.1514.77.1"), b"\x08\x00\x18\x00")
        command = bytearray()
        lengths = []
        while True:
            received = peer.recv_pdu()
            assert received is not None
            pdu_type, raw = received
            assert pdu_type == pdu.P_DATA_TF
            lengths.append(len(raw) - 6)
            pdata = pdu.decode_pdu(raw)
            assert isinstance(pdata, pdu.PDataTF)
            command += b"".join(pdv.data for pdv in pdata.pdvs)
            if pdata.pdvs[-1].is_last:
                break
    assert len(lengths) > 1
    assert max(lengths) <= 64
    response = dimse.decode_command(bytes(command))
    assert response.command_field == dimse.C_STORE_RSP
    assert response.text(dimse.AFFECTED_SOP_INSTANCE_UID) == "1.2.826.0.1.3680043.10.1514.77.1"


def test_messages_split_and_packed_across_pdus(
    server: ServerThread, handler: RecordingHandler
) -> None:
    command = _store_rq(1, "1.2.3.4.5")
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        # Command split over two PDUs, data set in three fragments, the last sharing a PDU
        # with the next message's command.
        peer.send(_pdata(_pdv(3, 1, command[:10])))
        peer.send(_pdata(_pdv(3, 3, command[10:]), _pdv(3, 0, b"ab")))
        peer.send(_pdata(_pdv(3, 0, b"cd")) + _pdata(_pdv(3, 2, b"ef"), _pdv(1, 3, _echo_rq(2))))
        first = dimse.decode_command(peer.recv_command())
        second = dimse.decode_command(peer.recv_command())
    assert (first.command_field, first.us(dimse.MESSAGE_ID_BEING_RESPONDED_TO)) == (0x8001, 1)
    assert (second.command_field, second.us(dimse.MESSAGE_ID_BEING_RESPONDED_TO)) == (0x8030, 2)
    assert handler.stores[0][1].data == b"abcdef"


def test_pipelined_stores_are_answered_in_order_with_backpressure(
    server: ServerThread, handler: RecordingHandler
) -> None:
    handler.gate = threading.Event()
    count = 150  # more than the queue's pause threshold
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        for i in range(1, count + 1):
            peer.send_message(3, _store_rq(i, f"1.2.3.{i}"), bytes(2000))
        handler.wait(lambda: handler.in_flight == 1, what="the first store")
        handler.gate.set()
        answered = [
            dimse.decode_command(peer.recv_command()).us(dimse.MESSAGE_ID_BEING_RESPONDED_TO)
            for _ in range(count)
        ]
    assert answered == list(range(1, count + 1))
    assert [req.message_id for _, req in handler.stores] == list(range(1, count + 1))


def test_cancel_is_ignored_and_stray_responses_are_reported(
    server: ServerThread, handler: RecordingHandler
) -> None:
    cancel = dimse.encode_command(
        [
            (dimse.COMMAND_FIELD, struct.pack("<H", dimse.C_CANCEL_RQ)),
            (dimse.MESSAGE_ID_BEING_RESPONDED_TO, struct.pack("<H", 1)),
            (dimse.COMMAND_DATA_SET_TYPE, struct.pack("<H", dimse.NO_DATA_SET)),
        ]
    )
    stray = dimse.encode_store_rsp(1, CT_IMAGE_STORAGE, "1.2.3", 0)
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_message(1, cancel)
        peer.send_message(3, stray)
        peer.send_message(1, _echo_rq(7))
        response = dimse.decode_command(peer.recv_command())
    assert response.us(dimse.MESSAGE_ID_BEING_RESPONDED_TO) == 7
    assert len(handler.protocol_errors) == 1
    assert "response" in handler.protocol_errors[0][2]


def test_peer_release_waits_for_the_in_flight_store(
    server: ServerThread, handler: RecordingHandler
) -> None:
    handler.gate = threading.Event()
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_message(3, _store_rq(1), b"\x08\x00\x18\x00")
        handler.wait(lambda: handler.in_flight == 1, what="the store to be in flight")
        peer.send(pdu.ReleaseRQ().encode())
        handler.gate.set()
        response = dimse.decode_command(peer.recv_command())  # the response comes first...
        assert response.us(dimse.STATUS) == 0
        peer.expect(pdu.A_RELEASE_RP)  # ...then the release
    handler.wait(lambda: handler.close_reasons() == ["released"], what="close")


def test_peer_abort_discards_the_in_flight_response(
    server: ServerThread, handler: RecordingHandler
) -> None:
    handler.gate = threading.Event()
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_message(3, _store_rq(1), b"\x08\x00\x18\x00")
        handler.wait(lambda: handler.in_flight == 1, what="the store to be in flight")
        peer.send(pdu.Abort(pdu.ABORT_SOURCE_USER, 0).encode())
        peer.expect_closed()  # closed straight away, before the store finished
        handler.gate.set()
    handler.wait(lambda: handler.close_reasons() == ["aborted_by_peer"], what="close")
    assert [kind for kind, _ in handler.events] == ["store_start", "store_end", "close"]


def test_release_from_our_side_waits_for_the_in_flight_store(
    server: ServerThread, handler: RecordingHandler
) -> None:
    assert server.server is not None
    handler.gate = threading.Event()
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_message(3, _store_rq(1), b"\x08\x00\x18\x00")
        handler.wait(lambda: handler.in_flight == 1, what="the store to be in flight")
        (association,) = server.associations()
        released = server.submit(server.server.release(association, timeout=5))
        handler.gate.set()
        assert _status(peer.recv_command()) == 0
        peer.expect(pdu.A_RELEASE_RQ)
        peer.send(pdu.ReleaseRP().encode())
        assert released.result(5) is True
        peer.expect_closed()
    assert handler.close_reasons() == ["released"]


def test_release_collision(server: ServerThread, handler: RecordingHandler) -> None:
    assert server.server is not None
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        (association,) = server.associations()
        released = server.submit(server.server.release(association.id, timeout=5))
        peer.expect(pdu.A_RELEASE_RQ)
        # We (the requestor) had asked too: PS3.8 has the requestor answer first...
        peer.send(pdu.ReleaseRQ().encode())
        peer.send(pdu.ReleaseRP().encode())
        # ...then the acceptor answers, and the requestor closes.
        peer.expect(pdu.A_RELEASE_RP)
        assert released.result(5) is True
    handler.wait(lambda: handler.close_reasons() == ["released"], what="close")


def test_release_from_our_side_times_out_into_an_abort(
    make_server: Callable[..., ServerThread],
) -> None:
    handler = RecordingHandler()
    server = make_server(handler, acse_timeout=0.3)
    assert server.server is not None
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        (association,) = server.associations()
        released = server.submit(server.server.release(association, timeout=5))
        peer.expect(pdu.A_RELEASE_RQ)
        assert peer.expect(pdu.A_ABORT) == pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, 0)
        assert released.result(5) is False
    assert handler.close_reasons() == ["timeout"]


def test_non_ascii_uids_do_not_break_the_response(
    server: ServerThread, handler: RecordingHandler
) -> None:
    command = dimse.encode_command(
        [
            (dimse.AFFECTED_SOP_CLASS_UID, b"1.2.840.10008.5.1.4.1.1.2\x00"),
            (dimse.COMMAND_FIELD, struct.pack("<H", dimse.C_STORE_RQ)),
            (dimse.MESSAGE_ID, struct.pack("<H", 1)),
            (dimse.COMMAND_DATA_SET_TYPE, struct.pack("<H", 0)),
            (dimse.AFFECTED_SOP_INSTANCE_UID, b"1.2.\xff\xfe"),
        ]
    )
    with RawPeer(server.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_message(3, command, b"\x08\x00\x18\x00")
        response = dimse.decode_command(peer.recv_command())
        assert response.us(dimse.STATUS) == 0
        assert response.text(dimse.AFFECTED_SOP_INSTANCE_UID) == "1.2.??"
        peer.send_message(1, _echo_rq(2))
        assert _status(peer.recv_command()) == 0
    assert handler.stores[0][1].sop_instance_uid == "1.2.\ufffd\ufffd"
