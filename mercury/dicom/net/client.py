"""The requestor side: a C-STORE and C-ECHO SCU on one blocking socket (PS3.7, PS3.8).

Everything happens on the caller's thread: a request is written with ``send`` calls, the
response read with ``recv`` calls, nothing is handed to another thread and nothing polls.
Per C-STORE that is one file open, a read or two and usually a single write, so a small
instance costs tens of microseconds of Python rather than milliseconds.

Files are sent as stored: only their file meta group is parsed (to pick the presentation
context and find where the dataset starts) and the dataset bytes are streamed from the
file in blocks, each block cut into P-DATA-TF PDUs that fit the peer's maximum PDU length.
Memory use is constant, whatever the size of the file.

Timeouts, all plain socket timeouts:

* ``connect_timeout``: the TCP connection and the TLS handshake;
* ``acse_timeout``: the peer's answer to our A-ASSOCIATE-RQ and A-RELEASE-RQ;
* ``dimse_timeout``: the response to a request, counted from the last byte of the request
  written (each ``recv`` waits at most that long);
* ``write_timeout`` (default: ``dimse_timeout``): the longest a write may stall, the peer
  not reading, counted from the last byte the kernel took.

Failures are exceptions: local ones that leave the association usable
(:class:`ContextNotAccepted`, :class:`UnsendableFile`, raised before anything is sent), and
:class:`AssociationEnded` and its kinds once the association is over (the connection is
then closed; an A-ABORT was sent where the protocol allows it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import ssl
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from mercury.dicom.file_meta import FileMetaError, read_file_meta

from . import dimse, pdu
from .model import PresentationContext
from .negotiation import (
    APPLICATION_CONTEXT_NAME,
    MERCURY_IMPLEMENTATION_CLASS_UID,
    MERCURY_IMPLEMENTATION_VERSION_NAME,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_PDU: Final = 262144
"""The maximum PDU length we announce: the most the peer may send us in one P-DATA-TF."""
MAX_SEND_PDU: Final = 1 << 20
"""The PDU length of our largest P-DATA-TF, used when the peer takes any length (0) or
more: larger PDUs save nothing measurable and only cost memory."""
READ_BLOCK: Final = 1 << 20
"""File bytes read, and written to the socket, at a time."""
MAX_CONTEXTS: Final = 128
_MAX_INCOMING: Final = {pdu.A_ASSOCIATE_AC: 1 << 20, pdu.P_DATA_TF: 1 << 24}
_TLS_WRITE_STEP: Final = 1 << 16  # an SSL write's timeout covers the whole call: keep it short
_PLAIN_WRITE_STEP: Final = 1 << 62
_ABORT_TIMEOUT: Final = 2.0
_TCP_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)
_ONE_PDV = pdu.PDATA_ONE_PDV_HEADER
_ONE_PDV_SIZE: Final = _ONE_PDV.size

Phase = Literal["association", "dimse", "release"]
_DURING: Final[dict[str, str]] = {
    "association": "in answer to the association request",
    "dimse": "while a request was outstanding",
    "release": "during release",
}


# --- Errors --------------------------------------------------------------------------------


class DicomClientError(Exception):
    """Base of everything this module raises on purpose."""


class ConnectFailed(DicomClientError):
    """No connection: ``stage`` is "connect" (DNS, TCP) or "tls" (the handshake, or the
    peer's verdict on our certificate right after it); ``cause`` is the OSError."""

    def __init__(self, stage: Literal["connect", "tls"], address: str, cause: OSError) -> None:
        if stage == "tls":
            super().__init__(f"TLS handshake with {address} failed: {cause}")
        else:
            super().__init__(f"cannot connect to {address}: {cause}")
        self.stage = stage
        self.cause = cause


class AssociationRejected(DicomClientError):
    """A-ASSOCIATE-RJ: result 1 permanent, 2 transient; source and reason as in PS3.8 9.3.4."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(
            f"association rejected ({'permanent' if result == 1 else 'transient'}, "
            f"source {source}, reason {reason})"
        )
        self.result = result
        self.source = source
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ContextResult:
    """One proposed presentation context and the peer's answer to it."""

    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    result: int
    transfer_syntax: str = ""
    """The transfer syntax the peer chose; empty unless accepted."""

    @property
    def accepted(self) -> bool:
        return self.result == pdu.CONTEXT_ACCEPTED


class NoContextAccepted(DicomClientError):
    """The peer accepted the association but none of its presentation contexts (the
    association was released)."""

    def __init__(self, contexts: tuple[ContextResult, ...]) -> None:
        super().__init__("the peer accepted none of the proposed presentation contexts")
        self.contexts = contexts


class ContextNotAccepted(DicomClientError):
    """No accepted context for this SOP class in this transfer syntax; nothing was sent."""

    def __init__(self, abstract_syntax: str, transfer_syntax: str) -> None:
        super().__init__(
            f"no accepted presentation context for {abstract_syntax} in {transfer_syntax}"
        )
        self.abstract_syntax = abstract_syntax
        self.transfer_syntax = transfer_syntax


class UnsendableFile(DicomClientError):
    """The file cannot be opened or is not a DICOM Part 10 file; nothing was sent."""


class AssociationEnded(DicomClientError):
    """The association is over and its connection closed; the message says how."""


class PeerAborted(AssociationEnded):
    """The peer sent an A-ABORT (source 0 service-user, 2 service-provider)."""

    def __init__(self, source: int, reason: int, during: str) -> None:
        super().__init__(
            f"the peer aborted the association {during} (A-ABORT source {source}, reason {reason})"
        )
        self.source = source
        self.reason = reason


class ConnectionClosed(AssociationEnded):
    """The peer closed (or reset) the connection without an A-ABORT."""


class PeerTimeout(AssociationEnded):
    """The peer did not answer, or stopped reading, within the timeout for ``phase``."""

    def __init__(self, message: str, phase: Phase, seconds: float, *, writing: bool) -> None:
        super().__init__(message)
        self.phase = phase
        self.seconds = seconds
        self.writing = writing


class PeerProtocolError(AssociationEnded):
    """The peer sent something the protocol does not allow there; we aborted."""


# --- Results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DimseResponse:
    """A response's status, its error comment (empty if none) and the whole command set."""

    status: int
    error_comment: str
    command: dimse.Command

    @property
    def category(self) -> dimse.StatusCategory:
        return dimse.status_category(self.status)


# --- Helpers -------------------------------------------------------------------------------


def check_ae_title(title: str) -> str:
    """An AE title as sent: 1 to 16 characters of the default repertoire, no backslash and
    no control characters; leading and trailing spaces are not significant."""
    stripped = title.strip(" ")
    if not stripped or len(title) > 16 or not title.isascii():
        raise ValueError(f"invalid AE title {title!r}: 1 to 16 ASCII characters")
    if "\\" in title or any(ch < " " or ch == "\x7f" for ch in title):
        raise ValueError(f"invalid AE title {title!r}: no backslash or control characters")
    return stripped


def encode_dataset(dataset: Dataset, transfer_syntax: str) -> bytes:
    """Encode a decoded dataset (no file meta) as it goes on the wire in ``transfer_syntax``;
    compressed syntaxes need their pixel data encapsulated already (see
    :func:`mercury.dicom.transcode.transcode`)."""
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        raise ValueError(f"cannot encode a dataset in unknown transfer syntax {transfer_syntax}")
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = uid.is_implicit_VR
    buffer.is_little_endian = uid.is_little_endian
    write_dataset(buffer, dataset)
    data = buffer.getvalue()
    if uid.is_deflated:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
        if len(data) % 2:
            data += b"\x00"
    return data


def _fragment_size(peer_max_pdu: int) -> int:
    """Data bytes per PDV: one PDV per PDU, within the peer's limit and ours."""
    limit = MAX_SEND_PDU if peer_max_pdu <= 0 else min(peer_max_pdu, MAX_SEND_PDU)
    return max(1, limit - pdu.PDV_HEADER_LENGTH)


# --- The association -----------------------------------------------------------------------


def associate(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    contexts: Iterable[tuple[str, Sequence[str]]],
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float = 10.0,
    acse_timeout: float = 30.0,
    dimse_timeout: float = 60.0,
    write_timeout: float | None = None,
    max_pdu: int = DEFAULT_MAX_PDU,
    implementation_class_uid: str = MERCURY_IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str = MERCURY_IMPLEMENTATION_VERSION_NAME,
) -> ClientAssociation:
    """Connect to ``host:port`` and negotiate an association proposing ``contexts``, each an
    (abstract syntax, transfer syntaxes) pair, with IDs 1, 3, 5, ... in the order given.

    Raises ValueError for bad arguments (before connecting), :class:`ConnectFailed`,
    :class:`AssociationRejected`, :class:`NoContextAccepted`, or an
    :class:`AssociationEnded` (the peer aborted, closed the connection, did not answer
    within ``acse_timeout`` or answered nonsense).
    """
    proposed = [(sop, tuple(syntaxes)) for sop, syntaxes in contexts]
    if not 0 < len(proposed) <= MAX_CONTEXTS:
        raise ValueError(f"between 1 and {MAX_CONTEXTS} presentation contexts, not {len(proposed)}")
    if any(not syntaxes for _, syntaxes in proposed):
        raise ValueError("every presentation context needs a transfer syntax")
    request = pdu.AssociateRQ(
        called_ae_field=pdu.ae_title_field(check_ae_title(called_ae)),
        calling_ae_field=pdu.ae_title_field(check_ae_title(calling_ae)),
        application_context=APPLICATION_CONTEXT_NAME,
        presentation_contexts=tuple(
            pdu.PresentationContextRQ(2 * index + 1, sop, syntaxes)
            for index, (sop, syntaxes) in enumerate(proposed)
        ),
        user_information=pdu.UserInformation(
            maximum_length=max_pdu,
            implementation_class_uid=implementation_class_uid,
            implementation_version_name=implementation_version_name,
        ),
    ).encode()
    address = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as exc:
        raise ConnectFailed("connect", address, exc) from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
            except OSError as exc:  # ssl.SSLError is an OSError
                raise ConnectFailed("tls", address, exc) from exc
    except BaseException:
        sock.close()
        raise
    assoc = ClientAssociation(
        sock,
        address,
        acse_timeout=acse_timeout,
        dimse_timeout=dimse_timeout,
        write_timeout=dimse_timeout if write_timeout is None else write_timeout,
        max_pdu=max_pdu,
        tls=ssl_context is not None,
    )
    assoc._negotiate(request, request_contexts=proposed)
    return assoc


class ClientAssociation:
    """An established association, as requestor; built by :func:`associate`.

    Not thread-safe: one thread sends, one request at a time (no asynchronous operations).
    Use as a context manager to release it at the end (abort if the block raised).
    """

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        *,
        acse_timeout: float,
        dimse_timeout: float,
        write_timeout: float,
        max_pdu: int,
        tls: bool,
    ) -> None:
        self.address = address
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.write_timeout = write_timeout
        self.max_pdu = max_pdu
        self.contexts: tuple[ContextResult, ...] = ()
        self.accepted: dict[int, PresentationContext] = {}
        self.peer_max_pdu = 0
        self.peer_implementation_class_uid = ""
        self.peer_implementation_version_name = ""
        self._sock: socket.socket | None = sock
        self._write_step = _TLS_WRITE_STEP if tls else _PLAIN_WRITE_STEP
        self._timeout: float | None = None
        self._inbuf = bytearray()
        self._by_syntax: dict[tuple[str, str], int] = {}
        self._message_id = 0
        self._fragment = _fragment_size(0)
        self._out = bytearray()
        self._read_buffer = bytearray()
        self._partial_write = False  # True while a PDU may be half written

    # -- public --

    @property
    def is_established(self) -> bool:
        return self._sock is not None

    def accepted_syntaxes(self, abstract_syntax: str) -> frozenset[str]:
        """The transfer syntaxes the peer accepted for this SOP class."""
        return frozenset(ts for sop, ts in self._by_syntax if sop == abstract_syntax)

    def context_id(self, abstract_syntax: str, transfer_syntax: str) -> int | None:
        return self._by_syntax.get((abstract_syntax, transfer_syntax))

    def echo(self, message_id: int | None = None) -> DimseResponse:
        """C-ECHO on an accepted Verification context."""
        context_id = self._context(dimse.VERIFICATION_SOP_CLASS, None)
        message_id = self._next_message_id(message_id)
        command = dimse.encode_request(
            dimse.C_ECHO_RQ,
            message_id,
            sop_class_uid=dimse.VERIFICATION_SOP_CLASS,
            has_data_set=False,
        )
        return self._exchange(context_id, command, None, 0, None, message_id, dimse.C_ECHO_RSP)

    def store_file(
        self,
        path: str | os.PathLike[str],
        *,
        message_id: int | None = None,
        priority: int = dimse.PRIORITY_MEDIUM,
        move_originator: tuple[str, int] | None = None,
    ) -> DimseResponse:
        """C-STORE a Part 10 file as stored: SOP class, instance and transfer syntax come
        from its file meta, the dataset is streamed from the file without being decoded.

        Raises :class:`UnsendableFile` or :class:`ContextNotAccepted` before sending
        anything, :class:`AssociationEnded` if the association ends meanwhile.
        """
        self._check_established()
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UnsendableFile(f"cannot open {path}: {exc.strerror or exc}") from exc
        with handle:
            try:
                size = os.fstat(handle.fileno()).st_size
                meta, head = read_file_meta(handle, min(size, READ_BLOCK))
            except FileMetaError as exc:
                raise UnsendableFile(f"{Path(path).name}: {exc}") from exc
            except OSError as exc:
                raise UnsendableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
            if not meta.sop_class_uid or not meta.sop_instance_uid:
                raise UnsendableFile(
                    f"{Path(path).name}: file meta information has no Media Storage SOP "
                    "Class or Instance UID"
                )
            context_id = self._context(meta.sop_class_uid, meta.transfer_syntax_uid)
            total = max(0, size - meta.dataset_offset)
            first = memoryview(head)[meta.dataset_offset : meta.dataset_offset + total]
            message_id = self._next_message_id(message_id)
            command = dimse.encode_request(
                dimse.C_STORE_RQ,
                message_id,
                sop_class_uid=meta.sop_class_uid,
                sop_instance_uid=meta.sop_instance_uid,
                priority=priority,
                has_data_set=True,
                move_originator=move_originator,
            )
            return self._exchange(
                context_id, command, first, total, handle, message_id, dimse.C_STORE_RSP
            )

    def store(
        self,
        data: bytes | bytearray | memoryview,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        message_id: int | None = None,
        priority: int = dimse.PRIORITY_MEDIUM,
        move_originator: tuple[str, int] | None = None,
    ) -> DimseResponse:
        """C-STORE an encoded dataset (see :func:`encode_dataset`) in ``transfer_syntax``."""
        self._check_established()
        context_id = self._context(sop_class_uid, transfer_syntax)
        message_id = self._next_message_id(message_id)
        command = dimse.encode_request(
            dimse.C_STORE_RQ,
            message_id,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            priority=priority,
            has_data_set=True,
            move_originator=move_originator,
        )
        view = memoryview(data).cast("B")
        return self._exchange(
            context_id, command, view, len(view), None, message_id, dimse.C_STORE_RSP
        )

    def release(self) -> bool:
        """A-RELEASE (PS3.8 7.2); False if it ended otherwise (then the connection was
        dropped). Never raises."""
        if self._sock is None:
            return False
        try:
            self._set_timeout(self.acse_timeout)
            self._write(pdu.ReleaseRQ().encode(), "release")
            while True:
                pdu_type, _ = self._read_pdu("release")
                if pdu_type == pdu.A_RELEASE_RP:
                    return True
                if pdu_type == pdu.A_RELEASE_RQ:  # collision: as requestor we answer first
                    self._write(pdu.ReleaseRP().encode(), "release")
                elif pdu_type != pdu.P_DATA_TF:  # A-ABORT, or nonsense: over either way
                    return False
        except AssociationEnded as exc:
            logger.info("%s: release failed: %s", self.address, exc)
            return False
        finally:
            self._close()

    def abort(self) -> None:
        """A-ABORT (service-user) and close; never raises."""
        if self._sock is not None:
            self._abort(pdu.ABORT_SOURCE_USER, pdu.ABORT_REASON_NOT_SPECIFIED)

    def __enter__(self) -> ClientAssociation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.release()
        else:
            self.abort()

    # -- negotiation --

    def _negotiate(
        self, request: bytes, request_contexts: list[tuple[str, tuple[str, ...]]]
    ) -> None:
        try:
            self._set_timeout(self.acse_timeout)
            self._write(request, "association")
            pdu_type, body = self._read_pdu("association")
            if pdu_type == pdu.A_ASSOCIATE_RJ:
                rejection = pdu.decode_associate_rj(body)
                self._close()
                raise AssociationRejected(rejection.result, rejection.source, rejection.reason)
            if pdu_type != pdu.A_ASSOCIATE_AC:
                raise self._protocol_error(
                    f"PDU type 0x{pdu_type:02X} in answer to A-ASSOCIATE-RQ",
                    pdu.ABORT_REASON_UNEXPECTED_PDU,
                )
            try:
                ac = pdu.decode_associate_ac(body)
            except pdu.PDUError as exc:
                raise self._protocol_error(
                    f"undecodable A-ASSOCIATE-AC: {exc}", exc.reason
                ) from None
        except BaseException:
            self._close()
            raise
        answers = {cx.context_id: cx for cx in ac.presentation_contexts}
        results: list[ContextResult] = []
        for index, (sop, syntaxes) in enumerate(request_contexts):
            context_id = 2 * index + 1
            answer = answers.get(context_id)
            if answer is None:
                results.append(ContextResult(context_id, sop, syntaxes, pdu.CONTEXT_NO_REASON))
                continue
            if answer.result == pdu.CONTEXT_ACCEPTED and answer.transfer_syntax not in syntaxes:
                logger.warning(
                    "%s accepted context %d with transfer syntax %s, which we did not "
                    "propose; not using it",
                    self.address,
                    context_id,
                    answer.transfer_syntax,
                )
                results.append(ContextResult(context_id, sop, syntaxes, pdu.CONTEXT_NO_REASON))
                continue
            accepted = answer.result == pdu.CONTEXT_ACCEPTED
            chosen = answer.transfer_syntax if accepted else ""
            results.append(ContextResult(context_id, sop, syntaxes, answer.result, chosen))
            if accepted:
                self.accepted[context_id] = PresentationContext(
                    context_id, sop, answer.transfer_syntax
                )
                self._by_syntax.setdefault((sop, answer.transfer_syntax), context_id)
        self.contexts = tuple(results)
        info = ac.user_information
        self.peer_max_pdu = info.maximum_length or 0
        self.peer_implementation_class_uid = info.implementation_class_uid
        self.peer_implementation_version_name = info.implementation_version_name
        self._fragment = _fragment_size(self.peer_max_pdu)
        logger.debug(
            "%s: association accepted, %d of %d contexts, peer max PDU %d",
            self.address,
            len(self.accepted),
            len(results),
            self.peer_max_pdu,
        )
        if not self.accepted:
            self.release()
            raise NoContextAccepted(self.contexts)

    # -- DIMSE --

    def _check_established(self) -> None:
        if self._sock is None:
            raise AssociationEnded("the association is no longer established")

    def _context(self, abstract_syntax: str, transfer_syntax: str | None) -> int:
        self._check_established()
        if transfer_syntax is None:
            for (sop, _), context_id in self._by_syntax.items():
                if sop == abstract_syntax:
                    return context_id
            raise ContextNotAccepted(abstract_syntax, "any transfer syntax")
        found = self._by_syntax.get((abstract_syntax, transfer_syntax))
        if found is None:
            raise ContextNotAccepted(abstract_syntax, transfer_syntax)
        return found

    def _next_message_id(self, message_id: int | None) -> int:
        if message_id is None:
            self._message_id = self._message_id % 0xFFFF + 1
            return self._message_id
        if not 0 <= message_id <= 0xFFFF:
            raise ValueError(f"message ID out of range: {message_id}")
        return message_id

    def _exchange(
        self,
        context_id: int,
        command: bytes,
        data: memoryview | None,
        total: int,
        handle: io.RawIOBase | None,
        message_id: int,
        response_field: int,
    ) -> DimseResponse:
        """Write one request (command, then the data set if any) and read its response."""
        self._set_timeout(self.write_timeout)
        out = self._out
        try:
            out[:] = pdu.encode_pdata(context_id, True, command, self._fragment + 6)
            if data is not None:
                self._write_data_set(context_id, data, total, handle)
            self._write(out, "dimse")
        except BaseException:
            self._out = bytearray()  # views of the old one live on in the traceback
            raise
        out.clear()
        self._set_timeout(self.dimse_timeout)
        return self._read_response(message_id, response_field)

    def _write_data_set(
        self, context_id: int, first: memoryview, total: int, handle: io.RawIOBase | None
    ) -> None:
        """Append the data set's PDUs to ``self._out`` (already holding the command),
        writing whenever a block is full; the last block stays in ``self._out``."""
        fragment = self._fragment
        out = self._out
        if total == 0:
            out += _ONE_PDV.pack(pdu.P_DATA_TF, 0, 6, 2, context_id, 2)
            return
        block = max(READ_BLOCK, fragment + _ONE_PDV_SIZE)
        aligned = max(1, READ_BLOCK // fragment) * fragment  # file reads: whole fragments
        done = 0
        chunk = first
        buffer: memoryview | None = None
        while True:
            size = len(chunk)
            offset = 0
            while offset < size:
                length = min(fragment, size - offset)
                done += length
                if len(out) + _ONE_PDV_SIZE + length > block + 4096:
                    self._write(out, "dimse")
                    out.clear()
                out += _ONE_PDV.pack(
                    pdu.P_DATA_TF,
                    0,
                    length + 6,
                    length + 2,
                    context_id,
                    2 if done >= total else 0,
                )
                out += chunk[offset : offset + length]
                offset += length
            if done >= total:
                return
            if handle is None:
                raise ValueError("data set shorter than announced")  # pragma: no cover
            if buffer is None:
                if len(self._read_buffer) < READ_BLOCK:
                    self._read_buffer = bytearray(READ_BLOCK)
                buffer = memoryview(self._read_buffer)
            want = min(aligned, total - done)
            try:
                got = handle.readinto(buffer[:want])
            except OSError as exc:
                got = 0
                problem = f"{exc.strerror or exc}"
            else:
                problem = "the file became shorter"
            if not got:
                self._abort(pdu.ABORT_SOURCE_USER, pdu.ABORT_REASON_NOT_SPECIFIED)
                raise AssociationEnded(
                    f"cannot read the rest of the file while sending it ({problem}); "
                    "the association was aborted"
                )
            chunk = buffer[:got]

    def _read_response(self, message_id: int, response_field: int) -> DimseResponse:
        """Read P-DATA-TF PDUs until the response to ``message_id`` is complete."""
        command = bytearray()
        decoded: dimse.Command | None = None
        while True:
            pdu_type, body = self._read_pdu("dimse")
            if pdu_type != pdu.P_DATA_TF:
                raise self._unexpected_during_dimse(pdu_type, body)
            try:
                for context_id, control, fragment in pdu.iter_pdvs(memoryview(body)):
                    if context_id not in self.accepted:
                        raise self._protocol_error(
                            f"PDV on presentation context {context_id}, which is not accepted",
                            pdu.ABORT_REASON_INVALID_PARAMETER,
                        )
                    if control & 1:
                        if decoded is not None:
                            raise self._protocol_error(
                                "command fragment while a data set was expected",
                                pdu.ABORT_REASON_UNEXPECTED_PARAMETER,
                            )
                        command += fragment
                        if control & 2:
                            decoded = dimse.decode_command(command)
                            if not decoded.has_data_set:
                                return self._check_response(decoded, message_id, response_field)
                    elif decoded is None:
                        raise self._protocol_error(
                            "data set fragment without a command",
                            pdu.ABORT_REASON_UNEXPECTED_PARAMETER,
                        )
                    elif control & 2:  # a response data set: not used by C-STORE/C-ECHO
                        return self._check_response(decoded, message_id, response_field)
            except pdu.PDUError as exc:
                raise self._protocol_error(f"undecodable P-DATA-TF: {exc}", exc.reason) from None
            except dimse.DimseError as exc:
                raise self._protocol_error(
                    f"undecodable response command set: {exc}", pdu.ABORT_REASON_INVALID_PARAMETER
                ) from None

    def _check_response(
        self, command: dimse.Command, message_id: int, response_field: int
    ) -> DimseResponse:
        field = command.command_field
        if field != response_field:
            if not field & dimse.RESPONSE_BIT:
                raise self._protocol_error(
                    f"DIMSE request 0x{field:04X} from the peer while waiting for a response "
                    "(this association serves our requests only)",
                    pdu.ABORT_REASON_UNEXPECTED_PARAMETER,
                )
            raise self._protocol_error(
                f"DIMSE response 0x{field:04X} to a request of type 0x{response_field:04X}",
                pdu.ABORT_REASON_UNEXPECTED_PARAMETER,
            )
        answered = command.us(dimse.MESSAGE_ID_BEING_RESPONDED_TO)
        if answered != message_id:
            raise self._protocol_error(
                f"response to message {answered} while waiting for message {message_id}",
                pdu.ABORT_REASON_INVALID_PARAMETER,
            )
        status = command.us(dimse.STATUS)
        comment = command.optional_text(dimse.ERROR_COMMENT) or ""
        return DimseResponse(status, comment, command)

    def _unexpected_during_dimse(self, pdu_type: int, body: bytes) -> AssociationEnded:
        if pdu_type == pdu.A_RELEASE_RQ:
            # The peer wants to end the association while our request is outstanding.
            with contextlib.suppress(AssociationEnded):
                self._write(pdu.ReleaseRP().encode(), "release")
            self._close()
            return ConnectionClosed("the peer released the association instead of answering")
        return self._protocol_error(
            f"PDU type 0x{pdu_type:02X} while waiting for a response",
            pdu.ABORT_REASON_UNEXPECTED_PDU,
        )

    # -- the socket --

    def _set_timeout(self, seconds: float) -> None:
        if self._timeout != seconds and self._sock is not None:
            self._sock.settimeout(seconds)
            self._timeout = seconds

    def _write(self, data: bytes | bytearray | memoryview, phase: Phase) -> None:
        """Write everything; each ``send`` may stall at most the current timeout."""
        sock = self._sock
        if sock is None:
            raise AssociationEnded("the association is no longer established")
        view = memoryview(data)
        step = self._write_step
        try:
            while view:
                self._partial_write = True
                sent = sock.send(view[:step])
                view = view[sent:]
            self._partial_write = False
        except TimeoutError:
            seconds = self._timeout or 0.0
            self._close()
            raise PeerTimeout(
                f"{self.address} stopped reading: nothing could be written for {seconds:g} s",
                phase,
                seconds,
                writing=True,
            ) from None
        except OSError as exc:
            # The peer may have said why before it closed: an A-ABORT waiting to be read.
            raise self._closed_while_writing(exc, phase) from None

    def _closed_while_writing(self, exc: OSError, phase: Phase) -> AssociationEnded:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(0.2)
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    self._inbuf += chunk
        self._close()
        during = _DURING[phase]
        buffered = self._inbuf
        while len(buffered) >= pdu.PDU_HEADER_LENGTH:
            pdu_type, length = pdu.read_header(buffered)
            body = bytes(buffered[pdu.PDU_HEADER_LENGTH : pdu.PDU_HEADER_LENGTH + length])
            del buffered[: pdu.PDU_HEADER_LENGTH + length]
            if pdu_type == pdu.A_ABORT and len(body) == 4:
                abort = pdu.decode_abort(body)
                return PeerAborted(abort.source, abort.reason, during)
            if pdu_type == pdu.A_ASSOCIATE_RJ and len(body) == 4:
                rejection = pdu.decode_associate_rj(body)
                raise AssociationRejected(rejection.result, rejection.source, rejection.reason)
        if phase == "association" and _tls_verdict(exc):
            raise ConnectFailed("tls", self.address, exc)
        return self._closed(phase, f" ({exc})")

    def _read_pdu(self, phase: Phase) -> tuple[int, bytes]:
        """The next complete PDU: (type, body)."""
        buffered = self._inbuf
        while len(buffered) < pdu.PDU_HEADER_LENGTH:
            self._fill(phase)
        pdu_type, length = pdu.read_header(buffered)
        if pdu_type not in pdu.PDU_TYPES:
            raise self._protocol_error(
                f"unknown PDU type 0x{pdu_type:02X}", pdu.ABORT_REASON_UNRECOGNIZED_PDU
            )
        limit = _MAX_INCOMING.get(pdu_type, 4)
        if length > limit or (limit == 4 and length != 4):
            raise self._protocol_error(
                f"PDU type 0x{pdu_type:02X} with implausible length {length}",
                pdu.ABORT_REASON_INVALID_PARAMETER,
            )
        end = pdu.PDU_HEADER_LENGTH + length
        while len(buffered) < end:
            self._fill(phase)
        body = bytes(buffered[pdu.PDU_HEADER_LENGTH : end])
        del buffered[:end]
        if pdu_type == pdu.A_ABORT:
            abort = pdu.decode_abort(body)
            self._close()
            raise PeerAborted(abort.source, abort.reason, _DURING[phase])
        return pdu_type, body

    def _fill(self, phase: Phase) -> None:
        sock = self._sock
        if sock is None:
            raise AssociationEnded("the association is no longer established")
        if _TCP_QUICKACK is not None:
            # Acknowledge at once: a peer using Nagle's algorithm would otherwise hold the
            # rest of a response it wrote in two parts until our delayed ACK (40 ms).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            seconds = self._timeout or 0.0
            if phase == "dimse":
                self._abort(pdu.ABORT_SOURCE_USER, pdu.ABORT_REASON_NOT_SPECIFIED)
            else:
                self._close()
            raise PeerTimeout(
                f"no answer from {self.address} within {seconds:g} s {_DURING[phase]}",
                phase,
                seconds,
                writing=False,
            ) from None
        except OSError as exc:
            self._close()
            if phase == "association" and _tls_verdict(exc):
                # TLS 1.3: the server judges our certificate after the handshake.
                raise ConnectFailed("tls", self.address, exc) from None
            raise self._closed(phase, f" ({exc})") from None
        if not chunk:
            self._close()
            raise self._closed(phase, "")
        self._inbuf += chunk

    def _closed(self, phase: Phase, detail: str) -> ConnectionClosed:
        hint = ""
        if phase == "association" and self._write_step == _TLS_WRITE_STEP:
            # A TLS 1.3 server that refuses our certificate may close without an alert we
            # can read (our request, unread, turns its close into a reset).
            hint = "; over TLS this can also mean the peer refused our certificate"
        return ConnectionClosed(
            f"{self.address} closed the connection {_DURING[phase]}{detail}{hint}"
        )

    def _protocol_error(self, message: str, reason: int) -> PeerProtocolError:
        logger.warning("%s: protocol error: %s", self.address, message)
        self._abort(pdu.ABORT_SOURCE_PROVIDER, reason)
        return PeerProtocolError(f"{self.address}: {message}; the association was aborted")

    def _abort(self, source: int, reason: int) -> None:
        sock = self._sock
        if sock is None:
            return
        if not self._partial_write:
            with contextlib.suppress(OSError):
                sock.settimeout(min(_ABORT_TIMEOUT, self.acse_timeout))
                sock.sendall(pdu.Abort(source, reason).encode())
        self._close()

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _tls_verdict(exc: OSError) -> bool:
    """A TLS alert from the peer (about our certificate, say), not just a closed connection."""
    return isinstance(exc, ssl.SSLError) and not isinstance(
        exc, ssl.SSLEOFError | ssl.SSLZeroReturnError
    )
