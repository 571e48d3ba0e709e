"""mercury's requestor (mercury.dicom.net.client) against real peers: DCMTK storescp,
mercury's own receiver, pynetdicom SCPs for the statuses, and a bare-socket SCP for what
real peers will not do (unlimited PDUs, stopping to read, protocol errors)."""

from __future__ import annotations

import io
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from mercury.dicom.net import (
    MERCURY_IMPLEMENTATION_CLASS_UID,
    MERCURY_IMPLEMENTATION_VERSION_NAME,
    Rejection,
    StoreResult,
    client,
    dimse,
    pdu,
)
from mercury.dicom.net.client import associate
from tests.helpers import dcmtk_env, free_port, make_ct_series, port_open, wait_for
from tests.net.netsupport import (
    CT_IMAGE_STORAGE,
    EXPLICIT,
    HOST,
    IMPLICIT,
    SECONDARY_CAPTURE,
    VERIFICATION,
    RecordingHandler,
    ServerThread,
    dataset_bytes,
    sop_instance_uid,
)

CT_CONTEXTS = [(CT_IMAGE_STORAGE, [EXPLICIT]), (VERIFICATION, [IMPLICIT])]


def connect(port: int, contexts: Any = None, **options: Any) -> client.ClientAssociation:
    options.setdefault("calling_ae", "SCU")
    options.setdefault("called_ae", "MERCURY")
    return associate(HOST, port, contexts=contexts or CT_CONTEXTS, **options)


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four CT slices of 512 x 512 (512 KiB of pixels each)."""
    return make_ct_series(tmp_path_factory.mktemp("ct"), 4)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One slice of 3072 x 3072: 18 MiB of pixel data, more than loopback buffers hold."""
    return make_ct_series(tmp_path_factory.mktemp("big"), 1, rows=3072, columns=3072)[0]


# --- DCMTK storescp ------------------------------------------------------------------------


@dataclass
class StoreScp:
    port: int
    folder: Path

    def received(self) -> dict[str, Path]:
        return {sop_instance_uid(path): path for path in self.folder.iterdir()}


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreScp]]:
    """DCMTK storescp on a free port, writing data sets bit for bit (+B) into a folder."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*options: str, nodelay: bool = True) -> StoreScp:
        assert shutil.which("storescp"), "DCMTK is not installed; run scripts/test.sh"
        port = free_port()
        folder = tmp_path / f"storescp-{port}"
        folder.mkdir()
        log = (tmp_path / f"storescp-{port}.log").open("wb")
        args = ["storescp", "-aet", "MERCURY", "-od", str(folder), "+B", *options, str(port)]
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env(nodelay)
        )
        processes.append(process)

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / f"storescp-{port}.log").read_text()
            return port_open(port)

        wait_for(listening, 20, f"storescp on port {port}")
        return StoreScp(port, folder)

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def test_files_arrive_at_storescp_bit_for_bit(
    storescp: Callable[..., StoreScp], ct_files: list[Path], tmp_path: Path
) -> None:
    peer = storescp()
    samples = []
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"):
        source = get_testdata_file(name)
        assert source is not None
        samples.append(Path(shutil.copy(source, tmp_path / name)))
    contexts = [
        *CT_CONTEXTS,
        ("1.2.840.10008.5.1.4.1.1.4", [EXPLICIT]),  # MR_small
    ]
    threads = threading.active_count()
    with connect(peer.port, contexts) as assoc:
        assert threading.active_count() == threads  # no thread of its own
        assert assoc.peer_max_pdu == 16384
        assert assoc.peer_implementation_version_name.startswith("OFFIS_DCMTK")
        assert assoc.echo().status == 0
        responses = [assoc.store_file(path) for path in [*ct_files, *samples[:2]]]
        with pytest.raises(client.ContextNotAccepted, match=r"1\.2\.840\.10008\.1\.2\.4\.91"):
            assoc.store_file(samples[2])  # JPEG 2000 was not proposed: nothing sent
        assert assoc.is_established
    assert not assoc.is_established
    assert [(r.status, r.category, r.error_comment) for r in responses] == [(0, "Success", "")] * 6
    received = wait_for(lambda: len(peer.received()) == 6 and peer.received(), 20, "6 files")
    for path in [*ct_files, *samples[:2]]:
        assert dataset_bytes(received[sop_instance_uid(path)]) == dataset_bytes(path), path


def test_storescp_without_nodelay(storescp: Callable[..., StoreScp], ct_files: list[Path]) -> None:
    """storescp without TCP_NODELAY writes its responses with Nagle's algorithm on."""
    peer = storescp(nodelay=False)
    with connect(peer.port) as assoc:
        for _ in range(3):
            assert [assoc.store_file(path).status for path in ct_files] == [0] * 4
    wait_for(lambda: len(peer.received()) == 4, 20, "4 files")


