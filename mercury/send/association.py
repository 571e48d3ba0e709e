"""Opening a storage SCU association with pynetdicom, and working around two of its traits.

Speed and a pynetdicom 3.0 race: without TCP_NODELAY every C-STORE waits for delayed
ACKs (about 50 ms per file on loopback instead of a few ms), but with it the peer's
response can arrive while pynetdicom's association reactor thread is waking up, and the
reactor then takes the response off the queue as if it were a request and drops it; the
sender waits out the DIMSE timeout. We set TCP_NODELAY and close the race instead: on our
SCU-only associations the reactor is never handed DIMSE messages (see
:func:`responses_only_for_the_sender`), so every response reaches the waiting sender.

Streaming: pynetdicom sends a file given by path without decoding it only while its
process-wide switch ``STORE_SEND_CHUNKED_DATASET`` is on (see :func:`streaming_files`).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

from pynetdicom import AE, _config

from mercury.send.contexts import Context
from mercury.send.report import Timeouts

_POLL_SECONDS = 0.05


def make_ae(calling_ae: str, contexts: Sequence[Context], timeouts: Timeouts) -> Any:
    """A pynetdicom AE requesting these presentation contexts, with our timeouts."""
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = timeouts.connect
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    for context in contexts:
        ae.add_requested_context(context.sop_class_uid, list(context.transfer_syntaxes))
    return ae


def responses_only_for_the_sender(assoc: Any) -> None:
    """Hand every DIMSE message to the waiting sender, and stop waiting if the peer leaves.

    pynetdicom's reactor thread polls the message queue without blocking, to serve
    requests from the peer; the sender waits on it blocking. A storage SCP never sends us
    requests, so every message is a response for the sender and the reactor's poll only
    races it. The sender's wait also ends as soon as the association is aborted or the
    connection drops, instead of lasting the whole DIMSE timeout.
    """
    dimse = assoc.dimse

    def get_msg(block: bool = False) -> tuple[Any, Any]:
        if not block:
            return None, None
        deadline = time.monotonic() + (dimse.dimse_timeout or float("inf"))
        while True:
            try:
                return cast(tuple[Any, Any], dimse.msg_queue.get(timeout=_POLL_SECONDS))
            except queue.Empty:
                if assoc.is_aborted or not assoc.dul.is_alive() or time.monotonic() > deadline:
                    return None, None

    dimse.get_msg = get_msg


def set_nodelay(assoc: Any) -> None:
    """Send each PDU at once (see the module docstring for why this is safe here)."""
    with contextlib.suppress(AttributeError, OSError):
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_streaming_lock = threading.Lock()
_streaming_users = 0
_streaming_previous = False


@contextlib.contextmanager
def streaming_files() -> Iterator[None]:
    """Have pynetdicom stream files given by path instead of decoding them.

    pynetdicom's switch for this is process-wide; it is on while any send runs and
    restored afterwards, so other pynetdicom users in the process are unaffected.
    """
    global _streaming_users, _streaming_previous  # noqa: PLW0603 - pynetdicom's switch is global
    with _streaming_lock:
        if _streaming_users == 0:
            _streaming_previous = _config.STORE_SEND_CHUNKED_DATASET
            _config.STORE_SEND_CHUNKED_DATASET = True
        _streaming_users += 1
    try:
        yield
    finally:
        with _streaming_lock:
            _streaming_users -= 1
            if _streaming_users == 0:
                _config.STORE_SEND_CHUNKED_DATASET = _streaming_previous
