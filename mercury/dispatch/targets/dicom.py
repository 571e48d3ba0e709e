"""The ``dicom`` and ``dicomtls`` targets: C-STORE to a DICOM node, optionally over TLS,
with storage commitment.

One shipment is one association (several, one after the other, only when its SOP classes
need more than the 128 presentation contexts an association can carry). For every SOP
class we propose each transfer syntax the policy may need as a context of its own, so the
peer's answer tells exactly which syntaxes it takes:

* ``as_received``: every syntax the instances are stored in, plus Explicit and Implicit VR
  Little Endian as fall-backs;
* ``uncompressed``: Explicit and Implicit VR Little Endian;
* a transfer syntax UID: that one, plus the two fall-backs.

The C-STOREs go out on mercury's own requestor (:mod:`mercury.dicom.net.client`): one
blocking socket on the sending thread, TCP_NODELAY, no helper threads. An instance whose
stored syntax the peer accepted is streamed from its file as it is (byte for byte,
constant memory). Otherwise it is read with pydicom and converted
(:mod:`mercury.dicom.transcode`): decompressed to Explicit (or, if that is all the peer
takes, Implicit) VR Little Endian, or compressed losslessly to the syntax the target
names. Every conversion is noted in the report. ``dimse_timeout`` bounds the wait for each
response, counted from the last byte of the request written, and how long a write may
stall when the peer stops reading.

Storage commitment
------------------
After the C-STOREs (of every association of the shipment) we open one more association,
with pynetdicom, proposing only the Storage Commitment Push Model, and send an N-ACTION
(action type 1) with a new Transaction UID; then we wait up to ``commitment_timeout`` for
the N-EVENT-REPORT. A peer may send it on that association (we keep it open while waiting
and answer it), or open a new association to us: Orthanc does the latter, always, to the
modality declared in its ``DicomModalities`` under our calling AE title; an undeclared
caller gets no answer at all. For that we listen on ``context.extra["commitment_port"]``
(0 or absent: an ephemeral port); the listener is shared by concurrent shipments and
routes reports by Transaction UID. A peer that refuses the Storage Commitment context
does not support it.

The pynetdicom 3.0 trap, where pynetdicom is still used
-------------------------------------------------------
pynetdicom's ``send_*`` can miss a fast DIMSE response and wait out the whole DIMSE
timeout. The cause is in ``pynetdicom/association.py``: the association's reactor thread
(``_run_reactor``) loops ``_is_paused = True; _reactor_checkpoint.wait(); _is_paused =
False; dimse.get_msg(block=False)``, and a sender "pauses" it with
``_reactor_checkpoint.clear(); while not _is_paused: sleep(0.0001)`` before sending the
request and blocking in ``dimse.get_msg(block=True)``. When the reactor has just come out
of ``wait()`` (the checkpoint was still set) but has not yet reset ``_is_paused`` -- it is
preempted there by the GIL -- the sender sees ``_is_paused`` true and goes on. The request
goes out, and if the response is back in ``dimse.msg_queue`` before the reactor runs again
(fast peers, TCP_NODELAY), the reactor's non-blocking ``get_msg`` takes it off the queue,
``_serve_request`` drops it as "unexpected" (it is not a request), and the sender waits for
a message that never comes. Reproduced with pynetdicom 3.0.4 and DCMTK storescp on
loopback: a run of 3,000 small C-STOREs stalled for the full 2 s DIMSE timeout after 1,764.

The C-STOREs no longer go through pynetdicom; the storage commitment association does, so
it keeps the workaround (:func:`_own_the_message_queue`): on that association every DIMSE
message that reaches the queue is a response to us (the peer's N-EVENT-REPORT request
pynetdicom hands to an event handler on a thread of its own, never to the queue). The
reactor's non-blocking reads get nothing; the sending thread's blocking read gets every
message, and also ends at once when the peer aborts or the connection drops.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_ASSOCIATE

from mercury.config.targets import DicomTarget, DicomTlsTarget, TargetBase
from mercury.dicom.net import client, dimse
from mercury.dicom.net.negotiation import (
    MERCURY_IMPLEMENTATION_CLASS_UID,
    MERCURY_IMPLEMENTATION_VERSION_NAME,
)
from mercury.dicom.sop_classes import VERIFICATION
from mercury.dicom.syntax import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from mercury.dicom.transcode import TranscodeError, syntax_name, transcode
from mercury.dicom.uids import generate_uid
from mercury.dispatch.base import (
    CommitmentResult,
    DispatchError,
    InstanceResult,
    Origin,
    OutgoingInstance,
    ProbeResult,
    SenderContext,
    SendFailed,
    SendReport,
    Shipment,
    TargetUnreachable,
)
from mercury.send.report import describe_status

log = logging.getLogger("mercury.dispatch.dicom")

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
"""The well-known SOP instance of the Storage Commitment Push Model."""
MAX_CONTEXTS = 128
"""Presentation contexts one association can carry (odd IDs 1 to 255, PS3.8 9.3.2.2)."""
FALLBACK_SYNTAXES: tuple[str, ...] = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
NOT_ACCEPTED = "SOP class not accepted by peer"
_NO_COMMITMENT = (
    "the peer does not support storage commitment (it refused the Storage Commitment Push Model)"
)
_POLL_SECONDS = 0.05

_COMMITMENT_FAILURES = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0119: "class/instance conflict",
    0x0122: "referenced SOP class not supported",
    0x0131: "duplicate transaction UID",
    0x0213: "resource limitation",
}

_REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given (it may accept only callers it knows: ask its administrator "
    "to allow calling AE title {calling} from this host)",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title {calling} not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion, try again later",
    (3, 2): "local limit exceeded (too many associations), try again later",
}


# --- Presentation contexts -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """The instances sent over one association, and the contexts it proposes for them:
    (SOP class, transfer syntax) pairs, one syntax per context."""

    contexts: list[tuple[str, str]]
    instances: list[OutgoingInstance]


def requested_syntaxes(policy: str, stored: Sequence[str]) -> list[str]:
    """The transfer syntaxes to propose for one SOP class whose instances are stored in
    ``stored``, in order of preference, each once."""
    if policy == "as_received":
        wanted = list(stored)
    elif policy == "uncompressed":
        wanted = []
    else:
        wanted = [policy]
    syntaxes: list[str] = []
    for syntax in (*wanted, *FALLBACK_SYNTAXES):
        if syntax not in syntaxes:
            syntaxes.append(syntax)
    return syntaxes


def plan_batches(
    instances: Sequence[OutgoingInstance], policy: str, reserved: int = 0
) -> list[Batch]:
    """Group the instances by SOP class into as few associations as the context limit
    allows; ``reserved`` contexts per association are kept free for other uses."""
    by_class: dict[str, list[OutgoingInstance]] = {}
    for item in instances:
        by_class.setdefault(item.sop_class_uid, []).append(item)
    limit = MAX_CONTEXTS - reserved
    batches: list[Batch] = []
    contexts: list[tuple[str, str]] = []
    members: list[OutgoingInstance] = []
    for sop_class, items in by_class.items():
        stored = list(dict.fromkeys(item.transfer_syntax for item in items))
        syntaxes = requested_syntaxes(policy, stored)
        if len(syntaxes) > limit:  # would take dozens of syntaxes in one SOP class
            raise ValueError(f"{sop_class} needs {len(syntaxes)} presentation contexts")
        if contexts and len(contexts) + len(syntaxes) > limit:
            batches.append(Batch(contexts, members))
            contexts, members = [], []
        contexts.extend((sop_class, syntax) for syntax in syntaxes)
        members.extend(items)
    if members:
        batches.append(Batch(contexts, members))
    return batches


@dataclass(frozen=True, slots=True)
class Route:
    """How one instance goes out: in which syntax, whether it must be converted first, and
    why (the conversion's reason, or why it cannot be sent when ``syntax`` is None)."""

    syntax: str | None
    convert: bool = False
    why: str = ""


def choose_route(policy: str, stored: str, accepted: frozenset[str]) -> Route:
    """Pick the syntax to send an instance stored in ``stored`` in, given the syntaxes the
    peer accepted for its SOP class."""
    if not accepted:
        return Route(None, why=NOT_ACCEPTED)
    if policy == "as_received":
        wanted = stored
    elif policy == "uncompressed":
        wanted = stored if stored in FALLBACK_SYNTAXES else EXPLICIT_VR_LITTLE_ENDIAN
    else:
        wanted = policy
    if wanted in accepted:
        if wanted == stored:
            return Route(wanted)
        asked = "uncompressed" if policy == "uncompressed" else syntax_name(wanted)
        return Route(wanted, True, f"the target asks for {asked}")
    if stored in accepted and stored in FALLBACK_SYNTAXES:
        return Route(stored)
    for syntax in FALLBACK_SYNTAXES:
        if syntax in accepted:
            return Route(syntax, True, f"the peer does not accept {syntax_name(wanted)}")
    names = ", ".join(sorted(syntax_name(uid) for uid in accepted))
    return Route(
        None,
        why=f"the peer accepts this SOP class only in {names}, not in {syntax_name(wanted)} "
        "or uncompressed",
    )


# --- pynetdicom association handling -------------------------------------------------------


def _own_the_message_queue(assoc: Any, dimse_timeout: float) -> None:
    """Give every incoming DIMSE message to the thread that sends, never to the reactor.

    The cure for the TCP_NODELAY race described in the module docstring. A non-blocking
    read (the reactor's) gets nothing; a blocking read waits until a message arrives, the
    association is aborted or its connection dropped, or nothing has moved for
    ``dimse_timeout`` seconds: the clock restarts while request data is still being written.
    """
    dimse = assoc.dimse
    dul = assoc.dul

    def get_msg(block: bool = False) -> tuple[Any, Any]:
        if not block:
            return None, None
        pending = dul.to_provider_queue.qsize()
        last_progress = time.monotonic()
        while True:
            try:
                return cast(tuple[Any, Any], dimse.msg_queue.get(timeout=_POLL_SECONDS))
            except queue.Empty:
                pass
            if assoc.is_aborted or not dul.is_alive():
                return None, None
            now = time.monotonic()
            still_pending = dul.to_provider_queue.qsize()
            if still_pending != pending:
                pending, last_progress = still_pending, now
            elif now - last_progress > dimse_timeout:
                if still_pending:
                    _unblock_writer(assoc)
                return None, None

    dimse.get_msg = get_msg


def _unblock_writer(assoc: Any) -> None:
    """The peer stopped reading: shut the socket so pynetdicom's writer thread (blocked in
    send, where no timeout applies) fails and the association can end."""
    with contextlib.suppress(AttributeError, OSError):
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)