def test_refused_by_storescp(storescp: Callable[..., StoreScp]) -> None:
    peer = storescp("--refuse")
    with pytest.raises(client.AssociationRejected) as caught:
        connect(peer.port)
    assert caught.value.result == 1


@pytest.mark.parametrize("option", ["--abort-after", "--abort-during"])
def test_storescp_aborts(
    storescp: Callable[..., StoreScp], big_file: Path, ct_files: list[Path], option: str
) -> None:
    peer = storescp(option)
    assoc = connect(peer.port)
    with pytest.raises(client.PeerAborted) as caught:
        assoc.store_file(big_file if option == "--abort-during" else ct_files[0])
    assert not assoc.is_established
    with pytest.raises(client.AssociationEnded, match="no longer established"):
        assoc.store_file(ct_files[0])
    assoc.release()  # harmless once over
    assert "aborted the association" in str(caught.value)


# --- mercury's receiver --------------------------------------------------------------------


def test_what_mercury_receives(
    server: ServerThread, handler: RecordingHandler, ct_files: list[Path]
) -> None:
    contexts = [
        (CT_IMAGE_STORAGE, [EXPLICIT]),
        (CT_IMAGE_STORAGE, [IMPLICIT, EXPLICIT]),
        (VERIFICATION, [IMPLICIT]),
    ]
    with connect(
        server.port, contexts, calling_ae="OUR_SCU", called_ae="MERCURY", max_pdu=32768
    ) as assoc:
        assert [c.transfer_syntax for c in assoc.contexts] == [EXPLICIT, IMPLICIT, IMPLICIT]
        assert assoc.accepted_syntaxes(CT_IMAGE_STORAGE) == {EXPLICIT, IMPLICIT}
        assert assoc.peer_implementation_class_uid == MERCURY_IMPLEMENTATION_CLASS_UID
        first = assoc.store_file(ct_files[0])
        assoc.echo()
        last = assoc.store_file(ct_files[1], message_id=65535, priority=dimse.PRIORITY_HIGH)
        # A decoded dataset, encoded by us in another transfer syntax.
        dataset = pydicom.dcmread(ct_files[2])
        encoded = client.encode_dataset(dataset, IMPLICIT)
        assoc.store(
            encoded,
            sop_class_uid=CT_IMAGE_STORAGE,
            sop_instance_uid=str(dataset.SOPInstanceUID),
            transfer_syntax=IMPLICIT,
        )
    assert (first.status, last.status) == (0, 0)
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")
    [request] = handler.requests
    assert (request.calling_ae, request.called_ae, request.peer_max_pdu) == (
        "OUR_SCU",
        "MERCURY",
        32768,
    )
    assert request.implementation_class_uid == MERCURY_IMPLEMENTATION_CLASS_UID
    assert request.implementation_version_name == MERCURY_IMPLEMENTATION_VERSION_NAME
    assert request.proposed == (
        (1, CT_IMAGE_STORAGE, (EXPLICIT,)),
        (3, CT_IMAGE_STORAGE, (IMPLICIT, EXPLICIT)),
        (5, VERIFICATION, (IMPLICIT,)),
    )
    stores = [store for _, store in handler.stores]
    assert [(s.message_id, s.priority, s.context.id) for s in stores] == [
        (1, 0, 1),
        (65535, 1, 1),
        (3, 0, 3),
    ]
    assert stores[0].data == dataset_bytes(ct_files[0])
    assert stores[1].data == dataset_bytes(ct_files[1])
    again = pydicom.dcmread(ct_files[2])
    assert stores[2].data == encoded
    decoded = pydicom.filereader.read_dataset(io.BytesIO(encoded), True, True)
    assert decoded.PixelData == again.PixelData
    assert len(handler.echoes) == 1


