"""Index rows as API answers, and the small queries several endpoints share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mercury.store.delivery_models import DeliveryRow, TargetStateRow
from mercury.store.models import DecisionRow, EventRow, JobRow, SeriesRow, StudyRow
from mercury.web import schemas


def series_summary(row: SeriesRow, study: StudyRow | None) -> schemas.SeriesSummary:
    return schemas.SeriesSummary(
        series_uid=row.series_uid,
        study_uid=row.study_uid,
        modality=row.modality,
        series_description=row.series_description,
        series_number=row.series_number,
        instance_count=row.instance_count,
        duplicate_count=row.duplicate_count,
        bytes=row.bytes,
        first_received_at=row.first_received_at,
        last_received_at=row.last_received_at,
        state=row.state,
        completed_at=row.completed_at,
        completion_reason=row.completion_reason,
        patient_id=study.patient_id if study else None,
        patient_name=study.patient_name if study else None,
        accession_number=study.accession_number if study else None,
        study_date=study.study_date if study else None,
    )


def study_fields(row: StudyRow) -> dict[str, Any]:
    return {
        "study_uid": row.study_uid,
        "patient_id": row.patient_id,
        "patient_name": row.patient_name,
        "accession_number": row.accession_number,
        "study_date": row.study_date,
        "study_description": row.study_description,
        "series_count": row.series_count,
        "instance_count": row.instance_count,
        "first_received_at": row.first_received_at,
        "last_received_at": row.last_received_at,
        "state": row.state,
        "completed_at": row.completed_at,
        "completion_reason": row.completion_reason,
        "pending_rules": list(row.pending_rules or []),
    }


def decision(row: DecisionRow) -> schemas.Decision:
    details = dict(row.details or {})
    outcomes = details.get("rules")
    rules: list[schemas.RuleOutcome] = []
    if isinstance(outcomes, dict):
        for name, entry in outcomes.items():
            if not isinstance(entry, dict):
                continue
            rules.append(
                schemas.RuleOutcome(
                    rule=str(name),
                    fired=bool(entry.get("fired")),
                    tags_read=[str(t) for t in entry.get("tags_read") or []],
                    missing=[str(t) for t in entry.get("missing") or []],
                    error=entry.get("error"),
                    variant=entry.get("variant"),
                )
            )
    return schemas.Decision(
        id=row.id,
        decided_at=row.decided_at,
        scope=row.scope,
        series_uid=row.series_uid,
        study_uid=row.study_uid,
        round=row.round,
        reason=row.reason,
        triggered=list(row.triggered or []),
        discarded=row.discarded,
        jobs=list(row.jobs or []),
        rules=rules,
        details={k: v for k, v in details.items() if k != "rules"},
    )


def delivery_counts(
    session: Session, job_ids: Sequence[str]
) -> dict[str, dict[str, dict[str, int]]]:
    """Per job, per target: how many instances ended in each delivery status."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for start in range(0, len(job_ids), 500):
        chunk = list(job_ids[start : start + 500])
        for job_id, target, status, count in session.execute(
            select(DeliveryRow.job_id, DeliveryRow.target, DeliveryRow.status, func.count())
            .where(DeliveryRow.job_id.in_(chunk))
            .group_by(DeliveryRow.job_id, DeliveryRow.target, DeliveryRow.status)
        ):
            counts.setdefault(job_id, {}).setdefault(target, {})[status] = int(count)
    return counts


def job_fields(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "rule": row.rule,
        "scope": row.scope,
        "series_uid": row.series_uid,
        "study_uid": row.study_uid,
        "targets": [row.target] if row.target else list(row.targets or []),
        "modules": list(row.modules or []),
        "priority": row.priority,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_error": row.last_error,
        "cancel_requested": row.cancel_requested,
    }


def job_summaries(session: Session, jobs: Iterable[JobRow]) -> list[schemas.JobSummary]:
    rows = list(jobs)
    counts = delivery_counts(session, [row.id for row in rows])
    return [
        schemas.JobSummary(**job_fields(row), deliveries=counts.get(row.id, {})) for row in rows
    ]


def event(row: EventRow) -> schemas.Event:
    return schemas.Event(
        id=row.id,
        time=row.time,
        stage=row.stage,
        kind=row.kind,
        severity=row.severity,
        message=row.message,
        study_uid=row.study_uid,
        series_uid=row.series_uid,
        sop_instance_uid=row.sop_instance_uid,
        association_id=row.association_id,
        details=dict(row.details or {}),
    )


def target_info(name: str, kind: str, state: TargetStateRow | None) -> schemas.TargetInfo:
    return schemas.TargetInfo(
        name=name,
        type=kind,
        circuit=state.circuit if state else "closed",
        consecutive_failures=state.consecutive_failures if state else 0,
        held=bool(state and state.held),
        held_by=state.held_by if state else "",
        held_reason=state.held_reason if state else "",
        held_at=state.held_at if state else None,
        last_error=state.last_error if state else None,
        last_success_at=state.last_success_at if state else None,
        opened_at=state.opened_at if state else None,
        next_probe_at=state.next_probe_at if state else None,
    )


def jobs_of_series(session: Session, series: SeriesRow) -> list[JobRow]:
    """Jobs of the series, and study-level jobs of its study (they include its images)."""
    return list(
        session.scalars(
            select(JobRow)
            .where(
                or_(
                    JobRow.series_uid == series.series_uid,
                    (JobRow.scope == "study") & (JobRow.study_uid == series.study_uid),
                )
            )
            .order_by(JobRow.created_at, JobRow.id)
        )
    )


def decisions_of_series(session: Session, series: SeriesRow) -> list[DecisionRow]:
    return list(
        session.scalars(
            select(DecisionRow)
            .where(
                or_(
                    DecisionRow.series_uid == series.series_uid,
                    (DecisionRow.scope == "study") & (DecisionRow.study_uid == series.study_uid),
                )
            )
            .order_by(DecisionRow.decided_at, DecisionRow.id)
        )
    )