def _unread_rejection(assoc: Any) -> Any | None:
    """An A-ASSOCIATE-RJ pynetdicom received but did not act on: a peer that rejects and
    closes at once can make pynetdicom 3.0 see the closed socket first."""
    try:
        pending = list(assoc.dul.to_user_queue.queue)
    except AttributeError:  # pragma: no cover - pynetdicom internals changed
        return None
    for item in pending:
        if isinstance(item, A_ASSOCIATE) and item.result in (1, 2):
            return item
    return None


class _NoContextAccepted(Exception):
    """The peer accepted the association but none of its presentation contexts."""


@dataclass
class _Endpoint:
    """Where and as whom one shipment (or a probe) connects."""

    host: str
    port: int
    calling_ae: str
    called_ae: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


# --- Storage commitment listener -----------------------------------------------------------


Inbox = queue.Queue[Dataset]
"""Where a shipment receives the event information of storage commitment reports."""


def _delivering_to(inbox: Inbox) -> Any:
    """An EVT_N_EVENT_REPORT handler for our own association: every report goes to
    ``inbox`` (pynetdicom answers N-EVENT-REPORT requests on a thread of its own, through
    the association's handler, never through the message queue)."""

    def on_report(event: Any) -> tuple[int, Dataset | None]:
        try:
            inbox.put(event.event_information)
        except Exception:  # undecodable: tell the peer
            return 0x0110, None
        return 0x0000, None

    return on_report