def test_fragments_fit_a_small_peer_maximum(
    make_server: Callable[..., ServerThread], big_file: Path, ct_files: list[Path]
) -> None:
    """mercury's receiver aborts on a PDU above its maximum: this one takes 16 KiB."""
    handler = RecordingHandler()
    server = make_server(handler, max_pdu=16384)
    with connect(server.port) as assoc:
        assert assoc.peer_max_pdu == 16384
        assert assoc.store_file(big_file).status == 0
        assert assoc.store_file(ct_files[0]).status == 0
    handler.wait(lambda: handler.close_reasons() == ["released"], 30, "release")
    data = handler.data_by_uid()
    assert data[sop_instance_uid(big_file)] == dataset_bytes(big_file)
    assert data[sop_instance_uid(ct_files[0])] == dataset_bytes(ct_files[0])


def test_rejections_keep_their_reasons(make_server: Callable[..., ServerThread]) -> None:
    for rejection in (Rejection.called_ae_not_recognized(), Rejection.congestion()):
        handler = RecordingHandler(reject=lambda _request, r=rejection: r)
        server = make_server(handler)
        with pytest.raises(client.AssociationRejected) as caught:
            connect(server.port)
        rejected = caught.value
        assert (rejected.result, rejected.source, rejected.reason) == (
            rejection.result,
            rejection.source,
            rejection.reason,
        )


def test_no_context_accepted(make_server: Callable[..., ServerThread]) -> None:
    handler = RecordingHandler()
    server = make_server(handler, accept_abstract_syntax=lambda uid: False)
    with pytest.raises(client.NoContextAccepted) as caught:
        connect(server.port, [(CT_IMAGE_STORAGE, [EXPLICIT]), (SECONDARY_CAPTURE, [EXPLICIT])])
    assert [(c.abstract_syntax, c.result) for c in caught.value.contexts] == [
        (CT_IMAGE_STORAGE, pdu.CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED),
        (SECONDARY_CAPTURE, pdu.CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED),
    ]
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")


def test_local_problems_leave_the_association_usable(
    server: ServerThread, handler: RecordingHandler, ct_files: list[Path], tmp_path: Path
) -> None:
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("hello")
    with connect(server.port) as assoc:
        with pytest.raises(client.UnsendableFile, match="cannot open"):
            assoc.store_file(tmp_path / "missing.dcm")
        with pytest.raises(client.UnsendableFile, match="not a DICOM Part 10 file"):
            assoc.store_file(not_dicom)
        with pytest.raises(client.ContextNotAccepted):
            assoc.store(
                b"",
                sop_class_uid=SECONDARY_CAPTURE,
                sop_instance_uid="1.2",
                transfer_syntax=EXPLICIT,
            )
        assert assoc.store_file(ct_files[0]).status == 0
    handler.wait(lambda: len(handler.closes) == 1, what="close")
    assert len(handler.stores) == 1
    assert handler.protocol_errors == []


def test_statuses_and_comments_from_mercury(
    make_server: Callable[..., ServerThread], ct_files: list[Path]
) -> None:
    answers = {
        sop_instance_uid(ct_files[0]): StoreResult(0xB007, "coerced"),
        sop_instance_uid(ct_files[1]): StoreResult(0xA700, "disk full"),
    }
    handler = RecordingHandler(
        store_result=lambda request: answers.get(request.sop_instance_uid, StoreResult(0))
    )
    server = make_server(handler)
    with connect(server.port) as assoc:
        responses = [assoc.store_file(path) for path in ct_files[:3]]
    assert [(r.status, r.category, r.error_comment) for r in responses] == [
        (0xB007, "Warning", "coerced"),
        (0xA700, "Failure", "disk full"),
        (0, "Success", ""),
    ]


@pytest.mark.timeout(30)
def test_no_response_within_the_dimse_timeout(
    make_server: Callable[..., ServerThread], ct_files: list[Path]
) -> None:
    gate = threading.Event()
    handler = RecordingHandler(gate=gate)
    server = make_server(handler)
    try:
        assoc = connect(server.port, dimse_timeout=0.5)
        with pytest.raises(client.PeerTimeout) as caught:
            assoc.store_file(ct_files[0])
        assert (caught.value.phase, caught.value.writing, caught.value.seconds) == (
            "dimse",
            False,
            0.5,
        )
        assert not assoc.is_established
    finally:
        gate.set()
    # on_close comes once the held on_store returns.
    handler.wait(lambda: handler.close_reasons() == ["aborted_by_peer"], what="our A-ABORT")


