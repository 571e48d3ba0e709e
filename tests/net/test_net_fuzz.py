"""Random input never hurts the server: every connection ends cleanly, others keep working."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mercury.dicom.net import dimse, pdu
from tests.net.netsupport import (
    CT_IMAGE_STORAGE,
    EXPLICIT,
    IMPLICIT,
    VERIFICATION,
    RawPeer,
    RecordingHandler,
    ServerThread,
    associate_rq,
    wait_until,
)

CONTEXTS = ((1, VERIFICATION, (IMPLICIT,)), (3, CT_IMAGE_STORAGE, (EXPLICIT,)))


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerThread]:
    with ServerThread(RecordingHandler(), acse_timeout=2.0) as running:
        yield running


def _pdu_header(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


# Mostly-plausible PDUs with random bodies find more than uniform noise does.
plausible = st.one_of(
    st.binary(max_size=300),
    st.builds(_pdu_header, st.integers(1, 7), st.binary(max_size=300)),
    st.builds(
        lambda cid, control, data: _pdu_header(
            4, struct.pack(">IBB", len(data) + 2, cid, control) + data
        ),
        st.sampled_from([1, 3, 5]),
        st.integers(0, 3),
        st.binary(max_size=200),
    ),
)


def _drain(peer: RawPeer) -> list[int]:
    """Half-close, then read what the server says until it closes; the PDU types seen."""
    with contextlib.suppress(OSError):  # the server may have closed first: still read its PDUs
        peer.sock.shutdown(socket.SHUT_WR)
    seen = []
    while (received := peer.recv_pdu()) is not None:
        seen.append(received[0])
    return seen


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=st.booleans(), chunks=st.lists(plausible, min_size=1, max_size=4))
def test_random_input_ends_cleanly(
    fuzz_server: ServerThread, before: bool, chunks: list[bytes]
) -> None:
    handler = fuzz_server.handler
    with RawPeer(fuzz_server.port, timeout=5) as peer:
        if not before:
            peer.associate(CONTEXTS)
        for chunk in chunks:
            try:
                peer.send(chunk)
            except OSError:
                break  # the server already aborted and closed
        seen = _drain(peer)
    allowed = {pdu.A_ASSOCIATE_AC, pdu.A_ASSOCIATE_RJ, pdu.P_DATA_TF, pdu.A_RELEASE_RP, pdu.A_ABORT}
    assert set(seen) <= allowed
    assert not [m for _, _, m in handler.protocol_errors if "internal error" in m]


def test_server_still_serves_after_fuzzing(fuzz_server: ServerThread) -> None:
    with RawPeer(fuzz_server.port) as peer:
        peer.send(associate_rq(CONTEXTS))
        peer.expect(pdu.A_ASSOCIATE_AC)
        echo = dimse.encode_request(
            dimse.C_ECHO_RQ, 1, sop_class_uid=VERIFICATION, has_data_set=False
        )
        peer.send_message(1, echo)
        assert dimse.decode_command(peer.recv_command()).us(dimse.STATUS) == 0
        peer.send(pdu.ReleaseRQ().encode())
        peer.expect(pdu.A_RELEASE_RP)
    wait_until(lambda: fuzz_server.associations() == [], what="all associations to end")
