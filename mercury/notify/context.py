"""What a notify job is about, read from the index: the tags of its series (or of its
study's first series) and mercure's ``details`` text for its event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mercury.notify.templates import Occasion
from mercury.store.models import JobRow, SeriesRow, StudyRow


def series_tags(session: Session, study_uid: str, series_uid: str | None) -> dict[str, str]:
    """The series' tags; for a study, its first series'; the study row's patient fields
    when no series is left."""
    series = session.get(SeriesRow, series_uid) if series_uid else None
    if series is None:
        series = session.scalars(
            select(SeriesRow)
            .where(SeriesRow.study_uid == study_uid)
            .order_by(SeriesRow.first_received_at)
            .limit(1)
        ).first()
    if series is not None:
        return {name: str(value) for name, value in (series.tags or {}).items()}
    study = session.get(StudyRow, study_uid)
    if study is None:
        return {}
    return {
        "PatientName": study.patient_name,
        "PatientID": study.patient_id,
        "AccessionNumber": study.accession_number,
    }


def details_text(session: Session, details: Mapping[str, Any]) -> str:
    """mercure's ``details``: for a completion, the module's notification text as
    ``<module>: <text>``; for an error, the reason the job failed; otherwise empty."""
    text = details.get("text")
    if not isinstance(text, str) or not text:
        return ""
    if details.get("event") != "completed":
        return text
    source = details.get("source_job")
    job = session.get(JobRow, source) if isinstance(source, str) else None
    if job is not None and job.modules:
        return f"{job.modules[-1]}: {text}"
    return text


def load_occasion(
    session: Session,
    *,
    job_id: str,
    rule: str,
    study_uid: str,
    series_uid: str | None,
    details: Mapping[str, Any],
) -> Occasion:
    """The notification's subject. ``task_id`` is the job it reports on (the processing
    or dispatch job), or the notify job itself for receptions and routing."""
    source = details.get("source_job")
    return Occasion(
        rule=rule,
        task_id=source if isinstance(source, str) and source else job_id,
        event=str(details.get("event") or "completed"),
        details=details_text(session, details),
        tags=series_tags(session, study_uid, series_uid),
    )