@pytest.mark.timeout(30)
def test_silent_peer_does_not_answer_the_association_request() -> None:
    with (
        socket.create_server((HOST, 0)) as listener,  # the kernel accepts; nobody speaks
        pytest.raises(client.PeerTimeout) as caught,
    ):
        connect(listener.getsockname()[1], acse_timeout=0.5)
    assert caught.value.phase == "association"
    assert "in answer to the association request" in str(caught.value)


def test_connection_failures() -> None:
    with pytest.raises(client.ConnectFailed) as caught:
        connect(free_port())
    assert caught.value.stage == "connect"
    assert isinstance(caught.value.cause, ConnectionRefusedError)
    with pytest.raises(client.ConnectFailed) as caught:
        associate("no-such-host.invalid", 104, calling_ae="A", called_ae="B", contexts=CT_CONTEXTS)
    assert isinstance(caught.value.cause, socket.gaierror)
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]

        def close_at_once() -> None:
            connection, _ = listener.accept()
            connection.close()

        threading.Thread(target=close_at_once, daemon=True).start()
        with pytest.raises(client.ConnectionClosed, match="in answer to the association request"):
            connect(port)


def test_bad_arguments_fail_before_connecting() -> None:
    port = free_port()  # nothing listens: a connection attempt would say so
    for title in ("", "   ", "SEVENTEEN_CHARS_X", "BACK\\SLASH", "TAB\tX", "ÄÖÜ"):
        with pytest.raises(ValueError, match="invalid AE title"):
            connect(port, calling_ae=title)
    with pytest.raises(ValueError, match="presentation contexts"):
        connect(port, [(CT_IMAGE_STORAGE, [EXPLICIT])] * 129)
    with pytest.raises(ValueError, match="transfer syntax"):
        connect(port, [(CT_IMAGE_STORAGE, [])])


# --- pynetdicom as the peer ----------------------------------------------------------------


@pytest.fixture
def pynetdicom_scp() -> Iterator[Callable[..., int]]:
    servers: list[Any] = []

    def start(status: Callable[[str], int | Dataset], **settings: Any) -> int:
        ae = AE("PYSCP")
        for name, value in settings.items():
            setattr(ae, name, value)
        ae.add_supported_context(CT_IMAGE_STORAGE, [EXPLICIT, IMPLICIT])
        ae.add_supported_context(VERIFICATION)

        def on_store(event: Any) -> int | Dataset:
            return status(str(event.request.AffectedSOPInstanceUID))

        port = free_port()
        servers.append(
            ae.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        )
        return port

    yield start
    for server in servers:
        server.shutdown()


def test_statuses_from_pynetdicom(pynetdicom_scp: Callable[..., int], ct_files: list[Path]) -> None:
    def answer(uid: str) -> int | Dataset:
        if uid == sop_instance_uid(ct_files[1]):
            return 0xB000
        if uid == sop_instance_uid(ct_files[2]):
            status = Dataset()
            status.Status = 0xC123
            status.ErrorComment = "cannot parse it"
            return status
        return 0

    port = pynetdicom_scp(answer, maximum_pdu_size=0)  # 0: any PDU length
    with connect(port) as assoc:
        assert assoc.peer_max_pdu == 0
        responses = [assoc.store_file(path) for path in ct_files[:3]]
        assert assoc.echo().status == 0
    assert [(r.status, r.category, r.error_comment) for r in responses] == [
        (0, "Success", ""),
        (0xB000, "Warning", ""),
        (0xC123, "Failure", "cannot parse it"),
    ]


# --- A bare-socket SCP ---------------------------------------------------------------------


