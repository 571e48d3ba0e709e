"""The dispatcher's reads and writes of the index: a job's instances, the delivery proof
per instance, and the record of every attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mercury.dispatch.base import CommitmentResult, InstanceResult, Origin, OutgoingInstance
from mercury.dispatch.outcome import TargetAttempt
from mercury.store.delivery_models import DeliveryRow, JobAttemptRow
from mercury.store.models import InstanceRow, JobInstanceRow
from mercury.store.spool import Spool


def load_instances(
    session: Session, job_id: str, spool: Spool, details: dict[str, Any] | None = None
) -> tuple[list[OutgoingInstance], list[str], Origin]:
    """The job's instances that are still in the index (and the UIDs that are not), and how
    the first of them reached us. A job that sends a module's results names its files in
    its details (``files``, written by the processor into the spool, and ``origin``)."""
    files = (details or {}).get("files")
    if files:
        origin = Origin(
            **(details or {}).get("origin", {"calling_ae": "", "called_ae": "", "peer_host": ""})
        )
        return [_published(item, spool) for item in files], [], origin
    rows = session.execute(
        select(JobInstanceRow.sop_instance_uid, InstanceRow)
        .outerjoin(InstanceRow, InstanceRow.sop_instance_uid == JobInstanceRow.sop_instance_uid)
        .where(JobInstanceRow.job_id == job_id)
        .order_by(JobInstanceRow.sop_instance_uid)
    ).all()
    found: list[OutgoingInstance] = []
    missing: list[str] = []
    origin = Origin(calling_ae="", called_ae="", peer_host="")
    for uid, row in rows:
        if row is None:
            missing.append(uid)
            continue
        if not found:
            origin = Origin(row.calling_ae, row.called_ae, row.peer_host)
        found.append(
            OutgoingInstance(
                sop_instance_uid=row.sop_instance_uid,
                sop_class_uid=row.sop_class_uid,
                transfer_syntax=row.transfer_syntax,
                series_uid=row.series_uid,
                study_uid=row.study_uid,
                path=spool.absolute(row.path),
                size=row.size,
            )
        )
    return found, missing, origin


def _published(item: dict[str, Any], spool: Spool) -> OutgoingInstance:
    return OutgoingInstance(
        sop_instance_uid=str(item["sop_instance_uid"]),
        sop_class_uid=str(item["sop_class_uid"]),
        transfer_syntax=str(item["transfer_syntax"]),
        series_uid=str(item["series_uid"]),
        study_uid=str(item["study_uid"]),
        path=spool.absolute(str(item["path"])),
        size=int(item.get("size", 0)),
    )


def delivered_uids(session: Session, job_id: str, target: str) -> set[str]:
    """Instances this target already holds for this job (sent or sent with a warning)."""
    return set(
        session.scalars(
            select(DeliveryRow.sop_instance_uid).where(
                DeliveryRow.job_id == job_id,
                DeliveryRow.target == target,
                DeliveryRow.status.in_(("sent", "warning")),
            )
        )
    )


def write_deliveries(
    session: Session,
    job_id: str,
    target: str,
    attempt: int,
    results: Sequence[InstanceResult],
    commitments: Sequence[CommitmentResult],
    now: datetime,
) -> None:
    """Upsert one row per instance: the latest answer wins, so a retry overwrites a failure."""
    if not results and not commitments:
        return
    committed = {c.sop_instance_uid: c for c in commitments}
    rows: list[dict[str, Any]] = []
    for result in results:
        commitment = committed.pop(result.sop_instance_uid, None)
        rows.append(
            {
                "job_id": job_id,
                "target": target,
                "sop_instance_uid": result.sop_instance_uid,
                "status": result.status,
                "code": result.code,
                "message": result.message[:2000],
                "attempt": attempt,
                "sent_at": now,
                "commitment": _commitment_state(commitment),
                "commitment_reason": commitment.reason if commitment else None,
                "commitment_at": now if commitment else None,
            }
        )
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    if rows:
        statement = insert(DeliveryRow)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["job_id", "target", "sop_instance_uid"],
                set_={
                    name: statement.excluded[name]
                    for name in (
                        "status",
                        "code",
                        "message",
                        "attempt",
                        "sent_at",
                        "commitment",
                        "commitment_reason",
                        "commitment_at",
                    )
                },
            ),
            rows,
        )
    for uid, commitment in committed.items():  # answers for instances sent in earlier attempts
        row = session.get(DeliveryRow, (job_id, target, uid))
        if row is not None:
            row.commitment = _commitment_state(commitment)
            row.commitment_reason = commitment.reason
            row.commitment_at = now


def _commitment_state(commitment: CommitmentResult | None) -> str | None:
    if commitment is None:
        return None
    return "committed" if commitment.committed else "failed"


def write_attempt(
    session: Session,
    job_id: str,
    attempt: int,
    owner: str,
    started_at: datetime,
    ended_at: datetime,
    summary: TargetAttempt,
) -> None:
    session.add(
        JobAttemptRow(
            job_id=job_id,
            attempt=attempt,
            target=summary.target,
            owner=owner,
            started_at=started_at,
            ended_at=ended_at,
            outcome=summary.outcome,
            sent=summary.sent,
            warnings=summary.warnings,
            failed=summary.failed,
            error=summary.error,
        )
    )