class CommitmentListener:
    """Accepts the associations a peer opens to deliver storage commitment reports
    (N-EVENT-REPORT) and hands each report to the shipment waiting for its transaction."""

    def __init__(self, port: int, ae_title: str, network_timeout: float) -> None:
        ae = AE(ae_title=ae_title)
        ae.implementation_class_uid = MERCURY_IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = MERCURY_IMPLEMENTATION_VERSION_NAME
        ae.network_timeout = network_timeout
        ae.add_supported_context(
            STORAGE_COMMITMENT_PUSH, list(FALLBACK_SYNTAXES), scu_role=True, scp_role=True
        )
        ae.add_supported_context(VERIFICATION, list(FALLBACK_SYNTAXES))
        self._lock = threading.Lock()
        self._inboxes: dict[str, Inbox] = {}
        handlers: list[Any] = [(evt.EVT_N_EVENT_REPORT, self._on_report)]
        server = ae.start_server(("", port), block=False, evt_handlers=handlers)
        assert server is not None  # block=False returns the running server
        self._server = server
        self.port = int(server.server_address[1])

    def expect(self, transaction_uid: str, inbox: Inbox) -> None:
        """Deliver reports for this transaction to ``inbox``."""
        with self._lock:
            self._inboxes[transaction_uid] = inbox

    def forget(self, transaction_uid: str) -> None:
        with self._lock:
            self._inboxes.pop(transaction_uid, None)

    def _on_report(self, event: Any) -> tuple[int, Dataset | None]:
        try:
            info = event.event_information
        except Exception:  # an undecodable report: tell the peer, keep listening
            log.warning("undecodable storage commitment report from %s", event.assoc.requestor)
            return 0x0110, None
        transaction = str(info.get("TransactionUID", ""))
        with self._lock:
            inbox = self._inboxes.get(transaction)
        if inbox is None:
            log.warning("storage commitment report for unknown transaction %s", transaction)
        else:
            inbox.put(info)
        return 0x0000, None

    def close(self) -> None:
        self._server.shutdown()


