"""Shared helpers for the mercury.dicom.net tests: a server on its own loop thread, a
recording handler, a raw-socket peer and DICOM file generators.

Tests are synchronous (pynetdicom and DCMTK are blocking peers); the server runs on an
event loop in a background thread, and every wait is for an observable condition with a
deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from mercury.dicom.net import (
    Association,
    AssociationRequest,
    CloseReason,
    DicomServer,
    Rejection,
    StoreRequest,
    StoreResult,
    pdu,
)

T = TypeVar("T")

HOST = "127.0.0.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
JPEG2000 = "1.2.840.10008.1.2.4.91"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
REFUSED_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.1"  # RT Image: the test server refuses it

DEFAULT_TS = (IMPLICIT, EXPLICIT, EXPLICIT_BE, JPEG2000, JPEG2000_LOSSLESS, RLE, JPEG_BASELINE)

DCMTK = {name: shutil.which(name) for name in ("storescu", "dcmsend", "echoscu")}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll an observable condition (cheaply) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.002)


# --- handler -------------------------------------------------------------------------------


@dataclass
class RecordingHandler:
    """Keeps everything it is told in memory; behaviour is adjustable per test."""

    reject: Callable[[AssociationRequest], Rejection | None] | None = None
    store_result: Callable[[StoreRequest], StoreResult] | None = None
    gate: threading.Event | None = None  # when set-able, on_store waits for it
    requests: list[AssociationRequest] = field(default_factory=list)
    stores: list[tuple[Association, StoreRequest]] = field(default_factory=list)
    echoes: list[Association] = field(default_factory=list)
    closes: list[tuple[Association, CloseReason]] = field(default_factory=list)
    protocol_errors: list[tuple[str, int, str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (kind, association id)
    in_flight: int = 0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()

    def _note(self, update: Callable[[], None]) -> None:
        with self._cond:
            update()
            self._cond.notify_all()

    def on_associate(self, request: AssociationRequest) -> Rejection | None:
        self._note(lambda: self.requests.append(request))
        return self.reject(request) if self.reject else None

    async def on_store(self, association: Association, request: StoreRequest) -> StoreResult:
        def start() -> None:
            self.in_flight += 1
            self.events.append(("store_start", association.id))

        def end() -> None:
            self.in_flight -= 1
            self.stores.append((association, request))
            self.events.append(("store_end", association.id))

        self._note(start)
        try:
            if self.gate is not None:
                await asyncio.to_thread(self.gate.wait, 30)
            if self.store_result is not None:
                return self.store_result(request)
            return StoreResult(0x0000)
        finally:
            self._note(end)

    async def on_echo(self, association: Association) -> None:
        self._note(lambda: self.echoes.append(association))

    async def on_close(self, association: Association, how: CloseReason) -> None:
        def note() -> None:
            self.closes.append((association, how))
            self.events.append(("close", association.id))

        self._note(note)

    def on_protocol_error(self, peer_host: str, peer_port: int, message: str) -> None:
        self._note(lambda: self.protocol_errors.append((peer_host, peer_port, message)))

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")

    def close_reasons(self) -> list[str]:
        with self._cond:
            return [how for _, how in self.closes]

    def data_by_uid(self) -> dict[str, bytes]:
        with self._cond:
            return {req.sop_instance_uid: req.data for _, req in self.stores}


# --- server on a loop thread ---------------------------------------------------------------


class ServerThread:
    """A DicomServer on an event loop in a daemon thread."""

    def __init__(self, handler: RecordingHandler, **options: Any) -> None:
        options.setdefault("accept_abstract_syntax", lambda uid: uid != REFUSED_SOP_CLASS)
        options.setdefault("transfer_syntaxes", DEFAULT_TS)
        self.handler = handler
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: DicomServer | None = None
        self.port = 0

    def __enter__(self) -> ServerThread:
        self.thread.start()

        async def start() -> DicomServer:
            server = DicomServer(self.handler, **self.options)
            await server.start(HOST, 0)
            return server

        self.server = self.call(start())
        self.port = self.server.port
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.server is not None:
                self.call(self.server.close(abort_after=2.0), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        async def wrapper() -> T:
            return fn()

        return self.call(wrapper(), timeout)

    def associations(self) -> list[Association]:
        assert self.server is not None
        return self.run(self.server.associations)


# --- raw peer ------------------------------------------------------------------------------


class RawPeer:
    """A bare TCP peer for feeding the server exact (and wrong) bytes."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < n:
            try:
                chunk = self.sock.recv(n - len(chunks))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def recv_pdu(self) -> tuple[int, bytes] | None:
        """(type, whole PDU including header), or None once the server closed."""
        header = self._recv_exact(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBI", header)
        body = self._recv_exact(length)
        if body is None:
            return None
        return pdu_type, header + body

    def expect(self, pdu_type: int) -> pdu.PDU:
        received = self.recv_pdu()
        assert received is not None, f"connection closed, expected PDU type {pdu_type}"
        assert received[0] == pdu_type, f"expected PDU type {pdu_type}, got {received[0]}"
        return pdu.decode_pdu(received[1])

    def expect_closed(self) -> None:
        """The server closes: EOF (or reset) with no further PDU."""
        received = self.recv_pdu()
        assert received is None, f"expected the connection to close, got PDU {received[0]}"

    def associate(
        self,
        contexts: Iterable[tuple[int, str, tuple[str, ...]]] = ((1, VERIFICATION, (IMPLICIT,)),),
        *,
        max_pdu: int = 16384,
        called: str = "MERCURY",
        calling: str = "RAWPEER",
    ) -> pdu.AssociateAC:
        self.send(associate_rq(contexts, max_pdu=max_pdu, called=called, calling=calling))
        ac = self.expect(pdu.A_ASSOCIATE_AC)
        assert isinstance(ac, pdu.AssociateAC)
        return ac

    def send_message(
        self, context_id: int, command: bytes, data: bytes | None = None, max_pdu: int = 16384
    ) -> None:
        out = pdu.encode_pdata(context_id, True, command, max_pdu)
        if data is not None:
            out += pdu.encode_pdata(context_id, False, data, max_pdu)
        self.send(out)

    def recv_command(self) -> bytes:
        """Reassemble one command set from P-DATA-TF PDUs."""
        command = bytearray()
        while True:
            pdata = self.expect(pdu.P_DATA_TF)
            assert isinstance(pdata, pdu.PDataTF)
            for pdv in pdata.pdvs:
                assert pdv.is_command
                command += pdv.data
                if pdv.is_last:
                    return bytes(command)


def associate_rq(
    contexts: Iterable[tuple[int, str, tuple[str, ...]]],
    *,
    max_pdu: int = 16384,
    called: str = "MERCURY",
    calling: str = "RAWPEER",
    application_context: str = APPLICATION_CONTEXT,
    protocol_version: int = 1,
    user_information: pdu.UserInformation | None = None,
) -> bytes:
    return pdu.AssociateRQ(
        called_ae_field=pdu.ae_title_field(called),
        calling_ae_field=pdu.ae_title_field(calling),
        application_context=application_context,
        presentation_contexts=tuple(
            pdu.PresentationContextRQ(cid, abstract, tuple(ts)) for cid, abstract, ts in contexts
        ),
        user_information=user_information
        or pdu.UserInformation(
            maximum_length=max_pdu,
            implementation_class_uid="1.2.3.4",
            implementation_version_name="RAWPEER",
        ),
        protocol_version=protocol_version,
    ).encode()


# --- DICOM files ---------------------------------------------------------------------------


def make_image_file(
    path: Path,
    *,
    rows: int = 64,
    columns: int = 64,
    sop_class: str = CT_IMAGE_STORAGE,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> str:
    """Write a minimal 16-bit image; returns its SOP Instance UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1514.99.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1514.99.1.1"
    ds.PatientName = "Test^Net"
    ds.PatientID = "NET-TEST"
    ds.Modality = "CT" if sop_class == CT_IMAGE_STORAGE else "MR"
    ds.InstanceNumber = seed + 1
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pattern = (seed % 251).to_bytes(1, "little") + bytes(range(256))
    size = rows * columns * 2
    ds.PixelData = (pattern * (size // len(pattern) + 1))[:size]
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def make_image_files(directory: Path, count: int, **options: Any) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"img{i:05d}.dcm"
        make_image_file(path, seed=i, **options)
        paths.append(path)
    return paths


def dataset_bytes(path: str | os.PathLike[str]) -> bytes:
    """The data set part of a DICOM file: everything after the group 0002 file meta."""
    raw = Path(path).read_bytes()
    assert raw[128:132] == b"DICM"
    offset = 132
    while offset + 8 <= len(raw):
        group = struct.unpack_from("<H", raw, offset)[0]
        if group != 0x0002:
            break
        vr = raw[offset + 4 : offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = struct.unpack_from("<I", raw, offset + 8)[0]
            offset += 12 + length
        else:
            length = struct.unpack_from("<H", raw, offset + 6)[0]
            offset += 8 + length
    return raw[offset:]


def sop_instance_uid(path: str | os.PathLike[str]) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
