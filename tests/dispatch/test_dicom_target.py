"""The dicom and dicomtls targets against real peers: DCMTK storescp, Orthanc, and
pynetdicom SCPs that answer the way a test needs."""

from __future__ import annotations

import datetime
import ipaddress
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import StorageCommitmentPushModel

from mercury.config.targets import DicomTarget, DicomTlsTarget
from mercury.dicom.net import client
from mercury.dicom.syntax import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from mercury.dicom.transcode import JPEG_LS_LOSSLESS, RLE_LOSSLESS, encoder_problem
from mercury.dispatch.base import (
    Origin,
    SenderContext,
    SendFailed,
    SendReport,
    Shipment,
    TargetUnreachable,
)
from mercury.dispatch.registry import create_sender
from mercury.dispatch.targets.dicom import (
    MAX_CONTEXTS,
    NOT_ACCEPTED,
    STORAGE_COMMITMENT_INSTANCE,
    DicomSender,
    _own_the_message_queue,
    choose_route,
    parse_commitment_report,
    plan_batches,
    requested_syntaxes,
)
from tests.dispatch.support import ORIGIN, outgoing, shipment
from tests.helpers import (
    CT_IMAGE_STORAGE,
    dcmtk_env,
    free_port,
    make_ct_series,
    make_small_images,
    port_open,
    wait_for,
)
from tests.peers import Orthanc

J2K = "1.2.840.10008.1.2.4.91"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
COMPRESSED_SAMPLES = ("JPEG2000.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm")
UNDECODABLE_SAMPLE = "JPEG-lossy.dcm"  # pylibjpeg cannot decode this JPEG Extended file
ALL_SYNTAXES = [
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    J2K,
    RLE_LOSSLESS,
    JPEG_LOSSLESS_SV1,
]


# --- Building senders and shipments --------------------------------------------------------


def make_sender(tmp_path: Path, extra: dict[str, Any] | None = None, **fields: Any) -> DicomSender:
    config: dict[str, Any] = {"target_type": "dicom", "ip": "127.0.0.1", "aet_target": "PEER"}
    config.update(fields)
    model = DicomTlsTarget if config["target_type"] == "dicomtls" else DicomTarget
    target = model.model_validate(config)
    context = SenderContext(default_ae_title="MERCURY", work_folder=tmp_path, extra=extra or {})
    sender = create_sender("peer", target, context)
    assert isinstance(sender, DicomSender)
    return sender


def samples(tmp_path: Path, *names: str) -> list[Path]:
    """pydicom's test files, each with a SOP Instance UID of its own (some share one)."""
    folder = tmp_path / "samples"
    folder.mkdir(exist_ok=True)
    paths = []
    for name in names:
        source = get_testdata_file(name)
        assert source is not None, name
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / name, enforce_file_format=True)
        paths.append(folder / name)
    return paths


def by_uid(report: SendReport) -> dict[str, Any]:
    return {result.sop_instance_uid: result for result in report.results}


