"""One connection, one association: the acceptor side of the PS3.8 state machine.

An ``asyncio.Protocol`` rather than streams: parsing runs straight off ``data_received`` with
no per-read task switches. Complete DIMSE messages go onto a queue served by one worker task
per association, so messages are handled strictly in order, one ``on_store`` at a time,
while the socket keeps being read (an A-ABORT is seen even during a slow store).

States (PS3.8 table 9-10, acceptor side only)::

    AWAITING_REQUEST   Sta2   ARTIM (acse_timeout) running
    ESTABLISHED        Sta6   (Sta8 once the peer asked to release: ``_peer_released``)
    AWAITING_RELEASE   Sta7   we sent A-RELEASE-RQ; ARTIM running
    RELEASE_COLLISION  Sta10  both sides sent A-RELEASE-RQ; waiting for the peer's RP
    CLOSING            Sta13  final PDU sent; waiting for the peer to close (bounded)
    CLOSED                    transport gone
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, cast

from . import dimse, pdu
from .model import (
    Association,
    CloseReason,
    PresentationContext,
    Rejection,
    ServiceHandler,
    StoreRequest,
    StoreResult,
)
from .negotiation import (
    AcceptorPolicy,
    associate_ac,
    association_request,
    check_request,
    negotiate_contexts,
)

logger = logging.getLogger(__name__)

MAX_ASSOCIATE_PDU: Final = 1 << 20  # A-ASSOCIATE-RQ with 128 contexts is ~100 KB
MAX_COMMAND_SET: Final = 1 << 16
LINGER: Final = 5.0  # how long CLOSING waits for the peer to close after our last PDU
# Backpressure: a conforming SCU without async operations has at most one message queued;
# these only bite on peers that stream without waiting for responses.
PAUSE_QUEUED_BYTES: Final = 32 << 20
PAUSE_QUEUED_MESSAGES: Final = 64
_TCP_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)


class State(enum.Enum):
    AWAITING_REQUEST = "Sta2"
    ESTABLISHED = "Sta6"
    AWAITING_RELEASE = "Sta7"
    RELEASE_COLLISION = "Sta10"
    CLOSING = "Sta13"
    CLOSED = "closed"


_ASSOCIATED: Final = frozenset({State.ESTABLISHED, State.AWAITING_RELEASE, State.RELEASE_COLLISION})


@dataclass(frozen=True)
class ConnectionSettings:
    policy: AcceptorPolicy
    acse_timeout: float
    network_timeout: float | None


class _Failure(Exception):
    """Internal: abort the association with an A-ABORT carrying ``reason``."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class _Store:
    request: StoreRequest
    size: int


@dataclass(slots=True)
class _Echo:
    context_id: int
    message_id: int
    size: int = 256


@dataclass(slots=True)
class _Unsupported:
    context_id: int
    command_field: int
    message_id: int
    sop_class_uid: str | None
    size: int


@dataclass(slots=True)
class _PeerRelease:
    size: int = 0


_Work = _Store | _Echo | _Unsupported | _PeerRelease


