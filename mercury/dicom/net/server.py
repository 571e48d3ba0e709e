"""The listening side: accepts connections and owns their lifetimes for a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from .association import AssociationProtocol, ConnectionSettings
from .model import Association, ServiceHandler
from .negotiation import (
    MERCURY_IMPLEMENTATION_CLASS_UID,
    MERCURY_IMPLEMENTATION_VERSION_NAME,
    AcceptorPolicy,
)

logger = logging.getLogger(__name__)


class DicomServer:
    """A C-STORE / C-ECHO service class provider on one port.

    ``transfer_syntaxes`` is the set we can store; within it, the *caller's* preference order
    decides, so instances are kept in the encoding the sender holds them in.
    """

    def __init__(
        self,
        handler: ServiceHandler,
        *,
        accept_abstract_syntax: Callable[[str], bool],
        transfer_syntaxes: Sequence[str],
        max_pdu: int = 262144,
        max_associations: int = 64,
        acse_timeout: float = 30.0,
        network_timeout: float | None = 300.0,
        implementation_class_uid: str = MERCURY_IMPLEMENTATION_CLASS_UID,
        implementation_version_name: str = MERCURY_IMPLEMENTATION_VERSION_NAME,
    ) -> None:
        if max_pdu != 0 and max_pdu < 4096:
            raise ValueError("max_pdu must be 0 (unlimited) or at least 4096")
        if max_associations < 1:
            raise ValueError("max_associations must be at least 1")
        if not (
            0 < len(implementation_class_uid) <= 64
            and set(implementation_class_uid) <= set("0123456789.")
        ):
            raise ValueError(f"invalid implementation_class_uid {implementation_class_uid!r}")
        if not (implementation_version_name.isascii() and len(implementation_version_name) <= 16):
            raise ValueError("implementation_version_name is limited to 16 ASCII characters")
        self._handler = handler
        self._max_associations = max_associations
        self._settings = ConnectionSettings(
            policy=AcceptorPolicy(
                accept_abstract_syntax=accept_abstract_syntax,
                transfer_syntaxes=frozenset(transfer_syntaxes),
                max_pdu=max_pdu,
                implementation_class_uid=implementation_class_uid,
                implementation_version_name=implementation_version_name,
            ),
            acse_timeout=acse_timeout,
            network_timeout=network_timeout,
        )
        self._server: asyncio.Server | None = None
        self._connections: set[AssociationProtocol] = set()
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        """Bind and listen; port 0 picks a free port (see :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection, host, port, reuse_address=True, backlog=128
        )
        logger.info("listening on %s:%d", host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    def associations(self) -> list[Association]:
        """Associations currently open, oldest first."""
        found = [c.association for c in self._connections if c.is_open]
        return sorted((a for a in found if a is not None), key=lambda a: a.started_at)

    async def release(self, association: Association | str, *, timeout: float = 30.0) -> bool:
        """Release one association from our side; True if the peer answered A-RELEASE-RP.

        Pending responses go out first. If the peer does not complete the release within
        ``timeout`` the association is aborted.
        """
        connection = self._find(association)
        if connection is None:
            return False
        connection.request_release()
        try:
            await asyncio.wait_for(asyncio.shield(connection.ended), timeout)
        except TimeoutError:
            connection.abort()
            await asyncio.shield(connection.ended)
        return connection.close_reason == "released"

    def abort(self, association: Association | str) -> None:
        """Abort one association (A-ABORT, service-user source) at once."""
        connection = self._find(association)
        if connection is not None:
            connection.abort()

    async def close(self, *, abort_after: float = 5.0) -> None:
        """Stop listening, release every association, abort those not done in ``abort_after``.

        Returns once each association's ``on_close`` has run. A handler still stuck in
        ``on_store`` another ``abort_after`` seconds later is cancelled.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.request_release()
        pending = await self._wait(connections, abort_after)
        if pending:
            logger.warning("aborting %d association(s) that did not release", len(pending))
            for connection in pending:
                connection.abort()
            pending = await self._wait(pending, abort_after)
        if pending:
            logger.error("cancelling %d stuck association handler(s)", len(pending))
            for connection in pending:
                connection.cancel_worker()
            await self._wait(pending, abort_after)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), abort_after)
        logger.info("server closed")

    @staticmethod
    async def _wait(
        connections: list[AssociationProtocol], timeout: float
    ) -> list[AssociationProtocol]:
        futures = [c.done for c in connections if not c.done.done()]
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        return [c for c in connections if not c.done.done()]

    def _find(self, association: Association | str) -> AssociationProtocol | None:
        wanted = association if isinstance(association, str) else association.id
        for connection in self._connections:
            if connection.association is not None and connection.association.id == wanted:
                return connection
        return None

    def _new_connection(self) -> AssociationProtocol:
        connection = AssociationProtocol(
            self._handler,
            self._settings,
            admit=self._admit,
            on_finished=self._connections.discard,
        )
        self._connections.add(connection)
        return connection

    def _admit(self) -> bool:
        if self._closing:
            return False
        return sum(1 for c in self._connections if c.is_open) < self._max_associations
