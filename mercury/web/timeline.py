"""A series' way through mercury, stage by stage, from the index and its journal.

received   the first image arrived (seconds: until the last image arrived)
complete   the router found the series complete (seconds: after its last image; the quiet
           period or the association end it waited for)
routed     the rules' decision and its jobs were committed (seconds: after completion; the
           router writes both in one transaction, so this is the scan's own time)
processed  its processing jobs all finished (seconds: after routing)
delivered  its dispatch jobs all finished, results of processing included (seconds: after
           processing, or after routing when nothing was processed)

A stage is ``done``, ``pending`` (not reached yet), ``failed`` (a job of it failed or was
cancelled) or ``skipped`` (no job of that kind, or the series was discarded).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mercury.store.models import DecisionRow, EventRow, JobRow, SeriesRow
from mercury.web import rows, schemas
from mercury.web.timeutil import aware

TERMINAL = ("succeeded", "failed", "cancelled")


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds(), 3)


def _jobs_stage(
    stage: str, jobs: Sequence[JobRow], previous: datetime | None, discarded: bool
) -> schemas.StageTime:
    name: schemas.StageName = "processed" if stage == "process" else "delivered"
    if discarded or not jobs:
        return schemas.StageTime(stage=name, at=None, seconds=None, state="skipped")
    if any(job.state not in TERMINAL for job in jobs):
        return schemas.StageTime(stage=name, at=None, seconds=None, state="pending")
    at = max(aware(job.updated_at) for job in jobs)
    state = "done" if all(job.state == "succeeded" for job in jobs) else "failed"
    return schemas.StageTime(stage=name, at=at, seconds=_seconds(at, previous), state=state)


def series_timeline(
    series: SeriesRow,
    decisions: Sequence[DecisionRow],
    jobs: Sequence[JobRow],
    events: Sequence[EventRow],
) -> schemas.Timeline:
    first = aware(series.first_received_at)
    last = aware(series.last_received_at)
    stages = [
        schemas.StageTime(stage="received", at=first, seconds=_seconds(last, first), state="done")
    ]
    completed = aware(series.completed_at) if series.completed_at else None
    complete_done = completed is not None and completed >= last and series.state != "receiving"
    stages.append(
        schemas.StageTime(
            stage="complete",
            at=completed if complete_done else None,
            seconds=_seconds(completed, last) if complete_done else None,
            state="done" if complete_done else "pending",
        )
    )
    own = [d for d in decisions if d.series_uid == series.series_uid]
    routed = aware(own[-1].decided_at) if own and complete_done else None
    stages.append(
        schemas.StageTime(
            stage="routed",
            at=routed,
            seconds=_seconds(routed, completed) if routed else None,
            state="done" if routed else "pending",
        )
    )
    discarded = series.state == "discarded"
    if routed is None:
        stages.append(schemas.StageTime(stage="processed", at=None, seconds=None, state="pending"))
        stages.append(schemas.StageTime(stage="delivered", at=None, seconds=None, state="pending"))
    else:
        processed = _jobs_stage(
            "process", [j for j in jobs if j.kind == "process"], routed, discarded
        )
        stages.append(processed)
        before = processed.at if processed.at is not None else routed
        delivered = _jobs_stage(
            "dispatch", [j for j in jobs if j.kind == "dispatch"], before, discarded
        )
        if delivered.at is not None and delivered.at < before:
            delivered.seconds = _seconds(delivered.at, routed)  # originals sent while processing
        stages.append(delivered)
    reached = [stage.at for stage in stages if stage.at is not None]
    return schemas.Timeline(
        stages=stages,
        total_seconds=_seconds(max(reached), first) if reached else None,
        events=[rows.event(row) for row in events],
    )