class AssociationProtocol(asyncio.Protocol):
    """Serves one TCP connection. ``admit`` says whether another association fits."""

    def __init__(
        self,
        handler: ServiceHandler,
        settings: ConnectionSettings,
        *,
        admit: Callable[[], bool],
        on_finished: Callable[[AssociationProtocol], None],
    ) -> None:
        self._handler = handler
        self._settings = settings
        self._policy = settings.policy
        self._max_pdu = settings.policy.max_pdu
        self._admit = admit
        self._on_finished = on_finished
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self.peer_host = ""
        self.peer_port = 0
        self.state = State.AWAITING_REQUEST
        self.association: Association | None = None
        self._contexts: dict[int, PresentationContext] = {}
        self._peer_max_pdu = 0
        self._buffer = bytearray()
        # message being assembled
        self._command = bytearray()
        self._command_context: PresentationContext | None = None
        self._awaiting_data: tuple[PresentationContext, dimse.Command] | None = None
        self._data = bytearray()
        # work queue and the worker serving it
        self._queue: deque[_Work] = deque()
        self._queued_bytes = 0
        self._reading_paused = False
        self._wakeup: asyncio.Future[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._peer_released = False
        self._release_wanted = False
        self._writable: asyncio.Future[None] | None = None
        # timers and lifetime
        self._timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_activity = self._loop.time()
        self.close_reason: CloseReason | None = None
        self._transport_closed = False
        self._worker_done = False
        # ``ended``: the association is over and on_close has returned (or there was none);
        # ``done``: that, and the transport is closed too.
        self.ended: asyncio.Future[None] = self._loop.create_future()
        self.done: asyncio.Future[None] = self._loop.create_future()

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_host, self.peer_port = str(peer[0]), int(peer[1])
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                logger.debug("could not set TCP_NODELAY", exc_info=True)
            else:
                self._sock = sock
                self._quickack()
        logger.debug("connection from %s:%d", self.peer_host, self.peer_port)
        self._start_timer(self._settings.acse_timeout, self._acse_timeout)

    def data_received(self, data: bytes) -> None:
        # The peer's Nagle (DCMTK default) plus our delayed ACK costs 40 ms per instance;
        # quick-ack mode is not sticky on Linux, so it is re-armed on every read.
        self._quickack()
        self._last_activity = self._loop.time()
        if self._ending:
            return
        if self._buffer:
            self._buffer += data
            view = memoryview(self._buffer)
        else:
            view = memoryview(data)
        consumed = 0
        try:
            consumed = self._parse(view)
        except _Failure as exc:
            self._fail(str(exc), exc.reason)
        except pdu.PDUError as exc:
            self._fail(str(exc), exc.reason)
        except dimse.DimseError as exc:
            self._fail(f"undecodable command set: {exc}", pdu.ABORT_REASON_INVALID_PARAMETER)
        except Exception as exc:  # a bug of ours on odd input must still end cleanly
            logger.exception("%s: unexpected error while parsing input", self._label())
            self._fail(f"internal error on input: {exc!r}", pdu.ABORT_REASON_NOT_SPECIFIED)
        if self._ending:
            self._buffer = bytearray()
        elif consumed:
            # A copy of the tail rather than an in-place delete: slices of the old buffer
            # may still be alive, and the tail is at most one partial PDU.
            self._buffer = bytearray(view[consumed:])
        elif not self._buffer:
            self._buffer = bytearray(data)

    def eof_received(self) -> bool | None:
        return False  # half-close from the peer ends the connection

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.debug("connection from %s:%d lost: %s", self.peer_host, self.peer_port, exc)
        self.state = State.CLOSED
        self._transport_closed = True
        self._cancel_timer()
        if self.association is None:
            self._worker_done = True
        self._terminate("connection_lost")
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._maybe_done()

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- parsing -------------------------------------------------------------------------

    def _parse(self, view: memoryview) -> int:
        """Handle every complete PDU in ``view``; return the number of bytes consumed."""
        offset = 0
        total = len(view)
        while total - offset >= pdu.PDU_HEADER_LENGTH:
            pdu_type, length = pdu.read_header(view, offset)
            self._check_header(pdu_type, length)
            end = offset + pdu.PDU_HEADER_LENGTH + length
            if end > total:
                break
            body = view[offset + pdu.PDU_HEADER_LENGTH : end]
            offset = end
            self._dispatch(pdu_type, body)
            if self._ending:
                break
        return offset

    def _check_header(self, pdu_type: int, length: int) -> None:
        """Reject bad headers before waiting for (possibly gigabytes of) body."""
        if pdu_type not in pdu.PDU_TYPES:
            raise _Failure(f"unknown PDU type 0x{pdu_type:02X}", pdu.ABORT_REASON_UNRECOGNIZED_PDU)
        if pdu_type == pdu.P_DATA_TF:
            if 0 < self._max_pdu < length:
                raise _Failure(
                    f"P-DATA-TF of {length} bytes exceeds our maximum PDU length {self._max_pdu}",
                    pdu.ABORT_REASON_INVALID_PARAMETER,
                )
        elif pdu_type in (pdu.A_ASSOCIATE_RQ, pdu.A_ASSOCIATE_AC):
            if length > MAX_ASSOCIATE_PDU:
                raise _Failure(
                    f"A-ASSOCIATE PDU of {length} bytes is implausibly large",
                    pdu.ABORT_REASON_INVALID_PARAMETER,
                )
        elif length != 4:
            raise _Failure(
                f"PDU type 0x{pdu_type:02X} with length {length}, expected 4",
                pdu.ABORT_REASON_INVALID_PARAMETER,
            )

    def _dispatch(self, pdu_type: int, body: memoryview) -> None:
        state = self.state
        if pdu_type == pdu.P_DATA_TF:
            if state is State.ESTABLISHED and not self._peer_released:
                self._on_pdata(body)
            elif state is State.AWAITING_RELEASE:
                self._on_pdata(body)  # PS3.8 AR-6: data may still cross our release request
            else:
                raise _Failure(f"P-DATA-TF in state {state.value}", pdu.ABORT_REASON_UNEXPECTED_PDU)
        elif pdu_type == pdu.A_ABORT:
            abort = pdu.decode_abort(body)
            logger.info(
                "%s aborted by peer %s:%d (source %d, reason %d)",
                self._label(),
                self.peer_host,
                self.peer_port,
                abort.source,
                abort.reason,
            )
            self._terminate("aborted_by_peer")
            self._close(linger=False)
        elif pdu_type == pdu.A_ASSOCIATE_RQ and state is State.AWAITING_REQUEST:
            self._on_associate_rq(body)
        elif (
            pdu_type == pdu.A_RELEASE_RQ and state is State.ESTABLISHED and not self._peer_released
        ):
            pdu.decode_release_rq(body)
            self._on_release_rq()
        elif pdu_type == pdu.A_RELEASE_RQ and state is State.AWAITING_RELEASE:
            pdu.decode_release_rq(body)
            logger.info("%s: release collision", self._label())
            self.state = State.RELEASE_COLLISION  # wait for the peer's RP, then send ours
        elif pdu_type == pdu.A_RELEASE_RP and state is State.AWAITING_RELEASE:
            pdu.decode_release_rp(body)
            logger.info("%s released (by us)", self._label())
            self._terminate("released")
            self._close(linger=False)
        elif pdu_type == pdu.A_RELEASE_RP and state is State.RELEASE_COLLISION:
            pdu.decode_release_rp(body)
            self._write(pdu.ReleaseRP().encode())
            logger.info("%s released (collision)", self._label())
            self._terminate("released")
            self._close(linger=True)
        else:
            raise _Failure(
                f"unexpected PDU type 0x{pdu_type:02X} in state {state.value}",
                pdu.ABORT_REASON_UNEXPECTED_PDU,
            )

    # --- association establishment -------------------------------------------------------

    def _on_associate_rq(self, body: memoryview) -> None:
        self._cancel_timer()
        rq = pdu.decode_associate_rq(body)
        request = association_request(rq, self.peer_host, self.peer_port)
        rejection = check_request(rq)
        if rejection is not None:
            self._protocol_error(
                f"association from {request.calling_ae!r} refused: protocol version "
                f"{rq.protocol_version}, application context {rq.application_context!r}"
            )
        elif not self._admit():
            logger.warning(
                "refusing association from %r at %s:%d: association limit reached",
                request.calling_ae,
                self.peer_host,
                self.peer_port,
            )
            rejection = Rejection.local_limit_exceeded()
        else:
            try:
                rejection = self._handler.on_associate(request)
            except Exception:
                logger.exception("on_associate raised; rejecting (transient)")
                rejection = Rejection.no_reason(transient=True)
        if rejection is not None:
            logger.info(
                "rejected association %r -> %r from %s:%d (result %d, source %d, reason %d)",
                request.calling_ae,
                request.called_ae,
                self.peer_host,
                self.peer_port,
                rejection.result,
                rejection.source,
                rejection.reason,
            )
            self._write(
                pdu.AssociateRJ(rejection.result, rejection.source, rejection.reason).encode()
            )
            self._close(linger=True)
            return
        answers, accepted = negotiate_contexts(rq.presentation_contexts, self._policy)
        self._contexts = accepted
        self._peer_max_pdu = request.peer_max_pdu
        self.association = Association(
            id=uuid.uuid4().hex,
            request=request,
            contexts=MappingProxyType(dict(accepted)),
            started_at=time.time(),
        )
        self._write(associate_ac(rq, answers, self._policy).encode())
        self.state = State.ESTABLISHED
        logger.info(
            "association %s accepted: %r -> %r from %s:%d, %d of %d contexts",
            self.association.id,
            request.calling_ae,
            request.called_ae,
            self.peer_host,
            self.peer_port,
            len(accepted),
            len(answers),
        )
        self._worker = self._loop.create_task(self._serve(self.association))
        if self._settings.network_timeout is not None:
            self._idle_timer = self._loop.call_later(
                self._settings.network_timeout, self._check_idle
            )

    # --- P-DATA and message assembly -----------------------------------------------------

    def _on_pdata(self, body: memoryview) -> None:
        for context_id, control, fragment in pdu.iter_pdvs(body):
            context = self._contexts.get(context_id)
            if context is None:
                raise _Failure(
                    f"PDV for presentation context {context_id}, which was not accepted",
                    pdu.ABORT_REASON_INVALID_PARAMETER,
                )
            if control & 1:
                self._on_command_fragment(context, fragment, bool(control & 2))
            else:
                self._on_data_fragment(context, fragment, bool(control & 2))

    def _on_command_fragment(
        self, context: PresentationContext, fragment: memoryview, last: bool
    ) -> None:
        if self._awaiting_data is not None:
            raise _Failure(
                "command fragment while a data set was expected",
                pdu.ABORT_REASON_UNEXPECTED_PARAMETER,
            )
        if self._command_context is None:
            self._command_context = context
        elif self._command_context is not context:
            raise _Failure(
                "command set fragments on different presentation contexts",
                pdu.ABORT_REASON_INVALID_PARAMETER,
            )
        self._command += fragment
        if len(self._command) > MAX_COMMAND_SET:
            raise _Failure("command set is implausibly large", pdu.ABORT_REASON_INVALID_PARAMETER)
        if not last:
            return
        command = dimse.decode_command(self._command)
        self._command = bytearray()
        self._command_context = None
        if command.has_data_set:
            self._awaiting_data = (context, command)
        else:
            self._complete(context, command, None)

    def _on_data_fragment(
        self, context: PresentationContext, fragment: memoryview, last: bool
    ) -> None:
        if self._awaiting_data is None:
            raise _Failure(
                "data set fragment without a command", pdu.ABORT_REASON_UNEXPECTED_PARAMETER
            )
        expected, command = self._awaiting_data
        if context is not expected:
            raise _Failure(
                "data set on a different presentation context than its command",
                pdu.ABORT_REASON_INVALID_PARAMETER,
            )
        if not last:
            self._data += fragment
            return
        if self._data:
            self._data += fragment
            data = bytes(self._data)
            self._data = bytearray()
        else:
            data = bytes(fragment)  # the whole data set in one PDV: a single copy
        self._awaiting_data = None
        self._complete(context, command, data)

    def _complete(
        self, context: PresentationContext, command: dimse.Command, data: bytes | None
    ) -> None:
        """Turn a complete message into work; mandatory elements are checked here so a
        broken command aborts at once instead of after the queue drains."""
        field = command.command_field
        work: _Work
        if field == dimse.C_STORE_RQ:
            if data is None:
                raise dimse.DimseError("C-STORE-RQ without a data set")
            request = StoreRequest(
                context=context,
                message_id=command.message_id,
                sop_class_uid=command.text(dimse.AFFECTED_SOP_CLASS_UID),
                sop_instance_uid=command.text(dimse.AFFECTED_SOP_INSTANCE_UID),
                priority=command.optional_us(dimse.PRIORITY) or 0,
                move_originator_ae=command.optional_text(dimse.MOVE_ORIGINATOR_AE) or None,
                move_originator_message_id=command.optional_us(dimse.MOVE_ORIGINATOR_MESSAGE_ID),
                data=data,
            )
            work = _Store(request, len(data) + 512)
        elif field == dimse.C_ECHO_RQ:
            work = _Echo(context.id, command.message_id)
        elif field == dimse.C_CANCEL_RQ:
            return  # nothing is ever pending that could be cancelled; C-CANCEL has no reply
        elif field & dimse.RESPONSE_BIT:
            # We never send requests, so a response is stray; ignoring it is harmless.
            self._protocol_error(f"unexpected DIMSE response 0x{field:04X} ignored")
            return
        else:
            work = _Unsupported(
                context.id,
                field,
                command.message_id,
                command.optional_text(dimse.AFFECTED_SOP_CLASS_UID),
                len(data or b"") + 512,
            )
        self._enqueue(work)

    def _on_release_rq(self) -> None:
        if self._command or self._awaiting_data is not None:
            logger.warning("%s: release requested mid-message; dropping it", self._label())
            self._command = bytearray()
            self._command_context = None
            self._awaiting_data = None
            self._data = bytearray()
        self._peer_released = True
        self._enqueue(_PeerRelease())

    # --- the worker ----------------------------------------------------------------------

    def _enqueue(self, work: _Work) -> None:
        self._queue.append(work)
        self._queued_bytes += work.size
        if not self._reading_paused and (
            self._queued_bytes > PAUSE_QUEUED_BYTES or len(self._queue) > PAUSE_QUEUED_MESSAGES
        ):
            assert self._transport is not None
            self._reading_paused = True
            self._transport.pause_reading()
            logger.debug("%s: pausing reads, peer is far ahead", self._label())
        self._wake()

    def _dequeue(self) -> _Work:
        work = self._queue.popleft()
        self._queued_bytes -= work.size
        if (
            self._reading_paused
            and self._queued_bytes <= PAUSE_QUEUED_BYTES // 2
            and len(self._queue) <= PAUSE_QUEUED_MESSAGES // 2
        ):
            self._reading_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
        return work

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _serve(self, association: Association) -> None:
        """Process messages in order; always ends with exactly one ``on_close``."""
        try:
            while True:
                while not self._queue and self.close_reason is None:
                    self._busy = False
                    self._last_activity = self._loop.time()
                    self._maybe_request_release()
                    self._wakeup = self._loop.create_future()
                    await self._wakeup
                if self.close_reason is not None:
                    break
                work = self._dequeue()
                self._busy = True
                if isinstance(work, _PeerRelease):
                    self._write(pdu.ReleaseRP().encode())
                    logger.info("%s released by peer", self._label())
                    self._terminate("released")
                    self._close(linger=True)
                    break
                context_id, response = await self._process(association, work)
                if self.close_reason is not None:
                    break  # aborted or lost meanwhile: the response has nowhere to go
                if self._writable is not None:
                    await self._writable
                self._write(pdu.encode_pdata(context_id, True, response, self._peer_max_pdu))
        except Exception:
            # A bug of ours must not leave a connection open with nobody serving it.
            logger.exception("%s: worker failed, aborting", self._label())
            self._write(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, 0).encode())
            self._terminate("aborted_locally")
            self._close(linger=True)
        finally:
            self._busy = False
            reason: CloseReason = self.close_reason or "aborted_locally"
            try:
                await self._handler.on_close(association, reason)
            except Exception:
                logger.exception("on_close raised for association %s", association.id)
            self._worker_done = True
            self._maybe_done()

    async def _process(self, association: Association, work: _Work) -> tuple[int, bytes]:
        if isinstance(work, _Store):
            request = work.request
            result = await self._store(association, request)
            return request.context.id, dimse.encode_store_rsp(
                request.message_id,
                request.sop_class_uid,
                request.sop_instance_uid,
                result.status,
                result.error_comment,
            )
        if isinstance(work, _Echo):
            try:
                await self._handler.on_echo(association)
            except Exception:
                logger.exception("on_echo raised; answering the echo anyway")
            return work.context_id, dimse.encode_echo_rsp(work.message_id)
        assert isinstance(work, _Unsupported)
        logger.info(
            "%s: unsupported DIMSE command 0x%04X answered with 0x0211",
            association.id,
            work.command_field,
        )
        return work.context_id, dimse.encode_response(
            work.command_field | dimse.RESPONSE_BIT,
            work.message_id,
            dimse.UNRECOGNIZED_OPERATION,
            sop_class_uid=work.sop_class_uid,
        )

    async def _store(self, association: Association, request: StoreRequest) -> StoreResult:
        try:
            result = await self._handler.on_store(association, request)
            if not isinstance(result, StoreResult):
                raise TypeError(f"on_store returned {type(result).__name__}, not StoreResult")
        except Exception as exc:
            logger.exception(
                "on_store raised for %s in association %s", request.sop_instance_uid, association.id
            )
            return StoreResult(dimse.HANDLER_FAILURE, f"receiver error: {type(exc).__name__}")
        return result

    # --- release, abort, timeouts --------------------------------------------------------

    def request_release(self) -> None:
        """Ask to release once in-flight and queued messages are answered (PS3.8 A-RELEASE)."""
        if self.association is None:
            if self.state is State.AWAITING_REQUEST:
                self._close(linger=False)
            return
        self._release_wanted = True
        self._wake()

    def _maybe_request_release(self) -> None:
        if (
            self._release_wanted
            and self.state is State.ESTABLISHED
            and not self._peer_released
            and not self._busy
            and not self._queue
            and not self._command
            and self._awaiting_data is None
        ):
            self._write(pdu.ReleaseRQ().encode())
            self.state = State.AWAITING_RELEASE
            logger.info("%s: requesting release", self._label())
            self._start_timer(self._settings.acse_timeout, self._release_timeout)

    def abort(self) -> None:
        """A-ABORT as service-user; queued messages are dropped, nothing else is sent.

        A connection already waiting for the peer to close is simply dropped.
        """
        if self._ending:
            if self._transport is not None and self.state is State.CLOSING:
                self._transport.abort()
            return
        self._write(pdu.Abort(pdu.ABORT_SOURCE_USER, 0).encode())
        logger.info("%s aborted locally", self._label())
        self._terminate("aborted_locally")
        self._close(linger=True)

    def _fail(self, message: str, reason: int) -> None:
        self._protocol_error(message)
        self._write(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, reason).encode())
        self._terminate("protocol_error")
        self._close(linger=True)

    def _protocol_error(self, message: str) -> None:
        logger.warning("protocol error from %s:%d: %s", self.peer_host, self.peer_port, message)
        try:
            self._handler.on_protocol_error(self.peer_host, self.peer_port, message)
        except Exception:
            logger.exception("on_protocol_error raised")

    def _acse_timeout(self) -> None:
        self._timer = None
        if self.state is State.AWAITING_REQUEST:
            # PS3.8 AA-2: no A-ASSOCIATE-RQ in time, just close.
            logger.info(
                "no A-ASSOCIATE-RQ from %s:%d within %.1fs",
                self.peer_host,
                self.peer_port,
                self._settings.acse_timeout,
            )
            self._terminate("timeout")
            self._close(linger=False)

    def _release_timeout(self) -> None:
        self._timer = None
        if self.state in (State.AWAITING_RELEASE, State.RELEASE_COLLISION):
            logger.warning("%s: no A-RELEASE-RP in time, aborting", self._label())
            self._write(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, 0).encode())
            self._terminate("timeout")
            self._close(linger=True)

    def _check_idle(self) -> None:
        self._idle_timer = None
        timeout = self._settings.network_timeout
        if timeout is None or self.close_reason is not None:
            return
        now = self._loop.time()
        if self._busy or self._queue:
            deadline = now + timeout  # waiting on ourselves is not the peer being idle
        else:
            deadline = self._last_activity + timeout
            if now >= deadline:
                logger.warning("%s: idle for %.1fs, aborting", self._label(), timeout)
                self._write(pdu.Abort(pdu.ABORT_SOURCE_PROVIDER, 0).encode())
                self._terminate("timeout")
                self._close(linger=True)
                return
        self._idle_timer = self._loop.call_at(deadline, self._check_idle)

    # --- plumbing ------------------------------------------------------------------------

    def _terminate(self, reason: CloseReason) -> None:
        """Fix the close reason (first one wins) and drop all pending work."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._queue.clear()
        self._queued_bytes = 0
        self._command = bytearray()
        self._awaiting_data = None
        self._data = bytearray()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.association is None:
            self._worker_done = True
            self._maybe_done()
        self._wake()

    def _close(self, *, linger: bool) -> None:
        """Close the transport. With ``linger`` (PS3.8 Sta13) leave it to the peer to close
        after reading our last PDU, bounded by ARTIM: closing first races the peer's read of
        an A-ASSOCIATE-RJ/A-ABORT, and unread input would turn our close into a reset."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self.state = State.CLOSING
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()  # keep draining so the peer's close is seen
        if linger:
            self._start_timer(min(LINGER, self._settings.acse_timeout), transport.abort)
        else:
            transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _quickack(self) -> None:
        if _TCP_QUICKACK is not None and self._sock is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                self._sock = None

    def _start_timer(self, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _maybe_done(self) -> None:
        if self._worker_done and not self.ended.done():
            self.ended.set_result(None)
        if self._transport_closed and self._worker_done and not self.done.done():
            self.done.set_result(None)
            self._on_finished(self)

    def _label(self) -> str:
        if self.association is not None:
            return f"association {self.association.id}"
        return f"connection {self.peer_host}:{self.peer_port}"

    @property
    def _ending(self) -> bool:
        """Our last PDU is out (or the transport is gone): input is no longer read."""
        return self.state is State.CLOSING or self.state is State.CLOSED

    @property
    def is_open(self) -> bool:
        """Associated and not yet over; what the server lists and counts."""
        return self.association is not None and self.close_reason is None

    @property
    def is_idle(self) -> bool:
        return not (self._busy or self._queue or self._command or self._awaiting_data)

    def cancel_worker(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