@dataclass
class BareScp:
    """Accepts one association (every context, its first transfer syntax) and answers
    C-STOREs and C-ECHOs as ``mode`` says: "normal", "stop_reading" (after the
    A-ASSOCIATE-AC), "wrong_message_id", or "release" (A-RELEASE-RQ instead of a response)."""

    max_pdu: int = 16384
    mode: str = "normal"
    tls: ssl.SSLContext | None = None
    pdu_lengths: list[int] = field(default_factory=list)
    data_sets: list[bytes] = field(default_factory=list)
    last_pdu: tuple[int, bytes] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(10)

    def _run(self) -> None:
        try:
            connection, _ = self.listener.accept()
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_side=True)
            with connection:
                connection.settimeout(20)
                self._serve(connection)
        except BaseException as exc:  # reported by the test through ``error``
            self.error = exc
        finally:
            self.done.set()

    def _read(self, connection: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = connection.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _read_pdu(self, connection: socket.socket) -> tuple[int, bytes]:
        header = self._read(connection, 6)
        pdu_type, length = pdu.read_header(header)
        body = self._read(connection, length)
        if pdu_type == pdu.P_DATA_TF:
            self.pdu_lengths.append(length)
        self.last_pdu = (pdu_type, body)
        return pdu_type, body

    def _serve(self, connection: socket.socket) -> None:
        _, body = self._read_pdu(connection)
        rq = pdu.decode_associate_rq(body)
        answers = tuple(
            pdu.PresentationContextAC(cx.context_id, 0, cx.transfer_syntaxes[0])
            for cx in rq.presentation_contexts
        )
        connection.sendall(
            pdu.AssociateAC(
                rq.called_ae_field,
                rq.calling_ae_field,
                rq.application_context,
                answers,
                pdu.UserInformation(self.max_pdu, "1.2.3.4", "BARE"),
            ).encode()
        )
        if self.mode == "stop_reading":
            self.stop.wait(30)
            return
        command = bytearray()
        data = bytearray()
        while True:
            pdu_type, body = self._read_pdu(connection)
            if pdu_type == pdu.A_RELEASE_RQ:
                connection.sendall(pdu.ReleaseRP().encode())
                return
            if pdu_type != pdu.P_DATA_TF:
                return
            for context_id, control, fragment in pdu.iter_pdvs(memoryview(body)):
                if control & 1:
                    command += fragment
                    if not control & 2:
                        continue
                    request = dimse.decode_command(command)
                    if request.has_data_set:
                        continue
                else:
                    data += fragment
                    if not control & 2:
                        continue
                    self.data_sets.append(bytes(data))
                request = dimse.decode_command(command)
                command, data = bytearray(), bytearray()
                self._answer(connection, context_id, request)

    def _answer(self, connection: socket.socket, context_id: int, request: dimse.Command) -> None:
        if self.mode == "release":
            connection.sendall(pdu.ReleaseRQ().encode())
            return
        message_id = request.message_id + (1 if self.mode == "wrong_message_id" else 0)
        response = dimse.encode_response(request.command_field | 0x8000, message_id, 0)
        connection.sendall(pdu.encode_pdata(context_id, True, response, 0))


@pytest.fixture
def bare_scp() -> Iterator[Callable[..., BareScp]]:
    started: list[BareScp] = []

    def start(**options: Any) -> BareScp:
        scp = BareScp(**options)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.close()


def test_unlimited_peer_gets_pdus_of_a_sensible_size(
    bare_scp: Callable[..., BareScp], big_file: Path
) -> None:
    scp = bare_scp(max_pdu=0)
    with connect(scp.port) as assoc:
        assert assoc.store_file(big_file).status == 0
    assert scp.done.wait(20)
    assert scp.error is None
    assert scp.data_sets == [dataset_bytes(big_file)]
    assert max(scp.pdu_lengths) == client.MAX_SEND_PDU
    # 18 MiB in 1 MiB PDUs, plus the command and the short first and last fragments.
    assert len(scp.pdu_lengths) <= len(scp.data_sets[0]) // (client.MAX_SEND_PDU - 6) + 3


def test_odd_peer_maximum_and_empty_data_set(
    bare_scp: Callable[..., BareScp], ct_files: list[Path]
) -> None:
    scp = bare_scp(max_pdu=4099)
    with connect(scp.port) as assoc:
        assert assoc.store_file(ct_files[0]).status == 0
        assert (
            assoc.store(
                b"",
                sop_class_uid=CT_IMAGE_STORAGE,
                sop_instance_uid="1.2.3",
                transfer_syntax=EXPLICIT,
            ).status
            == 0
        )
    assert scp.done.wait(20)
    assert scp.error is None
    assert scp.data_sets == [dataset_bytes(ct_files[0]), b""]
    assert max(scp.pdu_lengths) == 4099


@pytest.mark.timeout(30)
def test_peer_that_stops_reading(bare_scp: Callable[..., BareScp], big_file: Path) -> None:
    scp = bare_scp(mode="stop_reading")
    assoc = connect(scp.port, dimse_timeout=0.5)
    with pytest.raises(client.PeerTimeout) as caught:
        assoc.store_file(big_file)
    assert (caught.value.phase, caught.value.writing) == ("dimse", True)
    assert "stopped reading" in str(caught.value)
    assert not assoc.is_established


def test_response_to_another_message_is_a_protocol_error(
    bare_scp: Callable[..., BareScp], ct_files: list[Path]
) -> None:
    scp = bare_scp(mode="wrong_message_id")
    assoc = connect(scp.port)
    with pytest.raises(
        client.PeerProtocolError, match="response to message 2 while waiting for message 1"
    ):
        assoc.store_file(ct_files[0])
    assert scp.done.wait(20)
    assert scp.last_pdu == (
        pdu.A_ABORT,
        bytes((0, 0, pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_REASON_INVALID_PARAMETER)),
    )


def test_peer_releases_instead_of_answering(
    bare_scp: Callable[..., BareScp], ct_files: list[Path]
) -> None:
    scp = bare_scp(mode="release")
    assoc = connect(scp.port)
    with pytest.raises(client.ConnectionClosed, match="released the association"):
        assoc.echo()
    assert not assoc.is_established


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.dispatch.test_dicom_target import _certificates

    return _certificates(tmp_path_factory.mktemp("pki"))


def _client_tls(pki: dict[str, Path], *, with_certificate: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca_cert"]))
    if with_certificate:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return context


def test_tls_with_storescp(
    storescp: Callable[..., StoreScp], pki: dict[str, Path], big_file: Path, ct_files: list[Path]
) -> None:
    peer = storescp(
        "+tls", str(pki["server_key"]), str(pki["server_cert"]), "+cf", str(pki["ca_cert"]), "-pw"
    )
    with connect(peer.port, ssl_context=_client_tls(pki)) as assoc:
        assert assoc.echo().status == 0
        assert assoc.store_file(big_file).status == 0
        assert assoc.store_file(ct_files[0]).status == 0
    received = wait_for(lambda: len(peer.received()) == 2 and peer.received(), 20, "2 files")
    assert dataset_bytes(received[sop_instance_uid(big_file)]) == dataset_bytes(big_file)

    # Our certificate missing: TLS 1.2 servers say so in the handshake ...
    tls12 = _client_tls(pki, with_certificate=False)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(client.ConnectFailed) as caught:
        connect(peer.port, ssl_context=tls12)
    assert caught.value.stage == "tls"
    # ... TLS 1.3 servers after it, in an alert we read, or by closing the connection
    # (which our association request, unread, may turn into a reset before the alert).
    with pytest.raises((client.ConnectFailed, client.ConnectionClosed)) as refused:
        connect(peer.port, ssl_context=_client_tls(pki, with_certificate=False))
    if isinstance(refused.value, client.ConnectFailed):
        assert refused.value.stage == "tls"
    else:
        assert "peer refused our certificate" in str(refused.value)

    impostor = storescp("+tls", str(pki["untrusted_key"]), str(pki["untrusted_cert"]), "-ic")
    with pytest.raises(client.ConnectFailed) as caught:
        connect(impostor.port, ssl_context=_client_tls(pki))
    assert caught.value.stage == "tls"
    assert isinstance(caught.value.cause, ssl.SSLCertVerificationError)


def test_tls_with_a_bare_peer(
    bare_scp: Callable[..., BareScp], pki: dict[str, Path], ct_files: list[Path]
) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki["server_cert"], pki["server_key"])
    scp = bare_scp(tls=server, max_pdu=0)
    with connect(scp.port, ssl_context=_client_tls(pki)) as assoc:
        assert [assoc.store_file(path).status for path in ct_files] == [0] * 4
    assert scp.done.wait(20)
    assert scp.error is None
    assert scp.data_sets == [dataset_bytes(path) for path in ct_files]
