"""The processor: claims processing jobs with a lease, runs their chain of modules through
each module's runner, and hands the results on to dispatch.

Guard-rails: a timeout per module; at most ``processing.workers`` runs at once and a
module's own ``max_parallel``; GPU admission (a module with ``gpus: N`` waits for N free
indices of ``processing.gpus`` and sees only those); cancel; after a crash the job is
found by its expired lease, what its run left behind is removed, and it runs again up to
``processing.max_attempts``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import sessionmaker

from mercury.config.models import MercuryConfig, Module
from mercury.config.rules import Rule
from mercury.notify.triggers import on_completion
from mercury.process.base import RunHandle, Runner, RunnerError, RunResult, RunSpec
from mercury.process.outputs import OutputError, publish
from mercury.process.result import apply_routing
from mercury.process.taskfile import build_task, study_info
from mercury.process.workspace import (
    InputFile,
    StepFolder,
    WorkspaceError,
    collect_output,
    hand_over,
    make_run_folder,
    retain_inputs,
    stage_inputs,
)
from mercury.store.jobs import (
    Claimer,
    JobSpec,
    cancel_requests,
    create_jobs,
    finish_job,
    in_window,
    renew_lease,
    retry_later,
)
from mercury.store.journal import record
from mercury.store.models import (
    DecisionRow,
    InstanceRow,
    JobInstanceRow,
    JobRow,
    SeriesRow,
    StudyRow,
    utcnow,
)
from mercury.store.process_models import ModuleRunRow
from mercury.store.spool import Spool

log = logging.getLogger("mercury.process")

Clock = Callable[[], datetime]

# A run the runner could not start (engine unreachable) is tried again after this long.
RETRY_DELAY = timedelta(seconds=30)


@dataclass
class _Active:
    """A claimed job as its worker sees it."""

    row: JobRow
    modules: list[str]
    gpus: list[str]
    cancel: threading.Event = field(default_factory=threading.Event)
    handle: RunHandle | None = None


class _Stop(Exception):
    """The job ends here; ``state`` and ``reason`` say how."""

    def __init__(self, state: str, reason: str, *, retry: bool = False) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason
        self.retry = retry


def default_runners(config: MercuryConfig, work_root: os.PathLike[str] | str) -> dict[str, Runner]:
    from pathlib import Path

    from mercury.process.runners.docker import DockerRunner
    from mercury.process.runners.local import LocalRunner

    return {"local": LocalRunner(Path(work_root)), "docker": DockerRunner(config.processing)}


class Processor:
    """One process's worth of module runs; ``tick()`` is called on a timer."""

    def __init__(
        self,
        engine: Engine,
        config: MercuryConfig,
        spool: Spool,
        *,
        owner: str | None = None,
        clock: Clock = utcnow,
        runners: Mapping[str, Runner] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.processing
        self.spool = spool
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:process"
        self.sessions = sessionmaker(engine)
        self.work_root = self.settings.work_folder or spool.root / "runs"
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.runners = dict(runners or default_runners(config, self.work_root))
        self.lease = timedelta(seconds=self.settings.lease)
        self.claimer = Claimer("process", self.owner, self.lease)
        self.pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="mercury-run")
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._stopping = threading.Event()
        self._renewed_at = time.monotonic()
        self.wakeup: Callable[[], None] | None = None
        """Called from a worker thread when a job ends (the service wakes its timer)."""

    def describe(self) -> str:
        count = len(self.config.modules)
        gpus = f", GPUs {', '.join(self.settings.gpus)}" if self.settings.gpus else ""
        return (
            f"processor for {count} module{'s' if count != 1 else ''} "
            f"({self.settings.workers} at once{gpus})"
        )

    # -- the timer ------------------------------------------------------------------------

    def tick(self) -> int:
        if self._stopping.is_set():
            return 0
        now = self.clock()
        self._renew_leases(now)
        self._watch_cancellations()
        return self._claim(now)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._active)

    def close(self, grace: float = 30.0) -> None:
        """Stop claiming; running modules are stopped and their jobs given back."""
        self._stopping.set()
        with self._lock:
            active = list(self._active.values())
        for job in active:
            job.cancel.set()
            if job.handle is not None:
                job.handle.cancel()
        deadline = time.monotonic() + grace
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _renew_leases(self, now: datetime) -> None:
        if time.monotonic() - self._renewed_at < self.lease.total_seconds() / 3:
            return
        self._renewed_at = time.monotonic()
        with self._lock:
            jobs = list(self._active.values())
        for job in jobs:
            with self.sessions.begin() as session:
                if not renew_lease(session, job.row.id, self.owner, now=now, lease=self.lease):
                    log.warning("lost the lease of job %s; stopping its module", job.row.id)
                    self._stop_run(job)

    def _watch_cancellations(self) -> None:
        with self._lock:
            if not self._active:
                return
        with self.sessions() as session:
            wanted = cancel_requests(session, self.owner, "process")
        for job_id in wanted:
            with self._lock:
                job = self._active.get(job_id)
            if job is not None and not job.cancel.is_set():
                self._stop_run(job)

    @staticmethod
    def _stop_run(job: _Active) -> None:
        job.cancel.set()
        if job.handle is not None:
            job.handle.cancel()

    # -- admission and claiming -----------------------------------------------------------

    def _free_gpus(self) -> list[str]:
        with self._lock:
            taken = {gpu for job in self._active.values() for gpu in job.gpus}
        return [gpu for gpu in self.settings.gpus if gpu not in taken]

    def _gpus_needed(self, modules: list[str]) -> int:
        return max((self._module(name).gpus for name in modules if self._has(name)), default=0)

    def _has(self, name: str) -> bool:
        return name in self.config.modules

    def _module(self, name: str) -> Module:
        return self.config.modules[name]

    def _admit(self, row: JobRow) -> bool:
        modules = list(row.modules or [])
        with self._lock:
            running: dict[str, int] = {}
            for job in self._active.values():
                for name in set(job.modules):
                    running[name] = running.get(name, 0) + 1
        for name in set(modules):
            if not self._has(name):
                continue  # admitted, and failed with a clear reason
            limit = self._module(name).max_parallel
            if limit is not None and running.get(name, 0) >= limit:
                return False
        return self._gpus_needed(modules) <= len(self._free_gpus())

    def _claim(self, now: datetime) -> int:
        started = 0
        offpeak = in_window(
            now.astimezone(), self.config.timings.offpeak_start, self.config.timings.offpeak_end
        )
        while True:
            with self._lock:
                if len(self._active) >= self.settings.workers:
                    break
            with self.sessions.begin() as session:
                claimed = self.claimer.claim(
                    session, now=now, offpeak_open=offpeak, limit=1, admit=self._admit
                )
                if not claimed:
                    break
                row = claimed[0]
                session.expunge(row)
                modules = list(row.modules or [])
                gpus = self._free_gpus()[: self._gpus_needed(modules)]
                job = _Active(row=row, modules=modules, gpus=gpus)
                record(
                    session,
                    stage="process",
                    kind="job.claimed",
                    message=f"Processing job {row.id[:8]} attempt {row.attempts}: "
                    f"{' -> '.join(modules)}" + (f" on GPU {', '.join(gpus)}" if gpus else ""),
                    study_uid=row.study_uid,
                    series_uid=row.series_uid,
                    details={"job": row.id, "attempt": row.attempts, "gpus": gpus},
                )
            with self._lock:
                self._active[row.id] = job
            self.pool.submit(self._work, job)
            started += 1
        return started

    # -- one job --------------------------------------------------------------------------

    def _work(self, job: _Active) -> None:
        try:
            self._run_job(job)
        except _Stop as stop:
            self._end(job, stop)
        except Exception as exc:
            log.exception("processing job %s failed unexpectedly", job.row.id)
            self._end(job, _Stop("failed", f"internal error: {exc!r}", retry=True))
        finally:
            with self._lock:
                self._active.pop(job.row.id, None)
            if self.wakeup is not None:
                self.wakeup()  # a worker is free: claim the next job now, not at the next tick

    def _run_job(self, job: _Active) -> None:
        row = job.row
        if row.cancel_requested:
            raise _Stop(
                "cancelled", f"cancelled by {row.details.get('cancelled_by', 'an operator')}"
            )
        if row.attempts > self.settings.max_attempts:
            raise _Stop(
                "failed",
                f"gave up after {row.attempts - 1} interrupted attempts "
                f"(processing.max_attempts is {self.settings.max_attempts})",
            )
        if row.attempts > 1:  # an earlier attempt was interrupted: it may still be running
            self._remove_orphans(row, job.modules)
        missing = [name for name in job.modules if not self._has(name)]
        if missing:
            raise _Stop("failed", f"module {missing[0]!r} is not in the configuration")
        rule = self.config.rules.get(row.rule)
        if rule is None:
            raise _Stop("failed", f"rule {row.rule!r} is no longer in the configuration")
        inputs, tags, study, triggered, origin = self._inputs(row, rule)
        if not inputs:
            raise _Stop("failed", "none of the job's images is stored any more")

        folder = make_run_folder(self.work_root, row.id, row.attempts)
        steps_settings = list((row.settings or {}).get("steps") or [])
        previous: StepFolder | None = None
        for index, name in enumerate(job.modules):
            module = self._module(name)
            step = folder.step(index)
            task = build_task(
                job_id=row.id,
                rule_name=row.rule,
                rule=rule,
                triggered_rules=triggered,
                uid=row.series_uid if row.scope == "series" and row.series_uid else row.study_uid,
                uid_type="series" if row.scope == "series" else "study",
                tags=tags,
                module_name=name,
                module=module,
                step=index,
                rule_settings=steps_settings[index] if index < len(steps_settings) else None,
                study=study,
                appliance_name=self.config.appliance_name,
            )
            try:
                if previous is None:
                    stage_inputs(step, inputs, task, self.config.receiver.additional_tags)
                else:
                    hand_over(previous, step, task)
            except (WorkspaceError, OSError) as exc:
                raise _Stop(
                    "failed", f"could not prepare the input folder: {exc}", retry=True
                ) from exc
            result = self._run_step(job, index, name, module, step)
            if result.status != "succeeded":
                if result.status == "cancelled":
                    if self._stopping.is_set() and not job.row.cancel_requested:
                        raise _Stop("queued", "mercury stopped during the run", retry=True)
                    raise _Stop("cancelled", "cancelled while the module ran")
                raise _Stop("failed", f"module {name} (step {index + 1}): {result.message}")
            previous = step

        assert previous is not None
        if bool((row.settings or {}).get("retain_input_images", rule.processing_retain_images)):
            retain_inputs(previous.out_dir, inputs)
        self._finish(job, rule, previous, origin)

    def _inputs(
        self, row: JobRow, rule: Rule
    ) -> tuple[list[InputFile], dict[str, str], dict[str, Any] | None, list[str], dict[str, str]]:
        with self.sessions() as session:
            instances = list(
                session.scalars(
                    select(InstanceRow)
                    .join(
                        JobInstanceRow,
                        JobInstanceRow.sop_instance_uid == InstanceRow.sop_instance_uid,
                    )
                    .where(JobInstanceRow.job_id == row.id)
                    .order_by(InstanceRow.series_uid, InstanceRow.sop_instance_uid)
                )
            )
            inputs = [InputFile.from_row(item, self.spool) for item in instances]
            series_uid = row.series_uid or (instances[0].series_uid if instances else None)
            series = session.get(SeriesRow, series_uid) if series_uid else None
            tags = dict(series.tags) if series is not None else {}
            study: dict[str, Any] | None = None
            if row.scope == "study":
                study_row = session.get(StudyRow, row.study_uid)
                all_series = list(
                    session.scalars(select(SeriesRow).where(SeriesRow.study_uid == row.study_uid))
                )
                if study_row is not None:
                    study = study_info(study_row, all_series, rule)
            triggered = [row.rule]
            if row.decision_id is not None:
                decision = session.get(DecisionRow, row.decision_id)
                if decision is not None and decision.triggered:
                    triggered = list(decision.triggered)
            origin = {"calling_ae": "", "called_ae": "", "peer_host": ""}
            if instances:
                first = instances[0]
                origin = {
                    "calling_ae": first.calling_ae,
                    "called_ae": first.called_ae,
                    "peer_host": first.peer_host,
                }
        return inputs, tags, study, triggered, origin

    def _remove_orphans(self, row: JobRow, modules: list[str]) -> None:
        """A run of this job still going (mercury crashed while it ran) is stopped first."""
        kinds = {self._module(name).runner for name in modules if self._has(name)}
        for kind, runner in self.runners.items():
            if kind not in kinds:
                continue
            try:
                removed = runner.remove_orphans({"mercury.job": row.id})
            except RunnerError as exc:
                log.warning("could not look for orphaned runs of job %s: %s", row.id, exc)
                continue
            if removed:
                with self.sessions.begin() as session:
                    record(
                        session,
                        stage="process",
                        kind="module.orphan_removed",
                        severity="warning",
                        message=f"Removed what an interrupted run of job {row.id[:8]} left "
                        f"running: {', '.join(removed)}",
                        study_uid=row.study_uid,
                        series_uid=row.series_uid,
                        details={"job": row.id, "removed": removed},
                    )

    def _run_step(
        self, job: _Active, index: int, name: str, module: Module, step: StepFolder
    ) -> RunResult:
        row = job.row
        runner = self.runners.get(module.runner)
        if runner is None:
            raise _Stop("failed", f"module {name}: runner {module.runner!r} is not available")
        persistence = None
        if module.requires_persistence:
            persistence = self.settings.persistence_folder / (
                module.persistence_folder_name or name
            )
            persistence.mkdir(parents=True, exist_ok=True)
        run_id = f"{row.id}-{row.attempts}-{index}"
        spec = RunSpec(
            run_id=run_id,
            job_id=row.id,
            step=index,
            module_name=name,
            module=module,
            in_dir=step.in_dir,
            out_dir=step.out_dir,
            persistence_dir=persistence,
            log_path=step.log_path,
            timeout=module.timeout,
            gpus=job.gpus if module.gpus else (),
            runtime=self.settings.runtime,
            allow_root=self.settings.support_root_modules,
            labels={"mercury.job": row.id, "mercury.owner": self.owner},
        )
        started = self.clock()
        with self.sessions.begin() as session:
            run_row = ModuleRunRow(
                job_id=row.id,
                attempt=row.attempts,
                step=index,
                module=name,
                runner=module.runner,
                run_id=run_id,
                owner=self.owner,
                status="running",
                log_path=str(step.log_path),
                gpus=list(spec.gpus),
                started_at=started,
            )
            session.add(run_row)
            session.flush()
            run_row_id = run_row.id
            record(
                session,
                stage="process",
                kind="module.started",
                message=f"Module {name} started ({module.runner}) for job {row.id[:8]}",
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                details={"job": row.id, "step": index, "module": name, "run": run_id},
            )
        if job.cancel.is_set():
            result = RunResult("cancelled", None, "cancelled before it started")
        else:
            try:
                job.handle = runner.start(spec)
            except RunnerError as exc:
                self._record_run(row, run_row_id, name, RunResult("error", None, str(exc)), started)
                raise _Stop("queued", f"module {name} could not start: {exc}", retry=True) from exc
            if job.cancel.is_set():  # cancelled while it was starting
                job.handle.cancel()
            result = job.handle.wait(module.timeout)
            job.handle = None
        self._record_run(row, run_row_id, name, result, started)
        return result

    def _record_run(
        self, row: JobRow, run_row_id: int, name: str, result: RunResult, started: datetime
    ) -> None:
        now = self.clock()
        seconds = (now - started).total_seconds()
        severity = "info" if result.status == "succeeded" else "error"
        with self.sessions.begin() as session:
            session.execute(
                update(ModuleRunRow)
                .where(ModuleRunRow.id == run_row_id)
                .values(
                    status=result.status,
                    exit_code=result.exit_code,
                    message=result.message,
                    ended_at=now,
                    details={"monai": result.monai, "seconds": round(seconds, 3)},
                )
            )
            record(
                session,
                stage="process",
                kind="module.finished",
                severity=severity,
                message=f"Module {name} {result.status} after {seconds:.1f} s"
                + (f": {result.message}" if result.message else ""),
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                details={
                    "job": row.id,
                    "module": name,
                    "status": result.status,
                    "exit_code": result.exit_code,
                    "seconds": round(seconds, 3),
                },
            )

    def _finish(self, job: _Active, rule: Rule, last: StepFolder, origin: dict[str, str]) -> None:
        row = job.row
        output = collect_output(last.out_dir)
        routing = apply_routing(rule, output.result.routing, self.config.targets.keys())
        targets = [] if routing.discard else list(routing.targets)
        if rule.action == "process" and not routing.from_module:
            targets = []
        published: list[dict[str, Any]] = []
        if targets and output.files:
            try:
                published = publish(list(output.files), self.spool, row.id)
            except (OutputError, OSError) as exc:
                raise _Stop("failed", f"the module's output cannot be sent: {exc}") from exc
        now = self.clock()
        notes = list(output.result.problems) + list(routing.messages) + list(output.skipped)
        with self.sessions.begin() as session:
            specs = [
                JobSpec(
                    kind="dispatch",
                    rule=row.rule,
                    scope=row.scope,  # type: ignore[arg-type]
                    study_uid=row.study_uid,
                    series_uid=row.series_uid,
                    instances=(),
                    priority=row.priority,  # type: ignore[arg-type]
                    target=target,
                    details={"files": published, "origin": origin, "source_job": row.id},
                )
                for target in (targets if published else [])
            ]
            notification = output.result.notification
            requested = notification is not None and notification.requested
            if on_completion(rule, requested=requested):
                specs.append(
                    JobSpec(
                        kind="notify",
                        rule=row.rule,
                        scope=row.scope,  # type: ignore[arg-type]
                        study_uid=row.study_uid,
                        series_uid=row.series_uid,
                        instances=(),
                        priority=row.priority,  # type: ignore[arg-type]
                        details={
                            "event": "completed",
                            "text": notification.text if notification else "",
                            "requested": requested,
                            "source_job": row.id,
                        },
                    )
                )
            created = create_jobs(session, specs, now=now, decision_id=row.decision_id)
            details = dict(row.details or {})
            details.update(
                {
                    "outputs": len(output.files),
                    "output_folder": str(last.out_dir),
                    "dispatch_jobs": created[: len(targets) if published else 0],
                    "routing": {"targets": targets, "discard": routing.discard},
                }
            )
            if notes:
                details["notes"] = notes
            session.execute(
                update(JobRow)
                .where(JobRow.id == row.id, JobRow.lease_owner == self.owner)
                .values(details=details)
                .execution_options(synchronize_session=False)
            )
            if not finish_job(session, row.id, self.owner, now=now, state="succeeded"):
                session.rollback()
                return
            where = f" to {', '.join(targets)}" if published else ""
            record(
                session,
                stage="process",
                kind="job.succeeded",
                message=f"Processing job {row.id[:8]} succeeded: {len(output.files)} output "
                f"image(s)"
                + (f", sent{where}" if published else ", kept")
                + (f"; {'; '.join(notes)}" if notes else ""),
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                details={"job": row.id, "outputs": len(output.files), "targets": targets},
            )

    def _end(self, job: _Active, stop: _Stop) -> None:
        """Record how a job ended early: failed, cancelled, or back to the queue."""
        row = job.row
        now = self.clock()
        stopping = self._stopping.is_set()
        with self.sessions.begin() as session:
            if stop.retry and (stopping or row.attempts < self.settings.max_attempts):
                at = now if stopping else now + RETRY_DELAY
                if not retry_later(session, row.id, self.owner, now=now, at=at, error=stop.reason):
                    return
                if stopping:  # a clean shutdown does not use up an attempt
                    session.execute(
                        update(JobRow)
                        .where(JobRow.id == row.id)
                        .values(attempts=JobRow.attempts - 1)
                        .execution_options(synchronize_session=False)
                    )
                record(
                    session,
                    stage="process",
                    kind="job.retry_scheduled",
                    severity="warning",
                    message=f"Processing job {row.id[:8]}: {stop.reason}; it runs again",
                    study_uid=row.study_uid,
                    series_uid=row.series_uid,
                    details={"job": row.id, "retry_at": at.isoformat()},
                )
                return
            cancelled = stop.state == "cancelled"
            state: Literal["failed", "cancelled"] = "cancelled" if cancelled else "failed"
            if not finish_job(session, row.id, self.owner, now=now, state=state, error=stop.reason):
                return
            if cancelled:
                record(
                    session,
                    stage="process",
                    kind="job.cancelled",
                    severity="warning",
                    message=f"Processing job {row.id[:8]} cancelled: {stop.reason}",
                    study_uid=row.study_uid,
                    series_uid=row.series_uid,
                    details={"job": row.id, "attempt": row.attempts},
                )
                return
            record(
                session,
                stage="process",
                kind="job.failed",
                severity="error",
                message=f"Processing job {row.id[:8]} failed: {stop.reason}. Inputs and logs "
                f"are kept; see `mercury jobs logs {row.id[:8]}`; run it again with "
                f"`mercury jobs retry {row.id[:8]}`.",
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                details={"job": row.id, "attempt": row.attempts},
            )