def dataset_part(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file, after its file meta information."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# --- DCMTK storescp ------------------------------------------------------------------------


@dataclass
class StoreScp:
    port: int
    folder: Path
    process: subprocess.Popen[bytes]
    log: Path

    def received(self) -> list[Path]:
        return sorted(path for path in self.folder.iterdir() if path.is_file())

    def wait_received(self, count: int) -> list[Path]:
        wait_for(lambda: len(self.received()) >= count, 20, f"{count} files in {self.folder}")
        return self.received()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreScp]]:
    """Start DCMTK storescp on a free port (bit-preserving, into a tmp folder)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*options: str, nodelay: bool = True, ae_title: str = "PEER") -> StoreScp:
        assert shutil.which("storescp"), "DCMTK is not installed; run scripts/test.sh"
        port = free_port()
        folder = tmp_path / f"storescp-{port}"
        folder.mkdir()
        log = tmp_path / f"storescp-{port}.log"
        args = ["storescp", "-aet", ae_title, "-od", str(folder), "+B", *options, str(port)]
        with log.open("wb") as output:
            process = subprocess.Popen(
                args, stdout=output, stderr=subprocess.STDOUT, env=dcmtk_env(nodelay)
            )
        processes.append(process)

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"storescp exited: {log.read_text()}")
            return port_open(port)

        wait_for(listening, 20, f"storescp on port {port}")
        return StoreScp(port, folder, process, log)

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# --- pynetdicom SCPs -----------------------------------------------------------------------


@dataclass
class PyScp:
    """A pynetdicom storage SCP: which SOP classes it takes, what it answers, what it saw."""

    port: int
    stored: list[str] = field(default_factory=list)
    titles: list[tuple[str, str]] = field(default_factory=list)
    """(calling AE, called AE) of every association."""
    hosts: list[str] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    """Set at teardown: handlers that hold an answer back stop waiting."""


@pytest.fixture
def pyscp() -> Iterator[Callable[..., PyScp]]:
    servers: list[Any] = []
    peers: list[PyScp] = []

    def start(
        sop_classes: Sequence[str] = (CT_IMAGE_STORAGE,),
        statuses: dict[str, int] | None = None,
        hold: Callable[[str], bool] = lambda uid: False,
        commitment: str | None = None,
        failed_commitments: Sequence[str] = (),
        stop_reading_after: int | None = None,
    ) -> PyScp:
        """``hold(uid)``: do not answer that C-STORE until teardown. ``commitment``:
        'same' answers N-ACTION and sends the report on the same association, 'never'
        answers N-ACTION and never reports. ``stop_reading_after``: stop reading from the
        connection after that many PDUs, until teardown."""
        peer = PyScp(free_port())
        ae = AE("PYSCP")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class, ALL_SYNTAXES)
        if commitment:
            ae.add_supported_context(StorageCommitmentPushModel)

        def on_requested(event: Any) -> None:
            primitive = event.assoc.requestor.primitive
            peer.titles.append(
                (primitive.calling_ae_title.strip(), primitive.called_ae_title.strip())
            )
            peer.hosts.append(event.assoc.requestor.address)

        def on_store(event: Any) -> int:
            uid = str(event.request.AffectedSOPInstanceUID)
            if hold(uid):
                peer.released.wait(30)
            peer.stored.append(uid)
            return (statuses or {}).get(uid, 0x0000)

        def on_action(event: Any) -> tuple[int, None]:
            info = event.action_information
            if commitment == "same":
                report = Dataset()
                report.TransactionUID = info.TransactionUID
                committed, failed = [], []
                for item in info.ReferencedSOPSequence:
                    reference = Dataset()
                    reference.ReferencedSOPClassUID = item.ReferencedSOPClassUID
                    reference.ReferencedSOPInstanceUID = item.ReferencedSOPInstanceUID
                    if item.ReferencedSOPInstanceUID in failed_commitments:
                        reference.FailureReason = 0x0112
                        failed.append(reference)
                    else:
                        committed.append(reference)
                report.ReferencedSOPSequence = committed
                if failed:
                    report.FailedSOPSequence = failed
                assoc = event.assoc

                def send_report() -> None:  # runs once this handler's response is out
                    assoc.send_n_event_report(
                        report,
                        2 if failed else 1,
                        StorageCommitmentPushModel,
                        STORAGE_COMMITMENT_INSTANCE,
                    )

                threading.Thread(target=send_report, daemon=True).start()
            return 0x0000, None

        pdus = 0

        def on_pdu(event: Any) -> None:  # runs on the connection's reading thread
            nonlocal pdus
            pdus += 1
            if stop_reading_after is not None and pdus >= stop_reading_after:
                peer.released.wait(30)

        handlers = [
            (evt.EVT_PDU_RECV, on_pdu),
            (evt.EVT_REQUESTED, on_requested),
            (evt.EVT_C_STORE, on_store),
            (evt.EVT_N_ACTION, on_action),
        ]
        servers.append(
            ae.start_server(("127.0.0.1", peer.port), block=False, evt_handlers=handlers)
        )
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.released.set()
    for server in servers:
        server.shutdown()


# --- Orthanc -------------------------------------------------------------------------------


@dataclass
class OrthancPeer:
    orthanc: Orthanc
    commitment_port: int

    def instance_uids(self) -> set[str]:
        uids = set()
        for instance in self.orthanc.get("/instances"):
            request = self.orthanc.url + f"/instances/{instance}/file"
            import urllib.request
            from io import BytesIO

            with urllib.request.urlopen(request, timeout=10) as response:
                uids.add(str(pydicom.dcmread(BytesIO(response.read())).SOPInstanceUID))
        return uids


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """One Orthanc for the module. It checks the called AE title and knows us as modality
    MERCURY, whose storage commitment listener is at ``commitment_port``."""
    commitment_port = free_port()
    server = Orthanc(
        tmp_path_factory.mktemp("orthanc"),
        modalities={"MERCURY": ["MERCURY", "127.0.0.1", commitment_port]},
        extra={"DicomCheckCalledAet": True},
    )
    server.start()
    try:
        yield OrthancPeer(server, commitment_port)
    finally:
        server.stop()


# --- Planning and choosing (no network) ----------------------------------------------------


def test_requested_syntaxes_per_policy() -> None:
    assert requested_syntaxes("as_received", [J2K]) == [
        J2K,
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
    ]
    assert requested_syntaxes("as_received", [IMPLICIT_VR_LITTLE_ENDIAN]) == [
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
    ]
    assert requested_syntaxes("uncompressed", [J2K]) == [
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
    ]
    assert requested_syntaxes(RLE_LOSSLESS, [J2K])[0] == RLE_LOSSLESS


def test_contexts_are_split_over_associations_by_sop_class(tmp_path: Path) -> None:
    items = outgoing(make_small_images(tmp_path, 2, size=8))
    many = [
        replace(items[index % 2], sop_class_uid=f"1.2.3.{index}", sop_instance_uid=f"9.{index}")
        for index in range(70)
    ]
    batches = plan_batches(many, "uncompressed", reserved=1)
    assert [len(batch.instances) for batch in batches] == [63, 7]
    assert all(len(batch.contexts) <= MAX_CONTEXTS - 1 for batch in batches)
    assert len(plan_batches(many[:10], "as_received")) == 1


def test_choose_route() -> None:
    both = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})
    assert choose_route("as_received", J2K, frozenset({J2K, *both})).convert is False
    route = choose_route("as_received", J2K, both)
    assert route.syntax == EXPLICIT_VR_LITTLE_ENDIAN
    assert route.convert
    assert "does not accept JPEG 2000" in route.why
    route = choose_route("as_received", J2K, frozenset({IMPLICIT_VR_LITTLE_ENDIAN}))
    assert route.syntax == IMPLICIT_VR_LITTLE_ENDIAN
    assert choose_route("uncompressed", J2K, frozenset({J2K, *both})).syntax == (
        EXPLICIT_VR_LITTLE_ENDIAN
    )
    assert choose_route("uncompressed", IMPLICIT_VR_LITTLE_ENDIAN, both).convert is False
    route = choose_route(RLE_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN, frozenset({RLE_LOSSLESS}))
    assert (route.syntax, route.convert) == (RLE_LOSSLESS, True)
    assert choose_route(RLE_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN, both).convert is False
    assert choose_route("as_received", J2K, frozenset()).why == NOT_ACCEPTED
    refused = choose_route("uncompressed", J2K, frozenset({J2K}))
    assert refused.syntax is None
    assert "only in JPEG 2000" in refused.why


def test_commitment_report_parsing() -> None:
    report = Dataset()
    ok, bad, silent = Dataset(), Dataset(), Dataset()
    ok.ReferencedSOPInstanceUID = "1.1"
    bad.ReferencedSOPInstanceUID = "1.2"
    bad.FailureReason = 0x0112
    silent.ReferencedSOPInstanceUID = "1.3"
    report.ReferencedSOPSequence = [ok]
    report.FailedSOPSequence = [bad, silent]
    results = parse_commitment_report(report)
    assert results["1.1"].committed
    assert results["1.2"].reason == "the peer did not commit it: 0x0112 no such object instance"
    assert not results["1.3"].committed


def test_the_reactor_never_takes_a_response() -> None:
    """The NODELAY race needs the reactor's non-blocking read to take a response off the
    queue; with our queue handling that read always comes back empty."""

    class Dul:
        to_provider_queue: queue.Queue[Any] = queue.Queue()

        def is_alive(self) -> bool:
            return True

    class Dimse:
        msg_queue: queue.Queue[Any] = queue.Queue()

        def get_msg(self, block: bool = False) -> Any:
            raise AssertionError("replaced")

    class Assoc:
        dimse = Dimse()
        dul = Dul()
        is_aborted = False

    assoc = Assoc()
    _own_the_message_queue(assoc, dimse_timeout=5)
    assoc.dimse.msg_queue.put((1, "C-STORE-RSP"))
    assert assoc.dimse.get_msg(block=False) == (None, None)
    assert assoc.dimse.get_msg(block=True) == (1, "C-STORE-RSP")
    assoc.is_aborted = True
    assert assoc.dimse.get_msg(block=True) == (None, None)


# --- Sending to real peers -----------------------------------------------------------------


def test_ct_series_arrives_byte_for_byte(tmp_path: Path, storescp: Callable[..., StoreScp]) -> None:
    peer = storescp()
    files = make_ct_series(tmp_path / "ct", 4, rows=64, columns=64)
    sender = make_sender(tmp_path, port=peer.port)
    assert sender.describe() == f"DICOM PEER@127.0.0.1:{peer.port}"
    assert sender.resumable

    report = sender.send(shipment(files))

    assert [result.status for result in report.results] == ["sent"] * 4
    assert all(result.code == 0 for result in report.results)
    assert report.notes == []
    received = {uid_of(path): path for path in peer.wait_received(4)}
    for path in files:
        assert dataset_part(received[uid_of(path)]) == dataset_part(path)


def test_ct_series_to_orthanc(tmp_path: Path, orthanc: OrthancPeer) -> None:
    files = make_ct_series(tmp_path / "ct", 3, rows=64, columns=64)
    sender = make_sender(tmp_path, port=orthanc.orthanc.dicom_port, aet_target="ORTHANC")
    report = sender.send(shipment(files))
    assert {result.status for result in report.results} == {"sent"}
    assert {uid_of(path) for path in files} <= orthanc.instance_uids()


def test_compressed_instances_decompressed_for_an_uncompressed_peer(
    tmp_path: Path, storescp: Callable[..., StoreScp]
) -> None:
    peer = storescp()  # storescp accepts only uncompressed syntaxes unless told otherwise
    paths = samples(tmp_path, *COMPRESSED_SAMPLES, UNDECODABLE_SAMPLE)
    sender = make_sender(tmp_path, port=peer.port)

    report = sender.send(shipment(paths))

    results = by_uid(report)
    for path in paths[:-1]:
        result = results[uid_of(path)]
        assert result.status == "sent", result
        assert "to Explicit VR Little Endian: the peer does not accept" in result.message
    broken = results[uid_of(paths[-1])]
    assert broken.status == "failed"
    assert "cannot decompress JPEG Extended" in broken.message
    assert any(
        note.startswith("converted 1 instance(s) from JPEG 2000 Image Compression to Explicit")
        for note in report.notes
    )
    received = {uid_of(path): path for path in peer.wait_received(3)}
    assert set(received) == {uid_of(path) for path in paths[:-1]}  # same instance UIDs
    for path in paths[:-1]:
        arrived = pydicom.dcmread(received[uid_of(path)])
        assert arrived.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
        assert np.array_equal(arrived.pixel_array, pydicom.dcmread(path).pixel_array)


def test_policies_uncompressed_and_as_received(
    tmp_path: Path, storescp: Callable[..., StoreScp]
) -> None:
    peer = storescp("+xa")  # accepts compressed syntaxes too
    j2k, rle = samples(tmp_path, "JPEG2000.dcm", "SC_rgb_rle.dcm")

    report = make_sender(tmp_path, port=peer.port, transfer_syntax="uncompressed").send(
        shipment([j2k, rle])
    )
    assert {result.status for result in report.results} == {"sent"}
    assert any("the target asks for uncompressed" in note for note in report.notes)
    arrived = peer.wait_received(2)
    assert {str(pydicom.dcmread(path).file_meta.TransferSyntaxUID) for path in arrived} == {
        EXPLICIT_VR_LITTLE_ENDIAN
    }
    for path in arrived:
        path.unlink()

    report = make_sender(tmp_path, port=peer.port).send(shipment([j2k]))
    assert report.results[0].status == "sent"
    assert report.notes == []
    (arrived_j2k,) = peer.wait_received(1)
    assert dataset_part(arrived_j2k) == dataset_part(j2k)


def test_named_transfer_syntax(tmp_path: Path, storescp: Callable[..., StoreScp]) -> None:
    peer = storescp("+xa")
    files = make_ct_series(tmp_path / "ct", 2, rows=32, columns=32)
    report = make_sender(tmp_path, port=peer.port, transfer_syntax=RLE_LOSSLESS).send(
        shipment(files)
    )
    assert {result.status for result in report.results} == {"sent"}
    assert (
        "converted 2 instance(s) from Explicit VR Little Endian to RLE Lossless"
        in (report.notes[0])
    )
    received = {uid_of(path): path for path in peer.wait_received(2)}
    for path in files:
        arrived = pydicom.dcmread(received[uid_of(path)])
        assert arrived.file_meta.TransferSyntaxUID == RLE_LOSSLESS
        assert np.array_equal(arrived.pixel_array, pydicom.dcmread(path).pixel_array)

    if encoder_problem(JPEG_LS_LOSSLESS) is None:  # pragma: no cover - pyjpegls installed
        return
    report = make_sender(tmp_path, port=peer.port, transfer_syntax=JPEG_LS_LOSSLESS).send(
        shipment(files)
    )
    for result in report.results:
        assert result.status == "failed"
        assert "no encoder for JPEG-LS Lossless Image Compression is installed" in result.message


def test_refused_sop_class_fails_only_its_instances(
    tmp_path: Path, pyscp: Callable[..., PyScp]
) -> None:
    peer = pyscp(sop_classes=[CT_IMAGE_STORAGE])
    ct = make_ct_series(tmp_path / "ct", 2, rows=16, columns=16)
    sc = make_small_images(tmp_path / "sc", 1, size=8)
    sender = make_sender(tmp_path, port=peer.port)

    results = by_uid(sender.send(shipment([*ct, *sc])))
    assert [results[uid_of(path)].status for path in ct] == ["sent", "sent"]
    assert results[uid_of(sc[0])].status == "failed"
    assert results[uid_of(sc[0])].message == NOT_ACCEPTED

    # An association with no accepted context at all: every instance fails the same way.
    report = sender.send(shipment(sc))
    assert [(r.status, r.message) for r in report.results] == [("failed", NOT_ACCEPTED)]


def test_failure_and_warning_statuses(tmp_path: Path, pyscp: Callable[..., PyScp]) -> None:
    files = make_ct_series(tmp_path / "ct", 3, rows=16, columns=16)
    uids = [uid_of(path) for path in files]
    peer = pyscp(statuses={uids[1]: 0xB000, uids[2]: 0xA700})

    results = by_uid(make_sender(tmp_path, port=peer.port).send(shipment(files)))

    assert (results[uids[0]].status, results[uids[0]].code) == ("sent", 0)
    assert (results[uids[1]].status, results[uids[1]].code) == ("warning", 0xB000)
    assert "0xB000" in results[uids[1]].message
    assert (results[uids[2]].status, results[uids[2]].code) == ("failed", 0xA700)
    assert results[uids[2]].message.startswith("0xA700 Refused: Out of Resources")


@pytest.mark.timeout(30)
def test_peer_that_never_answers(tmp_path: Path, pyscp: Callable[..., PyScp]) -> None:
    files = make_ct_series(tmp_path / "ct", 3, rows=16, columns=16)
    second = uid_of(files[1])
    peer = pyscp(hold=lambda uid: uid == second)
    sender = make_sender(tmp_path, port=peer.port, dimse_timeout=1)

    with pytest.raises(SendFailed) as caught:
        sender.send(shipment(files))

    assert "no response to the C-STORE" in str(caught.value)
    assert "within 1 s (dimse_timeout)" in str(caught.value)
    assert [(r.sop_instance_uid, r.status) for r in caught.value.results] == [
        (uid_of(files[0]), "sent")
    ]


@pytest.mark.timeout(30)
def test_peer_that_stops_reading_mid_transfer(tmp_path: Path, pyscp: Callable[..., PyScp]) -> None:
    """A peer that stops reading leaves our writes blocked; the DIMSE timeout (counted from
    the last data written) must end them."""
    big = make_ct_series(tmp_path / "big", 1, rows=3072, columns=3072)  # 18 MiB of pixels
    peer = pyscp(stop_reading_after=20)
    sender = make_sender(tmp_path, port=peer.port, dimse_timeout=1)
    with pytest.raises(SendFailed, match="no response to the C-STORE"):
        sender.send(shipment(big))


@pytest.mark.timeout(30)
def test_silent_tcp_peer(tmp_path: Path) -> None:
    with socket.socket() as listener:  # the kernel accepts connections; nobody speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        sender = make_sender(tmp_path, port=port, connect_timeout=1)
        with pytest.raises(TargetUnreachable, match="did not answer the association request"):
            sender.send(shipment(make_small_images(tmp_path, 1, size=8)))


def test_nothing_listening(tmp_path: Path) -> None:
    port = free_port()
    sender = make_sender(tmp_path, port=port)
    with pytest.raises(TargetUnreachable) as caught:
        sender.send(shipment(make_small_images(tmp_path, 1, size=8)))
    assert f"connection refused at 127.0.0.1:{port}" in str(caught.value)
    assert caught.value.results == []
    probe = sender.probe()
    assert not probe.ok
    assert f"connection refused at 127.0.0.1:{port}" in probe.message


def test_called_ae_title_rejected(tmp_path: Path, orthanc: OrthancPeer) -> None:
    sender = make_sender(tmp_path, port=orthanc.orthanc.dicom_port, aet_target="NOTORTHANC")
    expected = (
        f"association rejected by NOTORTHANC at 127.0.0.1:{orthanc.orthanc.dicom_port}: "
        "called AE title not recognised"
    )
    with pytest.raises(TargetUnreachable) as caught:
        sender.send(shipment(make_small_images(tmp_path, 1, size=8)))
    assert expected in str(caught.value)
    probe = sender.probe()
    assert not probe.ok
    assert expected in probe.message


def test_probe(tmp_path: Path, orthanc: OrthancPeer) -> None:
    sender = make_sender(tmp_path, port=orthanc.orthanc.dicom_port, aet_target="ORTHANC")
    probe = sender.probe()
    assert probe.ok, probe.message
    assert probe.message.startswith(f"C-ECHO to ORTHANC at 127.0.0.1:{orthanc.orthanc.dicom_port}")
    assert probe.details["calling_ae"] == "MERCURY"

    from_sender = make_sender(tmp_path, ip="sender", port=104)
    assert from_sender.describe() == "DICOM PEER@<sender>:104"
    probe = from_sender.probe()
    assert not probe.ok
    assert "ip: sender" in probe.message


def test_ae_titles_and_sender_host(tmp_path: Path, pyscp: Callable[..., PyScp]) -> None:
    peer = pyscp()
    files = make_ct_series(tmp_path / "ct", 1, rows=16, columns=16)

    make_sender(tmp_path, port=peer.port).send(shipment(files))
    make_sender(tmp_path, port=peer.port, aet_source="OURS").send(shipment(files))
    passing = make_sender(
        tmp_path, ip="sender", port=peer.port, pass_sender_aet=True, pass_receiver_aet=True
    )
    report = passing.send(shipment(files))
    assert report.results[0].status == "sent"

    assert peer.titles == [
        ("MERCURY", "PEER"),  # aet_source empty: the receiver's first AE title
        ("OURS", "PEER"),
        (ORIGIN.calling_ae, ORIGIN.called_ae),
    ]
    assert peer.hosts[-1] == ORIGIN.peer_host

    nowhere = Shipment("j", "t", outgoing(files), Origin("MODALITY", "MERCURY", ""))
    with pytest.raises(SendFailed, match="which host"):
        passing.send(nowhere)


def test_cancelled_shipment_stops(tmp_path: Path, storescp: Callable[..., StoreScp]) -> None:
    peer = storescp()
    job = shipment(make_small_images(tmp_path, 3, size=8))
    job.cancel.set()
    with pytest.raises(SendFailed, match="cancelled") as caught:
        make_sender(tmp_path, port=peer.port).send(job)
    assert caught.value.results == []


def test_many_sop_classes_use_several_associations(
    tmp_path: Path, storescp: Callable[..., StoreScp]
) -> None:
    from pynetdicom.sop_class import _STORAGE_CLASSES

    peer = storescp("-pm")  # promiscuous: any SOP class
    classes = sorted(set(_STORAGE_CLASSES.values()))[:70]
    paths = []
    template = pydicom.dcmread(make_small_images(tmp_path / "one", 1, size=8)[0])
    for index, sop_class in enumerate(classes):
        template.SOPClassUID = sop_class
        template.file_meta.MediaStorageSOPClassUID = sop_class
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = (
            f"1.2.826.0.1.3680043.10.999.{index + 1}"
        )
        path = tmp_path / "many" / f"{index}.dcm"
        path.parent.mkdir(exist_ok=True)
        template.save_as(path, enforce_file_format=True)
        paths.append(path)

    sender = make_sender(tmp_path, port=peer.port, storage_commitment=True)
    report = sender.send(shipment(paths))

    assert [result.status for result in report.results] == ["sent"] * 70
    assert report.notes[0].startswith("sent over 2 associations")
    assert len(peer.wait_received(70)) == 70
    # Commitment is asked for once, on the last association, for all 70 instances;
    # storescp does not do storage commitment.
    assert len(report.commitments) == 70
    assert {(c.committed, c.reason) for c in report.commitments} == {
        (
            False,
            "the peer does not support storage commitment (it refused the Storage "
            "Commitment Push Model)",
        )
    }


# --- Storage commitment --------------------------------------------------------------------


def test_storage_commitment_with_orthanc(tmp_path: Path, orthanc: OrthancPeer) -> None:
    files = make_ct_series(tmp_path / "ct", 2, rows=16, columns=16)
    sender = make_sender(
        tmp_path,
        extra={"commitment_port": orthanc.commitment_port},
        port=orthanc.orthanc.dicom_port,
        aet_target="ORTHANC",
        storage_commitment=True,
        commitment_timeout=20,
    )
    report = sender.send(shipment(files))
    assert {result.status for result in report.results} == {"sent"}
    assert sorted((c.sop_instance_uid, c.committed) for c in report.commitments) == sorted(
        (uid_of(path), True) for path in files
    )
    assert "storage commitment: 2 of 2 instance(s) committed" in report.notes


def test_storage_commitment_on_the_same_association(
    tmp_path: Path, pyscp: Callable[..., PyScp]
) -> None:
    files = make_ct_series(tmp_path / "ct", 3, rows=16, columns=16)
    uids = [uid_of(path) for path in files]
    peer = pyscp(commitment="same", failed_commitments=[uids[2]], statuses={uids[1]: 0xA700})
    sender = make_sender(tmp_path, port=peer.port, storage_commitment=True, commitment_timeout=20)

    report = sender.send(shipment(files))

    commitments = {c.sop_instance_uid: c for c in report.commitments}
    assert set(commitments) == {uids[0], uids[2]}  # the failed store is not asked about
    assert commitments[uids[0]].committed
    assert not commitments[uids[2]].committed
    assert "0x0112 no such object instance" in commitments[uids[2]].reason


@pytest.mark.timeout(30)
def test_storage_commitment_without_answer(tmp_path: Path, pyscp: Callable[..., PyScp]) -> None:
    files = make_ct_series(tmp_path / "ct", 1, rows=16, columns=16)
    peer = pyscp(commitment="never")
    sender = make_sender(tmp_path, port=peer.port, storage_commitment=True, commitment_timeout=1)
    report = sender.send(shipment(files))
    assert report.results[0].status == "sent"
    assert [(c.committed, c.reason) for c in report.commitments] == [
        (False, "no answer within 1 s")
    ]


def test_storage_commitment_refused_context(tmp_path: Path, pyscp: Callable[..., PyScp]) -> None:
    peer = pyscp()  # no storage commitment support
    files = make_ct_series(tmp_path / "ct", 1, rows=16, columns=16)
    report = make_sender(tmp_path, port=peer.port, storage_commitment=True).send(shipment(files))
    assert report.results[0].status == "sent"
    assert not report.commitments[0].committed
    assert "does not support storage commitment" in report.commitments[0].reason


# --- TLS -----------------------------------------------------------------------------------


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server and a client certificate signed by it, and an untrusted server
    certificate signed by another CA; PEM files in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    files: dict[str, Path] = {}

    def key(name: str) -> Any:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = folder / f"{name}.key"
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        files[f"{name}_key"] = path
        return private

    def certificate(
        name: str, private: Any, issuer: tuple[x509.Name, Any] | None, usage: Any = None
    ) -> x509.Name:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mercury test {name}")])
        issuer_name, issuer_key = issuer or (subject, private)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if issuer is None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            ).add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        path = folder / f"{name}.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}_cert"] = path
        return subject

    ca_key = key("ca")
    ca = (certificate("ca", ca_key, None), ca_key)
    other_key = key("other_ca")
    other = (certificate("other_ca", other_key, None), other_key)
    certificate("server", key("server"), ca, ExtendedKeyUsageOID.SERVER_AUTH)
    certificate("client", key("client"), ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    certificate("untrusted", key("untrusted"), other, ExtendedKeyUsageOID.SERVER_AUTH)
    return files


def test_tls(tmp_path: Path, storescp: Callable[..., StoreScp]) -> None:
    pem = _certificates(tmp_path / "pki")
    tls = ("+tls", str(pem["server_key"]), str(pem["server_cert"]))
    trust = ("+cf", str(pem["ca_cert"]), "-pw")  # -pw: the key has no password
    peer = storescp(*tls, *trust)
    settings = {
        "target_type": "dicomtls",
        "tls_key": str(pem["client_key"]),
        "tls_cert": str(pem["client_cert"]),
        "ca_cert": str(pem["ca_cert"]),
    }
    sender = make_sender(tmp_path, port=peer.port, **settings)
    assert sender.describe() == f"DICOM PEER@127.0.0.1:{peer.port} (TLS)"
    files = make_ct_series(tmp_path / "ct", 2, rows=16, columns=16)

    report = sender.send(shipment(files))

    assert [result.status for result in report.results] == ["sent", "sent"]
    assert len(peer.wait_received(2)) == 2
    assert sender.probe().ok

    impostor = storescp("+tls", str(pem["untrusted_key"]), str(pem["untrusted_cert"]), *trust)
    sender = make_sender(tmp_path, port=impostor.port, **settings)
    with pytest.raises(TargetUnreachable) as caught:
        sender.send(shipment(files))
    message = str(caught.value)
    assert f"TLS handshake with 127.0.0.1:{impostor.port} failed" in message
    assert "certificate is not trusted" in message


# --- The TCP_NODELAY trap ------------------------------------------------------------------


def _many_small_files(folder: Path, count: int) -> list[Path]:
    """``count`` copies of one small image, each with its own SOP Instance UID (patched in
    the bytes: writing thousands of files with pydicom would take most of the test)."""
    template_path = make_small_images(folder / "template", 1, size=8)[0]
    template = pydicom.dcmread(template_path)
    old_uid = "1.2.826.0.1.3680043.10.1234.100000000"
    template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = old_uid
    template.save_as(template_path, enforce_file_format=True)
    data = template_path.read_bytes()
    paths = []
    for index in range(count):
        new_uid = f"1.2.826.0.1.3680043.10.1234.{100000001 + index}"
        path = folder / f"{index:05d}.dcm"
        path.write_bytes(data.replace(old_uid.encode(), new_uid.encode()))
        paths.append(path)
    return paths


@pytest.mark.timeout(120)
def test_no_stalls_with_tcp_nodelay(
    tmp_path: Path, storescp: Callable[..., StoreScp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom 3.0 lost a fast C-STORE response about once in a few thousand and waited
    out the DIMSE timeout (see the dicom target's module docstring); the C-STOREs now go
    out on mercury's own requestor. With TCP_NODELAY on both sides, under the same load, no
    operation may come anywhere near the timeout."""
    count = 2500
    dimse_timeout = 2.0
    peer = storescp("--ignore", nodelay=True)
    files = _many_small_files(tmp_path / "small", count)
    items = [
        replace(outgoing(files[:1])[0], sop_instance_uid=f"1.2.826.0.1.3680043.10.1234.{n}", path=p)
        for n, p in enumerate(files, start=100000001)
    ]
    durations: list[float] = []
    original = client.ClientAssociation.store_file

    def timed(self: client.ClientAssociation, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return original(self, *args, **kwargs)
        finally:
            durations.append(time.monotonic() - started)

    monkeypatch.setattr(client.ClientAssociation, "store_file", timed)
    sender = make_sender(tmp_path, port=peer.port, dimse_timeout=dimse_timeout)

    report = sender.send(Shipment("many", "t", items, ORIGIN))

    assert len(durations) == count
    assert [r.status for r in report.results] == ["sent"] * count
    slowest = max(durations)
    assert slowest < dimse_timeout / 4, f"a C-STORE took {slowest:.2f} s"
