"""What the receiver does with each association and instance.

An instance is acknowledged only after its bytes are fsynced in the spool and its
index row is committed (ARCHITECTURE.md invariant 1); every refusal gets a precise
status on the wire, a log line and a journal event, and the receiver keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from mercury.config.models import ReceiverConfig
from mercury.dicom.file_meta import build_file_meta
from mercury.dicom.net import (
    MERCURY_IMPLEMENTATION_CLASS_UID,
    MERCURY_IMPLEMENTATION_VERSION_NAME,
    Association,
    AssociationRequest,
    Rejection,
    StoreRequest,
    StoreResult,
)
from mercury.dicom.tags import HeaderError, InstanceHeader, read_header
from mercury.dicom.uids import is_valid_uid
from mercury.receive import statuses
from mercury.receive.access import AccessPolicy
from mercury.store.index_writer import IndexWriter, ReceivedInstance
from mercury.store.journal import record
from mercury.store.models import AssociationRow, utcnow
from mercury.store.spool import Spool, SpoolFullError

log = logging.getLogger("mercury.receive")

# One identity for mercury on the wire and in the file meta it writes.
IMPLEMENTATION_CLASS_UID = MERCURY_IMPLEMENTATION_CLASS_UID
IMPLEMENTATION_VERSION = MERCURY_IMPLEMENTATION_VERSION_NAME


class RefusedError(Exception):
    """An instance the receiver will not store; carries the DICOM status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class _Spooled:
    header: InstanceHeader
    path: str
    size: int
    dirs: tuple[Path, ...]