_listeners_lock = threading.Lock()
_listeners: dict[int, tuple[CommitmentListener, int]] = {}


@contextlib.contextmanager
def commitment_listener(
    port: int, ae_title: str, network_timeout: float = 60.0
) -> Iterator[CommitmentListener]:
    """A listener on ``port``, shared with concurrent shipments using the same port
    (port 0: a private listener on an ephemeral port). Raises OSError if it cannot listen."""
    if port == 0:
        private = CommitmentListener(0, ae_title, network_timeout)
        try:
            yield private
        finally:
            private.close()
        return
    with _listeners_lock:
        listener, users = _listeners.get(port) or (
            CommitmentListener(port, ae_title, network_timeout),
            0,
        )
        _listeners[port] = (listener, users + 1)
    try:
        yield listener
    finally:
        with _listeners_lock:
            listener, users = _listeners[port]
            if users == 1:
                del _listeners[port]
                listener.close()
            else:
                _listeners[port] = (listener, users - 1)


def parse_commitment_report(info: Dataset) -> dict[str, CommitmentResult]:
    """The per-instance verdicts in an N-EVENT-REPORT's event information."""
    results: dict[str, CommitmentResult] = {}
    for item in info.get("ReferencedSOPSequence", []) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        results[uid] = CommitmentResult(uid, True)
    for item in info.get("FailedSOPSequence", []) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        code = item.get("FailureReason")
        if code is None:
            reason = "the peer did not commit it (no reason given)"
        else:
            meaning = _COMMITMENT_FAILURES.get(int(code), "unknown reason")
            reason = f"the peer did not commit it: 0x{int(code):04X} {meaning}"
        results[uid] = CommitmentResult(uid, False, reason)
    return results


# --- The sender ----------------------------------------------------------------------------


