"""The receiver service: mercury's asyncio DICOM server wired to the spool and the index."""

from __future__ import annotations

import logging
import socket

from sqlalchemy import update
from sqlalchemy.orm import Session

from mercury.dicom.net import DicomServer
from mercury.dicom.sop_classes import is_storage_sop_class, transfer_syntaxes
from mercury.receive.handler import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, StoreHandler
from mercury.runtime import Runtime
from mercury.store.journal import record
from mercury.store.models import AssociationRow, utcnow

log = logging.getLogger("mercury.receive")


class ReceiverService:
    """C-STORE / C-ECHO SCP on the configured port."""

    name = "receiver"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        config = runtime.config.receiver
        self.receiver_id = f"{socket.gethostname()}:{config.port}"
        self.handler = StoreHandler(
            config, runtime.spool, runtime.writer, receiver_id=self.receiver_id
        )
        self.server = DicomServer(
            self.handler,
            accept_abstract_syntax=is_storage_sop_class,
            transfer_syntaxes=transfer_syntaxes(config.accept_compressed, config.transfer_syntaxes),
            max_pdu=config.max_pdu,
            max_associations=config.max_associations,
            acse_timeout=config.acse_timeout,
            network_timeout=config.network_timeout,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION,
        )

    @property
    def port(self) -> int:
        return self.server.port

    def describe(self) -> str:
        config = self.runtime.config.receiver
        titles = ", ".join(config.ae_titles) or "any AE title"
        return f"DICOM receiver on {config.host}:{self.port} (AE {titles})"

    async def start(self) -> None:
        self._close_stale_associations()
        config = self.runtime.config.receiver
        await self.server.start(config.host, config.port)
        log.info("%s", self.describe())

    async def stop(self) -> None:
        await self.server.close()

    def _close_stale_associations(self) -> None:
        """Associations this receiver left open when it last died are over; say so."""
        removed = self.runtime.removed_temp_files
        receiver_id = self.receiver_id

        def close(session: Session) -> None:
            result = session.execute(
                update(AssociationRow)
                .where(AssociationRow.receiver_id == receiver_id)
                .where(AssociationRow.ended_at.is_(None))
                .values(ended_at=utcnow(), close_reason="receiver_restart")
            )
            stale = getattr(result, "rowcount", 0)
            record(
                session,
                stage="receive",
                kind="receiver.started",
                message=(
                    f"receiver {receiver_id} started; closed {stale} associations left open, "
                    f"removed {removed} unfinished temp files"
                ),
                details={"stale_associations": stale, "removed_temp_files": removed},
            )

        self.runtime.writer.run(close).result()
