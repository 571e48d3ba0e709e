"""Why an association failed, in words that say what to do about it."""

from __future__ import annotations

import socket

from pydicom._uid_dict import UID_dictionary

from mercury.dicom.net import client
from mercury.send.report import Timeouts


def uid_name(uid: str) -> str:
    """'CT Image Storage (1.2.840.10008.5.1.4.1.1.2)', or the bare UID if unknown."""
    entry = UID_dictionary.get(uid)
    return f"{entry[0]} ({uid})" if entry else uid


_REJECT_SOURCES = {1: "the peer", 2: "the peer's ACSE layer", 3: "the peer's network layer"}
_REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given; the peer may only accept known callers: ask its admin to "
    "allow calling AE title '{calling}' from this host",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title '{calling}' not recognised: add it to the peer's known "
    "callers, or use --aet with a title the peer knows",
    (1, 7): "called AE title '{called}' not recognised: check --aec against the AE title "
    "the peer is configured with",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion: the peer is busy, retry later",
    (3, 2): "local limit exceeded: the peer has too many associations open, retry later",
}


def _rejection(rejected: client.AssociationRejected, called_ae: str, calling_ae: str) -> str:
    result = "permanently" if rejected.result == 1 else "for now (transient)"
    source = _REJECT_SOURCES.get(rejected.source, "the peer")
    reason = _REJECT_REASONS.get(
        (rejected.source, rejected.reason), f"reason code {rejected.reason}"
    ).format(called=called_ae, calling=calling_ae)
    return f"association rejected {result} by {source}: {reason}"


def _connect_problem(cause: OSError, host: str, port: int, timeouts: Timeouts) -> str:
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve host '{host}' ({cause.strerror}): check the host name"
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"connection refused by {host}:{port}: nothing listens there; check that the "
            "receiver is running and the port is right"
        )
    if isinstance(cause, TimeoutError):
        return (
            f"no answer from {host}:{port} within {timeouts.connect:g} s: check the address, "
            "the network and firewalls (or raise --connect-timeout)"
        )
    return f"cannot connect to {host}:{port}: {cause.strerror or cause}"


def association_failure(
    exc: client.DicomClientError,
    destination: tuple[str, int],
    called_ae: str,
    calling_ae: str,
    timeouts: Timeouts,
) -> str:
    """What went wrong when asking for the association, and what to check."""
    host, port = destination
    if isinstance(exc, client.AssociationRejected):
        return _rejection(exc, called_ae, calling_ae)
    if isinstance(exc, client.NoContextAccepted):
        refused = sorted({uid_name(context.abstract_syntax) for context in exc.contexts})
        return (
            "the peer accepted the association but none of its presentation contexts: it "
            "stores none of these SOP classes in these transfer syntaxes: " + ", ".join(refused)
        )
    if isinstance(exc, client.ConnectFailed):
        return _connect_problem(exc.cause, host, port, timeouts)
    if isinstance(exc, client.PeerTimeout):
        return (
            f"{host}:{port} accepts connections but did not answer the association request "
            f"within {timeouts.acse:g} s: is it a DICOM receiver? (or raise --acse-timeout)"
        )
    if isinstance(exc, client.ConnectionClosed):
        return (
            f"{host}:{port} closed the connection instead of answering the association "
            "request: the peer refused it without a reason; check that it accepts our AE "
            "title and address, and answers to the called AE title"
        )
    if isinstance(exc, client.PeerAborted):
        return (
            f"the peer aborted the association request (A-ABORT source {exc.source}, "
            f"reason {exc.reason})"
        )
    return f"{host}:{port} answered the association request with something unusable: {exc}"


def ended_while_sending(exc: client.AssociationEnded, timeouts: Timeouts) -> tuple[str, str]:
    """(the comment for the file being sent, the error for the whole send)."""
    if isinstance(exc, client.PeerTimeout) and exc.writing:
        return (
            f"not stored: the peer stopped reading it for {exc.seconds:g} s",
            "the association ended while sending: the peer stopped reading for "
            f"{exc.seconds:g} s (raise --network-timeout if the peer is slow)",
        )
    if isinstance(exc, client.PeerTimeout):
        return (
            f"no response within the DIMSE timeout ({timeouts.dimse:g} s)",
            f"the association ended while sending: no response within {timeouts.dimse:g} s "
            "(raise --dimse-timeout if the peer is slow)",
        )
    if isinstance(exc, client.PeerAborted):
        return (
            "not stored: the peer aborted the association",
            f"the association ended while sending: the peer aborted it (A-ABORT source "
            f"{exc.source}, reason {exc.reason})",
        )
    return f"not stored: {exc}", f"the association ended while sending: {exc}"
