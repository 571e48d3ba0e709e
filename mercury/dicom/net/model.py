"""The values exchanged between the network layer and mercury's receiver.

Everything here is immutable so a handler can keep it (queue it, log it) without the
network layer changing it underneath.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

CloseReason = Literal[
    "released",
    "aborted_by_peer",
    "aborted_locally",
    "connection_lost",
    "timeout",
    "protocol_error",
]


@dataclass(frozen=True)
class PresentationContext:
    """One accepted presentation context."""

    id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class AssociationRequest:
    """What the calling AE asked for, as given to ``on_associate``."""

    calling_ae: str
    called_ae: str
    peer_host: str
    peer_port: int
    peer_max_pdu: int  # 0 = unlimited
    implementation_class_uid: str
    implementation_version_name: str
    proposed: tuple[tuple[int, str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Association:
    """An accepted association; the same object is passed to every later callback."""

    id: str
    request: AssociationRequest
    contexts: Mapping[int, PresentationContext] = field(hash=False)  # read-only mapping
    started_at: float


@dataclass(frozen=True)
class Rejection:
    """Returned by ``on_associate`` to refuse; sent as A-ASSOCIATE-RJ (PS3.8 9.3.4).

    result: 1 permanent, 2 transient. source: 1 service-user, 2 service-provider (ACSE),
    3 service-provider (presentation).
    """

    result: int
    source: int
    reason: int

    PERMANENT = 1
    TRANSIENT = 2
    SOURCE_USER = 1
    SOURCE_ACSE = 2
    SOURCE_PRESENTATION = 3

    def __post_init__(self) -> None:
        if self.result not in (1, 2) or self.source not in (1, 2, 3):
            raise ValueError(f"invalid A-ASSOCIATE-RJ result/source: {self}")
        if not 0 <= self.reason <= 255:
            raise ValueError(f"invalid A-ASSOCIATE-RJ reason: {self.reason}")

    @classmethod
    def no_reason(cls, *, transient: bool = False) -> Rejection:
        return cls(2 if transient else 1, 1, 1)

    @classmethod
    def application_context_not_supported(cls) -> Rejection:
        return cls(1, 1, 2)

    @classmethod
    def calling_ae_not_recognized(cls) -> Rejection:
        return cls(1, 1, 3)

    @classmethod
    def called_ae_not_recognized(cls) -> Rejection:
        return cls(1, 1, 7)

    @classmethod
    def protocol_version_not_supported(cls) -> Rejection:
        return cls(1, 2, 2)

    @classmethod
    def congestion(cls) -> Rejection:
        return cls(2, 3, 1)

    @classmethod
    def local_limit_exceeded(cls) -> Rejection:
        return cls(2, 3, 2)


@dataclass(frozen=True)
class StoreRequest:
    """One received C-STORE; ``data`` is the data set exactly as sent, in the context's TS."""

    context: PresentationContext
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_ae: str | None
    move_originator_message_id: int | None
    data: bytes


@dataclass(frozen=True)
class StoreResult:
    """The C-STORE-RSP status; ``error_comment`` (max 64 chars) is sent only on non-success."""

    status: int
    error_comment: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.status <= 0xFFFF:
            raise ValueError(f"status out of range: {self.status:#x}")


class ServiceHandler(Protocol):
    """What mercury's receiver implements; every method is called on the server's loop."""

    def on_associate(self, request: AssociationRequest) -> Rejection | None:
        """Accept (None) or refuse; synchronous because it must be cheap."""
        ...

    async def on_store(self, association: Association, request: StoreRequest) -> StoreResult:
        """Persist one instance; the response is sent only after this returns."""
        ...

    async def on_echo(self, association: Association) -> None:
        """Informational; the echo is answered with success regardless."""
        ...

    async def on_close(self, association: Association, how: CloseReason) -> None:
        """The last callback for an association, after any in-flight ``on_store`` returned."""
        ...

    def on_protocol_error(self, peer_host: str, peer_port: int, message: str) -> None:
        """Malformed or unexpected input from a peer, also before any association exists."""
        ...
