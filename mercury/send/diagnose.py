"""Why an association failed, in words that say what to do about it."""

from __future__ import annotations

import socket
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pynetdicom.pdu_primitives import A_ASSOCIATE

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


def _rejection(primitive: Any, called_ae: str, calling_ae: str) -> str:
    result = "permanently" if primitive.result == 1 else "for now (transient)"
    source = _REJECT_SOURCES.get(primitive.result_source, "the peer")
    reason = _REJECT_REASONS.get(
        (primitive.result_source, primitive.diagnostic), f"reason code {primitive.diagnostic}"
    ).format(called=called_ae, calling=calling_ae)
    return f"association rejected {result} by {source}: {reason}"


def connection_problem(host: str, port: int, timeouts: Timeouts, waited: float) -> str:
    """Why the association failed without an answer, found by trying a plain TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeouts.connect):
            pass
    except socket.gaierror as exc:
        return f"cannot resolve host '{host}' ({exc.strerror}): check the host name"
    except ConnectionRefusedError:
        return (
            f"connection refused by {host}:{port}: nothing listens there; check that the "
            "receiver is running and the port is right"
        )
    except TimeoutError:
        return (
            f"no answer from {host}:{port} within {timeouts.connect:g} s: check the address, "
            "the network and firewalls (or raise --connect-timeout)"
        )
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    if waited < timeouts.acse:
        return (
            f"{host}:{port} closed the connection instead of answering the association "
            "request: the peer refused it without a reason; check that it accepts our AE "
            "title and address, and answers to the called AE title"
        )
    return (
        f"{host}:{port} accepts connections but did not answer the association request "
        f"within {timeouts.acse:g} s: is it a DICOM receiver? (or raise --acse-timeout)"
    )


def _unread_rejection(assoc: Any) -> Any | None:
    """An A-ASSOCIATE-RJ that pynetdicom received but did not act on.

    A peer that rejects and closes the connection at once (storescp --refuse does) can
    make pynetdicom 3.0 see the closed socket first and report a failed connection; the
    rejection, with its reason, is then still in the DUL's queue.
    """
    try:
        pending = list(assoc.dul.to_user_queue.queue)
    except AttributeError:  # pragma: no cover - pynetdicom internals changed
        return None
    for item in pending:
        if isinstance(item, A_ASSOCIATE) and item.result in (1, 2):
            return item
    return None


def association_failure(
    assoc: Any,
    destination: tuple[str, int],
    called_ae: str,
    calling_ae: str,
    timeouts: Timeouts,
    waited: float,
) -> str:
    primitive = assoc.acceptor.primitive
    if assoc.is_rejected and primitive is not None:
        return _rejection(primitive, called_ae, calling_ae)
    unread = _unread_rejection(assoc)
    if unread is not None:
        return _rejection(unread, called_ae, calling_ae)
    if primitive is not None and getattr(primitive, "result", None) == 0:
        refused = sorted({uid_name(str(cx.abstract_syntax)) for cx in assoc.rejected_contexts})
        return (
            "the peer accepted the association but none of its presentation contexts: it "
            "stores none of these SOP classes in these transfer syntaxes: " + ", ".join(refused)
        )
    if assoc.is_aborted and primitive is None:
        return connection_problem(*destination, timeouts, waited)
    return "the peer aborted the association request"