class StoreHandler:
    """The receiver's :class:`mercury.dicom.net.ServiceHandler`."""

    def __init__(
        self,
        config: ReceiverConfig,
        spool: Spool,
        writer: IndexWriter,
        *,
        receiver_id: str,
    ) -> None:
        self.config = config
        self.spool = spool
        self.writer = writer
        self.receiver_id = receiver_id
        self.access = AccessPolicy(config)
        self.additional_tags: Mapping[str, str] = dict(config.additional_tags)
        self._opened: set[str] = set()

    # -- association lifecycle -------------------------------------------------------------

    def on_associate(self, request: AssociationRequest) -> Rejection | None:
        who = f"{request.calling_ae!r}@{request.peer_host}"
        if not self.access.called_ae_ok(request.called_ae):
            reason = (
                f"association from {who} refused: called AE title {request.called_ae!r} "
                f"is not one of {sorted(self.access.ae_titles)}"
            )
            self._journal_refusal(request, reason, "called_ae")
            return Rejection.called_ae_not_recognized()
        if not self.access.caller_ok(request.calling_ae, request.peer_host):
            reason = f"association from {who} refused: caller is not on receiver.allowed_callers"
            self._journal_refusal(request, reason, "calling_ae")
            return Rejection.calling_ae_not_recognized()
        return None

    def _journal_refusal(self, request: AssociationRequest, reason: str, cause: str) -> None:
        log.warning(reason)
        details = {
            "calling_ae": request.calling_ae,
            "called_ae": request.called_ae,
            "peer_host": request.peer_host,
            "cause": cause,
        }
        self.writer.run(
            lambda session: record(
                session,
                stage="receive",
                kind="association.rejected",
                severity="warning",
                message=reason,
                details=details,
            )
        )

    def _ensure_opened(self, association: Association) -> None:
        """Queue the association's row ahead of its first instance (the writer keeps order)."""
        if association.id in self._opened:
            return
        self._opened.add(association.id)
        request = association.request
        row = {
            "id": association.id,
            "receiver_id": self.receiver_id,
            "calling_ae": request.calling_ae,
            "called_ae": request.called_ae,
            "peer_host": request.peer_host,
            "peer_port": request.peer_port,
            "started_at": datetime.fromtimestamp(association.started_at, tz=UTC),
            "instances": 0,
            "bytes": 0,
            "failures": 0,
        }
        self.writer.run(lambda session: session.execute(insert(AssociationRow), [row]))

    async def on_echo(self, association: Association) -> None:
        self._ensure_opened(association)

    async def on_close(self, association: Association, how: str) -> None:
        self._ensure_opened(association)
        self._opened.discard(association.id)
        request = association.request

        def close(session: Session) -> None:
            session.execute(
                update(AssociationRow)
                .where(AssociationRow.id == association.id)
                .values(ended_at=utcnow(), close_reason=how)
            )
            row = session.scalars(
                select(AssociationRow).where(AssociationRow.id == association.id)
            ).one()
            record(
                session,
                stage="receive",
                kind="association.closed",
                severity="info" if how == "released" else "warning",
                message=(
                    f"association from {request.calling_ae!r}@{request.peer_host} {how}: "
                    f"{row.instances} instances, {row.bytes / 1e6:.1f} MB, {row.failures} refused"
                ),
                association_id=association.id,
                details={"instances": row.instances, "bytes": row.bytes, "how": how},
            )

        try:
            await asyncio.wrap_future(self.writer.run(close))
        except Exception:
            log.exception("could not record the end of association %s", association.id)

    def on_protocol_error(self, peer_host: str, peer_port: int, message: str) -> None:
        text = f"protocol error from {peer_host}:{peer_port}: {message}"
        log.warning(text)
        self.writer.run(
            lambda session: record(
                session,
                stage="receive",
                kind="protocol.error",
                severity="warning",
                message=text,
                details={"peer_host": peer_host, "peer_port": peer_port},
            )
        )

    # -- C-STORE ------------------------------------------------------------------------

    async def on_store(self, association: Association, request: StoreRequest) -> StoreResult:
        self._ensure_opened(association)
        loop = asyncio.get_running_loop()
        try:
            spooled = await loop.run_in_executor(None, self._spool, association, request)
        except RefusedError as refused:
            await self._refuse(association, request, refused)
            return StoreResult(refused.status, refused.reason[:64])
        header = spooled.header
        tags = dict(header.tags)
        tags["SenderAddress"] = association.request.peer_host
        tags["SenderAET"] = association.request.calling_ae
        tags["ReceiverAET"] = association.request.called_ae
        instance = ReceivedInstance(
            sop_instance_uid=header.sop_instance_uid,
            series_uid=header.series_instance_uid,
            study_uid=header.study_instance_uid,
            sop_class_uid=header.sop_class_uid or request.sop_class_uid,
            transfer_syntax=request.context.transfer_syntax,
            path=spooled.path,
            size=spooled.size,
            calling_ae=association.request.calling_ae,
            called_ae=association.request.called_ae,
            peer_host=association.request.peer_host,
            association_id=association.id,
            received_at=utcnow(),
            tags=tags,
            changed_dirs=spooled.dirs,
            expected_count=header.number_of_series_related_instances
            or header.images_in_acquisition,
            study_date=header.study_date,
        )
        try:
            await asyncio.wrap_future(self.writer.add_instance(instance))
        except Exception as exc:
            log.exception("index write failed for %s", header.sop_instance_uid)
            return StoreResult(statuses.OUT_OF_RESOURCES, f"index unavailable: {exc}"[:64])
        return StoreResult(statuses.SUCCESS)

    def _spool(self, association: Association, request: StoreRequest) -> _Spooled:
        """Parse the header, check it and write the file durably (runs in a worker thread)."""
        transfer_syntax = request.context.transfer_syntax
        try:
            header = read_header(request.data, transfer_syntax, self.additional_tags)
        except HeaderError as exc:
            raise RefusedError(
                statuses.CANNOT_UNDERSTAND, f"dataset does not parse: {exc}"
            ) from exc
        uids = {
            "StudyInstanceUID": header.study_instance_uid,
            "SeriesInstanceUID": header.series_instance_uid,
            "SOPInstanceUID": header.sop_instance_uid,
        }
        for name, value in uids.items():
            if not value:
                raise RefusedError(statuses.MISSING_UID, f"{name} missing")
            if not is_valid_uid(value):
                raise RefusedError(statuses.INVALID_UID, f"invalid {name} {value[:40]!r}")
        if header.sop_instance_uid != request.sop_instance_uid:
            raise RefusedError(
                statuses.UID_MISMATCH,
                f"SOPInstanceUID {header.sop_instance_uid} differs from command's "
                f"{request.sop_instance_uid}",
            )
        meta = build_file_meta(
            sop_class_uid=header.sop_class_uid or request.sop_class_uid,
            sop_instance_uid=header.sop_instance_uid,
            transfer_syntax_uid=transfer_syntax,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION,
            source_ae_title=association.request.calling_ae,
        )
        size = len(meta) + len(request.data)
        if not self.spool.has_room(size):
            raise RefusedError(
                statuses.OUT_OF_RESOURCES,
                f"spool below its free-space reserve ({self.spool.reserve_bytes // 2**20} MiB)",
            )
        path = Spool.relative_path(
            header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
        )
        try:
            size, dirs = self.spool.write(path, [meta, request.data])
        except SpoolFullError as exc:
            raise RefusedError(statuses.OUT_OF_RESOURCES, "spool disk full") from exc
        except OSError as exc:
            raise RefusedError(statuses.OUT_OF_RESOURCES, f"spool write failed: {exc}") from exc
        return _Spooled(header, path, size, tuple(dirs))

    async def _refuse(
        self, association: Association, request: StoreRequest, refused: RefusedError
    ) -> None:
        peer = association.request
        message = (
            f"refused instance {request.sop_instance_uid[:64]!r} from {peer.calling_ae!r}@"
            f"{peer.peer_host} with status 0x{refused.status:04X}: {refused.reason}"
        )
        log.warning(message)
        details: dict[str, Any] = {
            "status": refused.status,
            "reason": refused.reason,
            "sop_class_uid": request.sop_class_uid,
            "transfer_syntax": request.context.transfer_syntax,
            "calling_ae": peer.calling_ae,
            "peer_host": peer.peer_host,
        }

        def journal(session: Session) -> None:
            session.execute(
                update(AssociationRow)
                .where(AssociationRow.id == association.id)
                .values(failures=AssociationRow.failures + 1)
            )
            record(
                session,
                stage="receive",
                kind="instance.rejected",
                severity="error",
                message=message,
                sop_instance_uid=request.sop_instance_uid[:64] or None,
                association_id=association.id,
                details=details,
            )

        try:
            await asyncio.wrap_future(self.writer.run(journal))
        except Exception:
            log.exception("could not journal a refused instance")