def _tls_context(target: DicomTlsTarget) -> ssl.SSLContext:
    """Client side: our certificate, only the configured CA trusted, peer name verified."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(target.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(target.tls_cert), str(target.tls_key))
    return context


class _Broken(Exception):
    """The association broke off while sending; the message says how."""


class DicomSender:
    """Sends shipments to one DICOM node with C-STORE (see the module docstring)."""

    resumable: ClassVar[bool] = True

    def __init__(
        self, name: str, target: DicomTarget | DicomTlsTarget, context: SenderContext
    ) -> None:
        self.name = name
        self.target = target
        self.context = context
        self.tls = isinstance(target, DicomTlsTarget)

    # -- public interface --

    def describe(self) -> str:
        host = "<sender>" if self._from_sender else self.target.ip
        text = f"DICOM {self.target.aet_target}@{host}:{self.target.port}"
        return text + " (TLS)" if self.tls else text

    def probe(self) -> ProbeResult:
        target = self.target
        if self._from_sender:
            return ProbeResult(
                False,
                f"cannot probe {self.describe()}: with `ip: sender` the host is the one each "
                "job's images came from, known only when a job is sent",
            )
        endpoint = _Endpoint(
            target.ip,
            target.port,
            target.aet_source or self.context.default_ae_title,
            target.aet_target,
        )
        details: dict[str, Any] = {
            "host": endpoint.host,
            "port": endpoint.port,
            "calling_ae": endpoint.calling_ae,
            "called_ae": endpoint.called_ae,
            "tls": self.tls,
        }
        started = time.monotonic()
        try:
            assoc = self._associate(
                endpoint, [(VERIFICATION, syntax) for syntax in FALLBACK_SYNTAXES]
            )
        except DispatchError as exc:
            return ProbeResult(False, str(exc), details)
        except _NoContextAccepted:
            return ProbeResult(
                False,
                f"{endpoint.called_ae} at {endpoint} accepted the association but not "
                "Verification (C-ECHO)",
                details,
            )
        try:
            response = assoc.echo()
        except client.PeerTimeout:
            return ProbeResult(
                False,
                f"no answer to C-ECHO from {endpoint.called_ae} at {endpoint} within "
                f"{target.dimse_timeout:g} s",
                details,
            )
        except client.AssociationEnded as exc:
            return ProbeResult(
                False, f"C-ECHO to {endpoint.called_ae} at {endpoint} failed: {exc}", details
            )
        assoc.release()
        elapsed_ms = (time.monotonic() - started) * 1000
        details["milliseconds"] = round(elapsed_ms)
        if response.status != 0:
            return ProbeResult(
                False,
                f"C-ECHO to {endpoint.called_ae} answered {describe_status(response.status)}",
                details,
            )
        return ProbeResult(
            True,
            f"C-ECHO to {endpoint.called_ae} at {endpoint} answered in {elapsed_ms:.0f} ms "
            f"(calling AE {endpoint.calling_ae})",
            details,
        )

    def send(self, shipment: Shipment) -> SendReport:
        report = SendReport()
        if not shipment.instances:
            return report
        endpoint = self._endpoint(shipment.origin)
        batches = plan_batches(shipment.instances, self.target.transfer_syntax)
        if len(batches) > 1:
            report.notes.append(
                f"sent over {len(batches)} associations: the instances' SOP classes need "
                f"more than {MAX_CONTEXTS} presentation contexts"
            )
        conversions: Counter[tuple[str, str, str]] = Counter()
        stored: list[OutgoingInstance] = []  # what the peer took, for storage commitment
        try:
            for batch in batches:
                self._send_batch(endpoint, batch, shipment, report, conversions, stored)
            if self.target.storage_commitment and stored:
                report.commitments.extend(self._commit(endpoint, stored))
                committed = sum(1 for result in report.commitments if result.committed)
                report.notes.append(
                    f"storage commitment: {committed} of {len(report.commitments)} "
                    "instance(s) committed"
                )
        finally:
            for (source, target, why), count in conversions.items():
                report.notes.append(
                    f"converted {count} instance(s) from {syntax_name(source)} to "
                    f"{syntax_name(target)}: {why}"
                )
        return report

    # -- sending --

    @property
    def _from_sender(self) -> bool:
        return self.target.ip.strip().lower() == "sender"

    def _endpoint(self, origin: Origin) -> _Endpoint:
        target = self.target
        host = target.ip
        if self._from_sender:
            host = origin.peer_host
            if not host:
                raise SendFailed(
                    f"{self.describe()}: the job does not say which host its images came from"
                )
        calling = target.aet_source or self.context.default_ae_title
        if target.pass_sender_aet and origin.calling_ae.strip():
            calling = origin.calling_ae.strip()
        called = target.aet_target
        if target.pass_receiver_aet and origin.called_ae.strip():
            called = origin.called_ae.strip()
        return _Endpoint(host, target.port, calling, called)

    def _send_batch(
        self,
        endpoint: _Endpoint,
        batch: Batch,
        shipment: Shipment,
        report: SendReport,
        conversions: Counter[tuple[str, str, str]],
        stored: list[OutgoingInstance],
    ) -> None:
        """Send one batch over one association."""
        try:
            assoc = self._associate(endpoint, batch.contexts, report.results)
        except _NoContextAccepted:
            report.results.extend(
                InstanceResult(item.sop_instance_uid, "failed", message=NOT_ACCEPTED)
                for item in batch.instances
            )
            return
        finished = False
        try:
            for item in batch.instances:
                if shipment.cancel.is_set():
                    raise _Broken("cancelled: the shipment was stopped before it was complete")
                route = choose_route(
                    self.target.transfer_syntax,
                    item.transfer_syntax,
                    assoc.accepted_syntaxes(item.sop_class_uid),
                )
                result = self._store(assoc, item, route, conversions)
                report.results.append(result)
                if result.status != "failed":
                    stored.append(item)
            finished = True
        except _Broken as exc:
            raise SendFailed(f"{self.describe()}: {exc}", report.results) from None
        finally:
            if finished or shipment.cancel.is_set():
                assoc.release()
            else:
                assoc.abort()

    def _store(
        self,
        assoc: client.ClientAssociation,
        item: OutgoingInstance,
        route: Route,
        conversions: Counter[tuple[str, str, str]],
    ) -> InstanceResult:
        uid = item.sop_instance_uid

        def failed(message: str, code: int | None = None) -> InstanceResult:
            return InstanceResult(uid, "failed", code, message)

        if route.syntax is None:
            return failed(route.why)
        note = ""
        encoded: bytes | None = None
        if route.convert:
            try:
                dataset = dcmread(item.path)
                transcode(dataset, route.syntax)
                encoded = client.encode_dataset(dataset, route.syntax)
            except TranscodeError as exc:
                return failed(f"not sent: {exc}")
            except Exception as exc:  # unreadable file: this instance's problem only
                return failed(f"not sent: cannot read {item.path.name}: {exc}")
            note = (
                f"converted from {syntax_name(item.transfer_syntax)} to "
                f"{syntax_name(route.syntax)}: {route.why}"
            )
        if not assoc.is_established:
            raise _Broken("the peer ended the association while sending")
        try:
            if encoded is None:
                response = assoc.store_file(item.path)
            else:
                response = assoc.store(
                    encoded,
                    sop_class_uid=item.sop_class_uid,
                    sop_instance_uid=uid,
                    transfer_syntax=route.syntax,
                )
        except (client.UnsendableFile, client.ContextNotAccepted) as exc:
            return failed(f"not sent: {exc}")
        except client.PeerTimeout as exc:
            why = ": the peer stopped reading it" if exc.writing else ""
            raise _Broken(
                f"no response to the C-STORE of {uid} within {self.target.dimse_timeout:g} s "
                f"(dimse_timeout){why}"
            ) from None
        except client.AssociationEnded as exc:
            raise _Broken(f"the association ended during the C-STORE of {uid}: {exc}") from None
        if route.convert:
            conversions[(item.transfer_syntax, route.syntax, route.why)] += 1
        code = response.status
        comment = response.error_comment.strip()
        text = describe_status(code) + (f": {comment}" if comment else "")
        if code == 0:
            return InstanceResult(uid, "sent", 0, note)
        if response.category == "Warning":
            return InstanceResult(uid, "warning", code, "; ".join(filter(None, [text, note])))
        return failed(text, code)

    # -- storage commitment --

    def _commit(
        self, endpoint: _Endpoint, items: Sequence[OutgoingInstance]
    ) -> list[CommitmentResult]:
        """Ask for storage commitment of ``items`` on an association of its own."""

        def all_failed(reason: str) -> list[CommitmentResult]:
            return [CommitmentResult(item.sop_instance_uid, False, reason) for item in items]

        inbox: Inbox = queue.Queue()
        contexts = [(STORAGE_COMMITMENT_PUSH, syntax) for syntax in FALLBACK_SYNTAXES]
        try:
            assoc = self._associate_for_commitment(
                endpoint, contexts, [(evt.EVT_N_EVENT_REPORT, _delivering_to(inbox))]
            )
        except _NoContextAccepted:
            return all_failed(_NO_COMMITMENT)
        except DispatchError as exc:
            return all_failed(f"storage commitment could not be requested: {exc}")
        try:
            return self._request_commitment(assoc, endpoint, items, inbox, all_failed)
        finally:
            if assoc.is_established:
                assoc.release()

    def _request_commitment(
        self,
        assoc: Any,
        endpoint: _Endpoint,
        items: Sequence[OutgoingInstance],
        inbox: Inbox,
        all_failed: Callable[[str], list[CommitmentResult]],
    ) -> list[CommitmentResult]:
        target = self.target
        transaction = generate_uid()
        request = Dataset()
        request.TransactionUID = transaction
        references = []
        for item in items:
            reference = Dataset()
            reference.ReferencedSOPClassUID = item.sop_class_uid
            reference.ReferencedSOPInstanceUID = item.sop_instance_uid
            references.append(reference)
        request.ReferencedSOPSequence = references
        port = int(self.context.extra.get("commitment_port") or 0)
        with contextlib.ExitStack() as stack:
            try:
                listener = stack.enter_context(
                    commitment_listener(port, endpoint.calling_ae, target.commitment_timeout + 30)
                )
            except OSError as exc:
                return all_failed(f"cannot listen for the commitment report on port {port}: {exc}")
            listener.expect(transaction, inbox)
            stack.callback(listener.forget, transaction)
            try:
                status, _ = assoc.send_n_action(
                    request, 1, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE
                )
            except RuntimeError:  # the peer ended the association just before
                return all_failed("the association ended before storage commitment was requested")
            if "Status" not in status:
                return all_failed(
                    f"no answer to the storage commitment request (N-ACTION) within "
                    f"{target.dimse_timeout:g} s"
                )
            code = int(status.Status)
            if dimse.status_category(code) not in ("Success", "Warning"):
                return all_failed(
                    f"the peer refused the storage commitment request: {describe_status(code)}"
                )
            wanted = {item.sop_instance_uid for item in items}
            answers = self._await_reports(inbox, transaction, wanted)
        silent = f"no answer within {target.commitment_timeout:g} s"
        unmentioned = "not mentioned in the peer's storage commitment report"
        return [
            answers.get(item.sop_instance_uid)
            or CommitmentResult(item.sop_instance_uid, False, unmentioned if answers else silent)
            for item in items
        ]

    def _await_reports(
        self, inbox: Inbox, transaction_uid: str, wanted: set[str]
    ) -> dict[str, CommitmentResult]:
        """Collect the reports for the transaction (from our association or the listener)
        until every instance has an answer or the commitment timeout is over."""
        deadline = time.monotonic() + self.target.commitment_timeout
        answers: dict[str, CommitmentResult] = {}
        while not wanted <= answers.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info = inbox.get(timeout=remaining)
            except queue.Empty:
                break
            if str(info.get("TransactionUID", "")) == transaction_uid:
                answers.update(parse_commitment_report(info))
            else:
                log.warning("%s: report for another transaction ignored", self.describe())
        return answers

    # -- associations --

    def _tls(self, endpoint: _Endpoint, results: Sequence[InstanceResult]) -> ssl.SSLContext | None:
        if not isinstance(self.target, DicomTlsTarget):
            return None
        try:
            return _tls_context(self.target)
        except (OSError, ssl.SSLError) as exc:
            raise TargetUnreachable(
                f"{self.describe()}: cannot load the TLS key, certificate or CA certificate: {exc}",
                results,
            ) from None

    def _associate(
        self,
        endpoint: _Endpoint,
        contexts: Sequence[tuple[str, str]],
        results: Sequence[InstanceResult] = (),
    ) -> client.ClientAssociation:
        """An established association proposing ``contexts`` (one transfer syntax each);
        raises TargetUnreachable (with ``results``), SendFailed or _NoContextAccepted."""
        target = self.target
        tls = self._tls(endpoint, results)
        try:
            return client.associate(
                endpoint.host,
                endpoint.port,
                calling_ae=endpoint.calling_ae,
                called_ae=endpoint.called_ae,
                contexts=[(sop_class, [syntax]) for sop_class, syntax in contexts],
                ssl_context=tls,
                connect_timeout=target.connect_timeout,
                acse_timeout=target.connect_timeout,
                dimse_timeout=target.dimse_timeout,
            )
        except ValueError as exc:  # an invalid AE title
            raise SendFailed(f"{self.describe()}: {exc}", results) from None
        except client.NoContextAccepted:
            raise _NoContextAccepted from None
        except client.DicomClientError as exc:
            raise TargetUnreachable(self._association_problem(exc, endpoint), results) from None

    def _association_problem(self, exc: client.DicomClientError, endpoint: _Endpoint) -> str:
        """Why the association failed, in words that say what to look at."""
        timeout = self.target.connect_timeout
        titles = f"calling AE {endpoint.calling_ae}, called AE {endpoint.called_ae}"
        if isinstance(exc, client.AssociationRejected):
            return self._rejection_text(exc.result, exc.source, exc.reason, endpoint)
        if isinstance(exc, client.ConnectFailed) and exc.stage == "connect":
            cause = exc.cause
            if isinstance(cause, socket.gaierror):
                return f"cannot resolve host {endpoint.host!r} ({cause.strerror})"
            if isinstance(cause, ConnectionRefusedError):
                return f"connection refused at {endpoint}: nothing listens there"
            if isinstance(cause, TimeoutError):
                return f"no answer from {endpoint} within {timeout:g} s (connect_timeout)"
            return f"cannot connect to {endpoint}: {cause.strerror or cause}"
        if isinstance(exc, client.ConnectFailed):
            return _tls_failure(exc.cause, endpoint, timeout)
        if isinstance(exc, client.PeerTimeout):
            return (
                f"{endpoint} accepts connections but did not answer the association request "
                f"within {timeout:g} s (connect_timeout): is it a DICOM node?"
            )
        if isinstance(exc, client.ConnectionClosed):
            tls = self._tls(endpoint, ())
            problem = _tls_problem(endpoint, tls, timeout) if tls is not None else None
            return problem or (
                f"{endpoint} closed the connection instead of answering the association "
                f"request ({titles})"
            )
        if isinstance(exc, client.PeerAborted):
            return (
                f"{endpoint} aborted the association request (A-ABORT source {exc.source}, "
                f"reason {exc.reason}; {titles})"
            )
        return f"{endpoint}: association failed: {exc}"

    def _rejection_text(self, result: int, source: int, reason: int, endpoint: _Endpoint) -> str:
        permanence = "" if result == 1 else " for now"
        why = _REJECT_REASONS.get(
            (source, reason), f"reason code {reason} from source {source}"
        ).format(calling=endpoint.calling_ae, called=endpoint.called_ae)
        return f"association rejected{permanence} by {endpoint.called_ae} at {endpoint}: {why}"

    def _associate_for_commitment(
        self, endpoint: _Endpoint, contexts: Sequence[tuple[str, str]], handlers: Sequence[Any]
    ) -> Any:
        """A pynetdicom association for the N-ACTION and the N-EVENT-REPORT, with the
        message queue workaround; raises TargetUnreachable, SendFailed or
        _NoContextAccepted."""
        target = self.target
        tls = self._tls(endpoint, ())
        try:
            ae = AE(ae_title=endpoint.calling_ae)
        except ValueError as exc:
            raise SendFailed(f"{self.describe()}: {exc}") from None
        ae.implementation_class_uid = MERCURY_IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = MERCURY_IMPLEMENTATION_VERSION_NAME
        ae.connection_timeout = target.connect_timeout
        ae.acse_timeout = target.connect_timeout
        ae.dimse_timeout = target.dimse_timeout
        # pynetdicom's idle timer counts only data received; every wait of ours has its
        # own deadline instead (see _own_the_message_queue and _await_reports).
        ae.network_timeout = None
        for sop_class, syntax in contexts:
            ae.add_requested_context(sop_class, [syntax])
        try:
            assoc = ae.associate(
                endpoint.host,
                endpoint.port,
                ae_title=endpoint.called_ae,
                tls_args=(tls, endpoint.host) if tls is not None else None,
                evt_handlers=list(handlers),
            )
        except (OSError, ValueError) as exc:
            raise TargetUnreachable(f"cannot connect to {endpoint}: {exc}") from None
        if assoc.is_established:
            _own_the_message_queue(assoc, target.dimse_timeout)
            return assoc
        primitive = assoc.acceptor.primitive
        rejection: Any = primitive if assoc.is_rejected else _unread_rejection(assoc)
        if rejection is not None:
            raise TargetUnreachable(
                self._rejection_text(
                    int(rejection.result),
                    int(rejection.result_source),
                    int(rejection.diagnostic),
                    endpoint,
                )
            )
        if primitive is not None and getattr(primitive, "result", None) == 0:
            raise _NoContextAccepted
        raise TargetUnreachable(
            f"{endpoint} did not accept an association (no answer, or the connection was closed)"
        )


def _tls_failure(cause: OSError, endpoint: _Endpoint, timeout: float) -> str:
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS handshake with {endpoint} failed: the peer's certificate is not trusted "
            f"({cause.verify_message}); check ca_cert"
        )
    if isinstance(cause, TimeoutError):
        return f"TLS handshake with {endpoint} failed: no answer within {timeout:g} s"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake with {endpoint} failed: {cause.reason or cause}"
    return f"TLS handshake with {endpoint} failed: {cause.strerror or cause}"


def _tls_problem(endpoint: _Endpoint, context: ssl.SSLContext, timeout: float) -> str | None:
    """What goes wrong in a TLS handshake with the peer, if anything: asked when a TLS peer
    closed the connection instead of answering the association request, which is what a
    TLS 1.3 server refusing our certificate can look like."""
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError:
        return None
    try:
        with context.wrap_socket(sock, server_hostname=endpoint.host) as tls_sock:
            # TLS 1.3 servers judge our certificate after the handshake: read their verdict.
            tls_sock.settimeout(min(timeout, 1.0))
            with contextlib.suppress(TimeoutError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                tls_sock.recv(1)
    except OSError as exc:  # ssl.SSLError included
        return _tls_failure(exc, endpoint, timeout)
    finally:
        sock.close()
    return None


def create(name: str, target: TargetBase, context: SenderContext) -> DicomSender:
    if not isinstance(target, (DicomTarget, DicomTlsTarget)):
        raise TypeError(f"target {name!r} is not a dicom or dicomtls target")
    return DicomSender(name, target, context)
