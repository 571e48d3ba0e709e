"""`mercury jobs`: list jobs, show one with the reason of every attempt, resend failed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from mercury.cli.common import CONFIG_OPTION, console, load_or_exit, print_error

jobs_app = typer.Typer(
    help="Jobs of every stage: list them, see why one failed, send a failed one again.",
    no_args_is_help=True,
)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
KINDS = ("dispatch", "process", "notify")


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


def _job_dict(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "rule": job.rule,
        "targets": [job.target] if job.target else list(job.targets or []),
        "modules": list(job.modules or []),
        "series_uid": job.series_uid,
        "study_uid": job.study_uid,
        "priority": job.priority,
        "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at.isoformat() if job.next_attempt_at else None,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "last_error": job.last_error,
    }


@jobs_app.command("list")
def list_jobs(
    config: Path = CONFIG_OPTION,
    failed: bool = typer.Option(
        False, "--failed", help="Only failed jobs (same as --state failed)."
    ),
    state: str | None = typer.Option(
        None, "--state", help=f"Only jobs in this state: {', '.join(STATES)}."
    ),
    kind: str | None = typer.Option(
        None, "--kind", help=f"Only jobs of this kind: {', '.join(KINDS)}."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="Most recent jobs to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List jobs, newest first, with their state, attempts and last error."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.store.models import JobRow

    if failed:
        state = "failed"
    if state is not None and state not in STATES:
        print_error(f"unknown state {state!r}; choose from {', '.join(STATES)}")
        raise typer.Exit(2)
    if kind is not None and kind not in KINDS:
        print_error(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        raise typer.Exit(2)
    cfg = load_or_exit(config)
    query = select(JobRow).order_by(JobRow.updated_at.desc()).limit(limit)
    if state:
        query = query.where(JobRow.state == state)
    if kind:
        query = query.where(JobRow.kind == kind)
    with open_index(cfg) as engine, Session(engine) as session:
        jobs = [_job_dict(job) for job in session.scalars(query)]
    if as_json:
        typer.echo(json.dumps(jobs, indent=2))
        return
    if not jobs:
        console.print("No jobs" + (f" in state {state}" if state else "") + ".")
        return
    table = Table("Job", "Kind", "State", "Rule", "To", "Attempts", "Updated", "Last error")
    for job in jobs:
        style = {"failed": "red", "succeeded": "green", "running": "cyan"}.get(job["state"], "")
        table.add_row(
            job["id"][:8],
            job["kind"],
            Text(job["state"], style=style),
            Text(job["rule"]),
            Text(", ".join(job["targets"] or job["modules"])),
            str(job["attempts"]),
            job["updated_at"][:19].replace("T", " "),
            Text((job["last_error"] or "")[:80]),
        )
    console.print(table)


@jobs_app.command("show")
def show_job(
    job_id: str = typer.Argument(..., help="Job id, or its first 8 characters."),
    config: Path = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One job: its state, every attempt with its outcome and reason, and per-target
    delivery counts."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.store.delivery_models import DeliveryRow, JobAttemptRow
    from mercury.store.jobs import find_job

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session:
        job = find_job(session, job_id)
        if job is None:
            print_error(f"no job {job_id!r} (or the prefix is ambiguous); see `mercury jobs list`")
            raise typer.Exit(2)
        data = _job_dict(job)
        data["attempt_log"] = [
            {
                "attempt": a.attempt,
                "target": a.target,
                "outcome": a.outcome,
                "sent": a.sent,
                "warnings": a.warnings,
                "failed": a.failed,
                "error": a.error,
                "started_at": a.started_at.isoformat(),
                "ended_at": a.ended_at.isoformat(),
            }
            for a in session.scalars(
                select(JobAttemptRow)
                .where(JobAttemptRow.job_id == job.id)
                .order_by(JobAttemptRow.id)
            )
        ]
        deliveries: dict[str, dict[str, int]] = {}
        for target, status, count in session.execute(
            select(DeliveryRow.target, DeliveryRow.status, func.count())
            .where(DeliveryRow.job_id == job.id)
            .group_by(DeliveryRow.target, DeliveryRow.status)
        ):
            deliveries.setdefault(target, {})[status] = count
        data["deliveries"] = deliveries
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console.print(
        Text(
            f"Job {data['id']} ({data['kind']}, rule {data['rule']}): {data['state']}, "
            f"{data['attempts']} attempt(s)"
        )
    )
    if data["last_error"]:
        console.print(Text(f"Last error: {data['last_error']}"))
    for target, counts in deliveries.items():
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        console.print(Text(f"Delivered to {target}: {summary}"))
    if data["attempt_log"]:
        table = Table("#", "Target", "Outcome", "Sent", "Failed", "Started", "Reason")
        for a in data["attempt_log"]:
            table.add_row(
                str(a["attempt"]),
                Text(a["target"]),
                a["outcome"],
                str(a["sent"] + a["warnings"]),
                str(a["failed"]),
                a["started_at"][:19].replace("T", " "),
                Text(a["error"] or ""),
            )
        console.print(table)


@jobs_app.command("retry")
def retry_job(
    job_id: str = typer.Argument(..., help="Job id, or its first 8 characters."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Send a failed job again, from a fresh retry count. Targets that already received it
    are not sent to again."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index, operator_name
    from mercury.store.jobs import find_job, requeue
    from mercury.store.journal import record
    from mercury.store.models import utcnow

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session, session.begin():
        job = find_job(session, job_id)
        if job is None:
            print_error(f"no job {job_id!r} (or the prefix is ambiguous); see `mercury jobs list`")
            raise typer.Exit(2)
        try:
            requeue(session, job.id, now=utcnow(), by=operator_name())
        except ValueError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from exc
        record(
            session,
            stage=job.kind,
            kind="job.retried",
            message=f"Job {job.id[:8]} queued again by {operator_name()}",
            study_uid=job.study_uid,
            series_uid=job.series_uid,
            details={"job": job.id, "by": operator_name()},
        )
        full_id = job.id
    console.print(Text(f"Job {full_id} queued again; the dispatcher picks it up within seconds."))


@jobs_app.command("cancel")
def cancel_job(
    job_id: str = typer.Argument(..., help="Job id, or its first 8 characters."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Cancel a job: a queued one at once; a running one is stopped by its worker (the
    module is killed, or the send stops at the next instance) and recorded as cancelled."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index, operator_name
    from mercury.store.jobs import find_job, request_cancel
    from mercury.store.journal import record
    from mercury.store.models import utcnow

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session, session.begin():
        job = find_job(session, job_id)
        if job is None:
            print_error(f"no job {job_id!r} (or the prefix is ambiguous); see `mercury jobs list`")
            raise typer.Exit(2)
        try:
            state = request_cancel(session, job.id, now=utcnow(), by=operator_name())
        except ValueError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from exc
        record(
            session,
            stage=job.kind,
            kind="job.cancel_requested",
            severity="warning",
            message=f"Cancellation of job {job.id[:8]} requested by {operator_name()}",
            study_uid=job.study_uid,
            series_uid=job.series_uid,
            details={"job": job.id, "by": operator_name()},
        )
        full_id = job.id
    if state == "cancelled":
        console.print(Text(f"Job {full_id} cancelled."))
    else:
        console.print(Text(f"Job {full_id} is running; its worker stops it within seconds."))


@jobs_app.command("logs")
def job_logs(
    job_id: str = typer.Argument(..., help="Job id, or its first 8 characters."),
    config: Path = CONFIG_OPTION,
    attempt: int | None = typer.Option(
        None, "--attempt", min=1, help="Which attempt (default: the latest)."
    ),
) -> None:
    """Print the logs of a processing job's module runs (each chain step), with their
    outcome."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.store.jobs import find_job
    from mercury.store.process_models import ModuleRunRow

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session:
        job = find_job(session, job_id)
        if job is None:
            print_error(f"no job {job_id!r} (or the prefix is ambiguous); see `mercury jobs list`")
            raise typer.Exit(2)
        runs = list(
            session.scalars(
                select(ModuleRunRow)
                .where(ModuleRunRow.job_id == job.id)
                .order_by(ModuleRunRow.attempt, ModuleRunRow.step)
            )
        )
    if not runs:
        console.print(Text(f"Job {job.id} has no module runs (it is a {job.kind} job)."))
        return
    chosen = attempt or max(run.attempt for run in runs)
    for run in (r for r in runs if r.attempt == chosen):
        header = (
            f"== step {run.step + 1}: {run.module} ({run.runner}), attempt {run.attempt}: "
            f"{run.status}" + (f", {run.message}" if run.message else "")
        )
        console.print(Text(header, style="bold"))
        path = Path(run.log_path)
        if path.exists():
            typer.echo(path.read_text(encoding="utf-8", errors="replace"), nl=False)
        else:
            console.print(Text(f"(log file {path} is gone: removed by retention)"))
