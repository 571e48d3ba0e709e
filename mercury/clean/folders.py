"""The folders a processing job leaves: its run folders (``<work>/<job id>/``: inputs,
outputs, logs of every attempt) and its published outputs (``results/<job id>/``, sent by
the dispatch jobs made from them). They go when nothing needs them any more: the job is
finished, every dispatch job sending its results is finished, and every series it worked
on is cleaned."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from mercury.clean.facts import chunks, job_series
from mercury.clean.files import remove_tree
from mercury.clean.outcome import FINISHED_JOB_STATES, JobFact
from mercury.clean.record import CLEANED, CLEANING, journal
from mercury.store.models import JobRow, SeriesRow

RESULTS = "results"  # the processor's folder of published outputs (mercury.process.outputs)
JOB_ID = re.compile(r"[0-9a-f]{32}")


def results_owners(details: dict[str, Any]) -> set[str]:
    """The jobs whose results a dispatch job sends (from its ``source_job`` and the
    ``results/<job id>/`` paths of its ``files``)."""
    owners: set[str] = set()
    source = details.get("source_job")
    if isinstance(source, str) and JOB_ID.fullmatch(source):
        owners.add(source)
    for item in details.get("files") or []:
        path = str(item.get("path", "")) if isinstance(item, dict) else ""
        parts = path.split("/")
        if len(parts) >= 3 and parts[0] == RESULTS and JOB_ID.fullmatch(parts[1]):
            owners.add(parts[1])
    return owners


@dataclass
class FolderRemoval:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """``<job id>: <why>`` for folders that stay."""
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class JobFolders:
    def __init__(self, spool_root: Path, work_root: Path) -> None:
        self.spool_root = spool_root
        self.work_root = work_root
        self.results_root = spool_root / RESULTS

    def of(self, job_id: str) -> list[Path]:
        """The job's folders that exist."""
        folders = [self.work_root / job_id, self.results_root / job_id]
        return [folder for folder in folders if folder.is_dir() and not folder.is_symlink()]

    def name(self, folder: Path) -> str:
        try:
            return str(folder.relative_to(self.spool_root))
        except ValueError:
            return str(folder)

    def blocker(self, session: Session, job_id: str, cleaning: Iterable[str] = ()) -> str | None:
        """Why the job's folders must stay, or None when nothing needs them: the job is
        finished, every dispatch job sending its results is finished, and every series it
        worked on is cleaned (or is one of ``cleaning``)."""
        job = session.execute(
            select(JobRow.state, JobRow.series_uid, JobRow.study_uid).where(JobRow.id == job_id)
        ).one_or_none()
        if job is None:
            return "not a job in the index"
        if job.state not in FINISHED_JOB_STATES:
            return f"the job is {job.state}"
        for other, state, details in session.execute(
            select(JobRow.id, JobRow.state, JobRow.details).where(
                JobRow.study_uid == job.study_uid, JobRow.kind == "dispatch"
            )
        ):
            if state not in FINISHED_JOB_STATES and job_id in results_owners(details or {}):
                return f"dispatch job {other[:8]} ({state}) still sends its results"
        covered = (
            {job.series_uid} if job.series_uid else job_series(session, [job_id]).get(job_id, set())
        )
        others = sorted(covered - set(cleaning))
        if others:
            states = dict(
                session.execute(
                    select(SeriesRow.series_uid, SeriesRow.state).where(
                        SeriesRow.series_uid.in_(others)
                    )
                ).all()
            )
            waiting = [uid for uid in others if states.get(uid, CLEANED) not in (CLEANING, CLEANED)]
            if waiting:
                return f"series {waiting[0]} is not cleaned yet"
        return None

    def remove_for_series(
        self, sessions: sessionmaker[Session], series_uid: str, jobs: Sequence[JobFact]
    ) -> FolderRemoval:
        """Remove the folders of a series' jobs (its processing jobs, and those whose
        results its dispatch jobs sent) that nothing else needs."""
        owners = {job.id for job in jobs if job.kind == "process"}
        dispatch = [job.id for job in jobs if job.kind == "dispatch"]
        with sessions() as session:
            for part in chunks(dispatch):
                for details in session.scalars(select(JobRow.details).where(JobRow.id.in_(part))):
                    owners |= results_owners(details or {})
            owners = {job_id for job_id in owners if self.of(job_id)}
            blockers = {job_id: self.blocker(session, job_id, {series_uid}) for job_id in owners}
        result = FolderRemoval()
        for job_id in sorted(owners):
            blocker = blockers[job_id]
            if blocker is not None:
                result.kept.append(f"{job_id}: {blocker}")
                continue
            self._remove(job_id, result)
        return result

    def _remove(self, job_id: str, result: FolderRemoval) -> None:
        for folder in self.of(job_id):
            size, problems = remove_tree(folder)
            result.bytes += size
            result.errors.extend(problems)
            result.removed.append(self.name(folder))

    def sweep(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> list[str]:
        """Remove the folders earlier cleans had to keep (a dispatch job still sent from
        them, or another series of a study job was not cleaned yet) once nothing needs them."""
        ids: set[str] = set()
        for root in (self.work_root, self.results_root):
            try:
                entries = list(root.iterdir())
            except OSError:
                continue
            ids.update(
                entry.name
                for entry in entries
                if JOB_ID.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()
            )
        result = FolderRemoval()
        for part in chunks(sorted(ids)):
            with sessions() as session:
                # Cheap filter first: finished jobs whose own series (if any) is cleaned.
                candidates = session.scalars(
                    select(JobRow.id)
                    .outerjoin(SeriesRow, SeriesRow.series_uid == JobRow.series_uid)
                    .where(
                        JobRow.id.in_(part),
                        JobRow.state.in_(FINISHED_JOB_STATES),
                        or_(JobRow.series_uid.is_(None), SeriesRow.state == CLEANED),
                    )
                ).all()
                free = [job_id for job_id in candidates if self.blocker(session, job_id) is None]
            for job_id in free:
                self._remove(job_id, result)
        if result.removed:
            with sessions.begin() as session:
                journal(
                    session,
                    clock(),
                    kind="clean.folders_removed",
                    message=f"Removed {len(result.removed)} job folder(s) nothing needs any more",
                    details={"folders": result.removed[:200], "errors": result.errors[:50]},
                )
        return result.removed
