"""pynetdicom's AE as the calling peer: negotiation, fragmentation, release/abort both ways."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association as ScuAssociation
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import (
    AsynchronousOperationsWindowNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityNegotiation,
)

from mercury.dicom.net import Rejection, StoreRequest, StoreResult
from tests.net.netsupport import (
    CT_IMAGE_STORAGE,
    EXPLICIT,
    IMPLICIT,
    JPEG2000,
    MR_IMAGE_STORAGE,
    REFUSED_SOP_CLASS,
    RLE,
    SECONDARY_CAPTURE,
    VERIFICATION,
    RecordingHandler,
    ServerThread,
    dataset_bytes,
    wait_until,
)

DEFLATED = "1.2.840.10008.1.2.1.99"
FIND_MODEL = "1.2.840.10008.5.1.4.1.2.1.1"  # Patient Root Q/R Information Model - FIND


def _file(name: str) -> str:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    return path


def _ae(*contexts: tuple[str, list[str]]) -> AE:
    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = 10
    ae.dimse_timeout = 10
    ae.network_timeout = 10
    for abstract, transfer in contexts:
        ae.add_requested_context(abstract, transfer)
    return ae


@pytest.fixture
def associate() -> Iterator[Callable[..., ScuAssociation]]:
    """Open pynetdicom associations; any left open are aborted at teardown."""
    opened: list[ScuAssociation] = []

    def open_(ae: AE, port: int, **kwargs: Any) -> ScuAssociation:
        kwargs.setdefault("ae_title", "MERCURY")
        assoc = ae.associate("127.0.0.1", port, **kwargs)
        opened.append(assoc)
        return assoc

    yield open_
    for assoc in opened:
        if assoc.is_established:
            assoc.abort()


def _associate_expecting_rj(ae: AE, port: int) -> tuple[int | None, int | None, int | None]:
    """The A-ASSOCIATE-RJ pynetdicom received, as (result, source, reason).

    Read from the received PDU because pynetdicom's requestor has a race of its own: when
    the RJ arrives before its thread checks the socket it reports an abort instead.
    """
    seen: list[tuple[int | None, int | None, int | None]] = []

    def on_pdu(event: evt.Event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            seen.append((event.pdu.result, event.pdu.source, event.pdu.reason_diagnostic))

    assoc = ae.associate(
        "127.0.0.1", port, ae_title="MERCURY", evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)]
    )
    assert not assoc.is_established
    (received,) = seen
    return received


def _contexts(assoc: ScuAssociation) -> dict[int, tuple[str, str]]:
    return {
        int(cx.context_id or 0): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in assoc.accepted_contexts
    }


def test_several_contexts_and_transfer_syntaxes_in_one_association(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    ae = _ae(
        (VERIFICATION, [IMPLICIT]),
        (CT_IMAGE_STORAGE, [EXPLICIT, IMPLICIT]),
        (CT_IMAGE_STORAGE, [IMPLICIT, EXPLICIT]),
        (MR_IMAGE_STORAGE, [RLE]),
        (SECONDARY_CAPTURE, [DEFLATED, JPEG2000, EXPLICIT]),
    )
    assoc = associate(ae, server.port)
    assert assoc.is_established
    # The caller's first acceptable transfer syntax wins, per context.
    assert _contexts(assoc) == {
        1: (VERIFICATION, IMPLICIT),
        3: (CT_IMAGE_STORAGE, EXPLICIT),
        5: (CT_IMAGE_STORAGE, IMPLICIT),
        7: (MR_IMAGE_STORAGE, RLE),
        9: (SECONDARY_CAPTURE, JPEG2000),
    }
    files = [_file(n) for n in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm")]
    for path in files:  # by path: pynetdicom sends the file's data set bytes untouched
        assert assoc.send_c_store(path).Status == 0x0000
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()

    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")
    association = handler.closes[0][0]
    assert {
        cid: (cx.abstract_syntax, cx.transfer_syntax) for cid, cx in association.contexts.items()
    } == (_contexts(assoc))
    request = association.request
    assert request.calling_ae == "PYSCU"
    assert request.called_ae == "MERCURY"
    assert request.proposed[1] == (3, CT_IMAGE_STORAGE, (EXPLICIT, IMPLICIT))
    assert request.implementation_class_uid.startswith("1.2.826.0.1.3680043.9.3811.")
    assert [req.context.id for _, req in handler.stores] == [3, 7, 9]
    for path, (_, stored) in zip(files, handler.stores, strict=True):
        source = dcmread(path, stop_before_pixels=True)
        assert stored.data == dataset_bytes(path)
        assert stored.sop_instance_uid == source.SOPInstanceUID
        assert stored.sop_class_uid == source.SOPClassUID
        assert stored.move_originator_ae is None
        assert stored.move_originator_message_id is None
    assert len(handler.echoes) == 1


def test_rejected_abstract_syntax_is_result_3(
    server: ServerThread, associate: Callable[..., ScuAssociation]
) -> None:
    assoc = associate(
        _ae((CT_IMAGE_STORAGE, [EXPLICIT]), (REFUSED_SOP_CLASS, [EXPLICIT])), server.port
    )
    assert assoc.is_established
    rejected = {str(cx.abstract_syntax): cx.result for cx in assoc.rejected_contexts}
    assert rejected == {REFUSED_SOP_CLASS: 3}
    assoc.release()


def test_refused_transfer_syntax_is_result_4(
    server: ServerThread, associate: Callable[..., ScuAssociation]
) -> None:
    assoc = associate(
        _ae(
            (VERIFICATION, [EXPLICIT]),
            (MR_IMAGE_STORAGE, [DEFLATED]),
            (CT_IMAGE_STORAGE, [JPEG2000]),
        ),
        server.port,
    )
    assert assoc.is_established
    assert _contexts(assoc) == {1: (VERIFICATION, EXPLICIT), 5: (CT_IMAGE_STORAGE, JPEG2000)}
    assert {cx.context_id: cx.result for cx in assoc.rejected_contexts} == {3: 4}
    assoc.release()


def test_verification_is_accepted_whatever_the_storage_policy(
    make_server: Callable[..., ServerThread], associate: Callable[..., ScuAssociation]
) -> None:
    server = make_server(
        RecordingHandler(), accept_abstract_syntax=lambda uid: False, transfer_syntaxes=[]
    )
    assoc = associate(
        _ae(
            (VERIFICATION, [JPEG2000, EXPLICIT]),
            (VERIFICATION, [RLE]),
            (CT_IMAGE_STORAGE, [EXPLICIT]),
        ),
        server.port,
    )
    assert _contexts(assoc) == {1: (VERIFICATION, EXPLICIT)}
    assert {cx.context_id: cx.result for cx in assoc.rejected_contexts} == {3: 4, 5: 3}
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_fragmented_pdvs_and_max_pdu_negotiation(
    make_server: Callable[..., ServerThread], associate: Callable[..., ScuAssociation]
) -> None:
    handler = RecordingHandler()
    server = make_server(handler, max_pdu=4096)
    assoc = associate(_ae((CT_IMAGE_STORAGE, [EXPLICIT])), server.port, max_pdu=8192)
    assert assoc.acceptor.maximum_length == 4096  # what pynetdicom saw in our A-ASSOCIATE-AC
    path = _file("CT_small.dcm")
    assert len(dataset_bytes(path)) > 8 * 4096  # so the peer has to fragment
    assert assoc.send_c_store(path).Status == 0
    assoc.release()
    handler.wait(lambda: len(handler.closes) == 1, what="close")
    assert handler.requests[0].peer_max_pdu == 8192
    assert handler.stores[0][1].data == dataset_bytes(path)


def test_release_from_the_peer(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    assoc = associate(_ae((VERIFICATION, [IMPLICIT])), server.port)
    assert len(server.associations()) == 1
    assoc.release()
    assert assoc.is_released
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")
    assert server.associations() == []


def test_abort_from_the_peer(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    assoc = associate(_ae((VERIFICATION, [IMPLICIT])), server.port)
    assoc.abort()
    handler.wait(lambda: handler.close_reasons() == ["aborted_by_peer"], what="abort")


def test_release_from_our_side(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    assoc = associate(_ae((VERIFICATION, [IMPLICIT])), server.port)
    (association,) = server.associations()
    assert server.server is not None
    assert server.call(server.server.release(association, timeout=5)) is True
    wait_until(lambda: assoc.is_released, what="pynetdicom to see the release")
    assert handler.close_reasons() == ["released"]


def test_abort_from_our_side(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    assoc = associate(_ae((VERIFICATION, [IMPLICIT])), server.port)
    (association,) = server.associations()
    assert server.server is not None
    server.run(lambda: server.server.abort(association.id))  # type: ignore[union-attr]
    wait_until(lambda: assoc.is_aborted, what="pynetdicom to see the abort")
    handler.wait(lambda: handler.close_reasons() == ["aborted_locally"], what="close")


@pytest.mark.parametrize(
    ("rejection", "expected"),
    [
        (Rejection.called_ae_not_recognized(), (1, 1, 7)),
        (Rejection.calling_ae_not_recognized(), (1, 1, 3)),
        (Rejection.congestion(), (2, 3, 1)),
        (Rejection.no_reason(transient=True), (2, 1, 1)),
    ],
)
def test_rejection_from_on_associate(
    server: ServerThread,
    handler: RecordingHandler,
    associate: Callable[..., ScuAssociation],
    rejection: Rejection,
    expected: tuple[int, int, int],
) -> None:
    handler.reject = lambda request: rejection
    assert _associate_expecting_rj(_ae((VERIFICATION, [IMPLICIT])), server.port) == expected
    assert handler.closes == []  # no association, no on_close
    handler.reject = None
    again = associate(_ae((VERIFICATION, [IMPLICIT])), server.port)
    assert again.is_established
    again.release()


def test_on_associate_raising_rejects_transiently(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    def explode(request: object) -> Rejection | None:
        raise RuntimeError("access list unavailable")

    handler.reject = explode
    assert _associate_expecting_rj(_ae((VERIFICATION, [IMPLICIT])), server.port) == (2, 1, 1)


def test_store_handler_exception_is_a_failure_status_not_a_crash(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    calls = 0

    def result(request: StoreRequest) -> StoreResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("spool unavailable")
        return StoreResult(0xB000, "coerced")

    handler.store_result = result
    assoc = associate(_ae((CT_IMAGE_STORAGE, [EXPLICIT])), server.port)
    path = _file("CT_small.dcm")
    failed = assoc.send_c_store(path)
    assert failed.Status == 0xC001
    assert "OSError" in failed.ErrorComment
    assert assoc.is_established
    warned = assoc.send_c_store(path)
    assert warned.Status == 0xB000
    assert warned.ErrorComment == "coerced"
    assoc.release()
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")


def test_unsupported_dimse_command_gets_unrecognized_operation(
    server: ServerThread, associate: Callable[..., ScuAssociation]
) -> None:
    assoc = associate(_ae((FIND_MODEL, [IMPLICIT]), (VERIFICATION, [IMPLICIT])), server.port)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    responses = list(assoc.send_c_find(query, FIND_MODEL))
    assert [status.Status for status, _ in responses] == [0x0211]
    assert assoc.send_c_echo().Status == 0  # the association carries on
    assoc.release()


def test_role_selection_and_extended_negotiation_are_ignored(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 2
    identity.primary_field = b"user"
    identity.secondary_field = b"secret"
    identity.positive_response_requested = True
    extended = SOPClassExtendedNegotiation()
    extended.sop_class_uid = CT_IMAGE_STORAGE
    extended.service_class_application_information = b"\x02\x00\x00\x00\x00\x00"
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 5
    window.maximum_number_operations_performed = 5
    ext_neg = [
        build_role(CT_IMAGE_STORAGE, scu_role=True, scp_role=True),
        identity,
        extended,
        window,
    ]
    assoc = associate(_ae((CT_IMAGE_STORAGE, [EXPLICIT])), server.port, ext_neg=ext_neg)
    assert assoc.is_established
    assert assoc.send_c_store(_file("CT_small.dcm")).Status == 0
    assoc.release()
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")


def test_many_concurrent_associations(
    server: ServerThread, handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    path = _file("CT_small.dcm")
    count, per_association = 24, 3

    def one(i: int) -> list[int | None]:
        ds = dcmread(path)
        ae = _ae((CT_IMAGE_STORAGE, [EXPLICIT]))
        ae.dimse_timeout = 3
        assoc = ae.associate("127.0.0.1", server.port, ae_title="MERCURY")
        assert assoc.is_established
        statuses: list[int | None] = []
        for j in range(per_association):
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1514.98.{i}.{j}"
            statuses.append(getattr(assoc.send_c_store(ds), "Status", None))
            if not assoc.is_established:
                break
        if assoc.is_established:
            assoc.release()
        return statuses

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    # pynetdicom's requestor has a race between its reactor thread and send_c_store: under
    # GIL contention the reactor can take the C-STORE-RSP off the queue and drop it with
    # "Received unexpected C-STORE service message". Such a response did arrive, so it is
    # counted as delivered; any other missing status is a failure.
    missing = sum(status is None for statuses in results for status in statuses)
    stolen = sum("unexpected C-STORE" in record.getMessage() for record in caplog.records)
    assert missing == stolen
    assert all(status in (0, None) for statuses in results for status in statuses)
    handler.wait(lambda: len(handler.closes) == count, what="all closed")
    assert set(handler.close_reasons()) <= {"released", "aborted_by_peer"}
    assert handler.close_reasons().count("aborted_by_peer") == stolen
    sent = sum(len(statuses) for statuses in results)
    assert len(handler.data_by_uid()) == sent
    assert len({a.id for a, _ in handler.closes}) == count


def test_association_limit(
    make_server: Callable[..., ServerThread], associate: Callable[..., ScuAssociation]
) -> None:
    handler = RecordingHandler()
    server = make_server(handler, max_associations=2)
    ae = _ae((VERIFICATION, [IMPLICIT]))
    first, second = associate(ae, server.port), associate(ae, server.port)
    assert first.is_established
    assert second.is_established
    assert _associate_expecting_rj(ae, server.port) == (2, 3, 2)
    first.release()
    handler.wait(lambda: len(handler.closes) == 1, what="first closed")
    fourth = associate(ae, server.port)
    assert fourth.is_established
    second.release()
    fourth.release()


def test_network_timeout_aborts_idle_associations(
    make_server: Callable[..., ServerThread], associate: Callable[..., ScuAssociation]
) -> None:
    handler = RecordingHandler()
    server = make_server(handler, network_timeout=0.5)
    assoc = associate(_ae((VERIFICATION, [IMPLICIT])), server.port)
    assert assoc.send_c_echo().Status == 0
    wait_until(lambda: assoc.is_aborted, timeout=5, what="the idle abort")
    handler.wait(lambda: handler.close_reasons() == ["timeout"], what="timeout close")


def test_peer_abort_while_a_store_is_in_flight(
    server: ServerThread, handler: RecordingHandler, associate: Callable[..., ScuAssociation]
) -> None:
    handler.gate = threading.Event()
    assoc = associate(_ae((CT_IMAGE_STORAGE, [EXPLICIT])), server.port)
    # pynetdicom's sender only gives up on its DIMSE timeout, so it is not joined.
    sender = threading.Thread(target=assoc.send_c_store, args=(_file("CT_small.dcm"),), daemon=True)
    sender.start()
    handler.wait(lambda: handler.in_flight == 1, what="the store to be in flight")
    assoc.abort()
    # The abort is seen while on_store is still running...
    wait_until(lambda: server.associations() == [], what="the server to see the abort")
    assert handler.closes == []
    handler.gate.set()
    # ...and on_close comes only after on_store returned.
    handler.wait(lambda: handler.close_reasons() == ["aborted_by_peer"], what="close")
    assert [kind for kind, _ in handler.events] == ["store_start", "store_end", "close"]


def test_server_close_releases_idle_and_aborts_stuck_associations(
    make_server: Callable[..., ServerThread], associate: Callable[..., ScuAssociation]
) -> None:
    gate = threading.Event()
    handler = RecordingHandler(gate=gate)
    server = make_server(handler)
    idle = associate(_ae((VERIFICATION, [IMPLICIT])), server.port)
    busy = associate(_ae((CT_IMAGE_STORAGE, [EXPLICIT])), server.port)
    sender = threading.Thread(target=busy.send_c_store, args=(_file("CT_small.dcm"),))
    sender.start()
    handler.wait(lambda: handler.in_flight == 1, what="the store to be in flight")
    assert server.server is not None
    closing = server.submit(server.server.close(abort_after=0.3))
    wait_until(lambda: idle.is_released, what="the idle association to be released")
    wait_until(lambda: busy.is_aborted, what="the stuck association to be aborted")
    closing.result(10)
    assert sorted(handler.close_reasons()) == ["aborted_locally", "released"]
    gate.set()
    sender.join(10)
    refused = _ae((VERIFICATION, [IMPLICIT])).associate("127.0.0.1", server.port)
    assert not refused.is_established


def test_pynetdicom_max_pdu_is_respected_for_responses(
    server: ServerThread, associate: Callable[..., ScuAssociation], tmp_path: Path
) -> None:
    # pynetdicom will not go below its own minimum, so a small max only proves nothing
    # breaks; byte-level fragmentation of our responses is covered with a raw peer.
    assoc = associate(_ae((VERIFICATION, [IMPLICIT])), server.port, max_pdu=4096)
    assert assoc.send_c_echo().Status == 0
    assoc.release()
