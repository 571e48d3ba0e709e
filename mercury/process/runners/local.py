"""The local runner: a module's command run on this host, the way mercure runs a container.

The module sees what it would see in mercure's container, with real folders: the contract
variables (``MERCURE_IN_DIR``, ``MERCURE_OUT_DIR``, their MONAI and Holoscan aliases,
``MODULE_PERSISTENCE_DIR``), the module's ``environment``, and little else from ours
(PATH, HOME, LANG; the interpreter mercury runs on comes first on PATH, so ``python``
finds pydicom and numpy). The command is a list run without a shell; only the contract
variables are expanded in its arguments (``$NAME`` or ``${NAME}``), nothing else.

GPUs: ``CUDA_VISIBLE_DEVICES`` is set to the indices admission gave the run, and to the
empty string when it was given none, so a module that asked for no GPU sees none (as in a
container without a device request) and cannot take one another run was promised.

Each run is its own session and process group, so a timeout or a cancel stops the whole
tree the module started (SIGTERM, then SIGKILL after a grace period), and whatever it
leaves running when it exits is killed with it. A run records its process group in
``<step folder>/pid`` (the folder holding ``in`` and ``out``), so after a crash
:meth:`LocalRunner.remove_orphans` finds what is still running under the work folder.
A module that starts its own session (``setsid``) escapes this; containers do not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mercury.process.base import RunnerError, RunResult, RunSpec, RunStatus, contract_environment

PID_FILE = "pid"
JOB_LABEL = "mercury.job"
"""The label naming a run's job; every local run carries it, whatever the spec's labels."""
DEFAULT_GRACE = 10.0
"""Seconds between SIGTERM and SIGKILL when a run is stopped."""
INHERITED = ("PATH", "HOME", "LANG")
"""The only variables a module inherits from mercury's environment."""

_POLL = 0.05
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_arguments(arguments: Sequence[str], variables: Mapping[str, str]) -> list[str]:
    """Replace ``$NAME`` and ``${NAME}`` by the value of the variables given; any other
    ``$`` text is left as it is (there is no shell to interpret it)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return [_VARIABLE.sub(replace, argument) for argument in arguments]


def _contract(spec: RunSpec) -> dict[str, str]:
    persistence = str(spec.persistence_dir) if spec.persistence_dir is not None else None
    return contract_environment(str(spec.in_dir), str(spec.out_dir), persistence)


def module_environment(spec: RunSpec, inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a local module runs with: PATH, HOME and LANG from ``inherited``
    (our own by default) with the running interpreter's folder first on PATH, then the
    module's ``environment``, then the contract variables and CUDA_VISIBLE_DEVICES (which
    the module's environment cannot change)."""
    source = os.environ if inherited is None else inherited
    env = {name: source[name] for name in INHERITED if name in source}
    python_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", os.defpath)
    if path.split(os.pathsep)[0] != python_dir:
        path = os.pathsep.join((python_dir, path)) if path else python_dir
    env["PATH"] = path
    env.update(spec.module.environment)
    env.update(_contract(spec))
    env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpus)
    return env


def _resolve(command: str, search_path: str) -> str | None:
    """The executable a command names: a path as it is (relative to our own working
    directory), a bare name looked up on the module's PATH."""
    if os.sep in command:
        path = os.path.abspath(command)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(command, path=search_path)


# -- process groups, seen through /proc ------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (field 3), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies do not count)."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in "ZX":
            return True
    return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM to the group, SIGKILL to what is left after ``grace`` seconds."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(_POLL)  # polling the group's state, bounded by the grace period
    _signal_group(pgid, signal.SIGKILL)


# -- runs ------------------------------------------------------------------------------


class LocalRun:
    """A started local run (a :class:`mercury.process.base.RunHandle`)."""

    def __init__(
        self, process: subprocess.Popen[bytes], spec: RunSpec, pid_file: Path, grace: float
    ) -> None:
        self._process = process
        self._spec = spec
        self._pid_file = pid_file
        self._grace = grace
        self._lock = threading.Lock()  # guards signalling against reaping
        self._wait_lock = threading.Lock()
        self._cancelled = threading.Event()
        self._reaped = False
        self._result: RunResult | None = None

    @property
    def pgid(self) -> int:
        """The run's process group (its leader is the module's first process)."""
        return self._process.pid

    def cancel(self) -> None:
        """Ask the module to stop (SIGTERM to its group); ``wait`` finishes the job."""
        with self._lock:
            if self._reaped:
                return
            self._cancelled.set()
            _signal_group(self.pgid, signal.SIGTERM)

    def _exited(self) -> bool:
        """Whether the leader exited, without reaping it (its pid must stay ours until the
        group has been killed, or the group id could be reused)."""
        try:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            return os.waitid(os.P_PID, self._process.pid, flags) is not None
        except ChildProcessError:
            return True

    def wait(self, timeout: float | None) -> RunResult:
        with self._wait_lock:
            if self._result is not None:
                return self._result
            deadline = None if timeout is None else time.monotonic() + timeout
            stopped: RunStatus | None = None
            exit_signal = _exit_signal(self._process.pid)
            try:
                while not self._exited():
                    if self._cancelled.is_set():
                        stopped = "cancelled"
                        break
                    remaining = _POLL if deadline is None else deadline - time.monotonic()
                    if remaining <= 0:
                        stopped = "timeout"
                        break
                    # Wake the moment the module exits (a pidfd turns readable), or at the
                    # next poll to notice a cancel or the deadline.
                    if exit_signal is not None:
                        select.select([exit_signal], [], [], min(_POLL, remaining))
                    else:
                        self._cancelled.wait(min(_POLL, remaining))
            finally:
                if exit_signal is not None:
                    os.close(exit_signal)
            if stopped is not None:
                stop_group(self.pgid, self._grace)
            elif self._cancelled.is_set():
                stopped = "cancelled"  # the SIGTERM of cancel() ended it
            self._result = self._finish(stopped, timeout)
            return self._result

    def _finish(self, stopped: RunStatus | None, timeout: float | None) -> RunResult:
        with self._lock:
            _signal_group(self.pgid, signal.SIGKILL)  # what the module left running
            code = self._process.wait()
            self._reaped = True
        self._pid_file.unlink(missing_ok=True)
        if stopped == "timeout":
            return RunResult("timeout", None, f"stopped after the {timeout:g} s timeout")
        if stopped == "cancelled":
            return RunResult("cancelled", None, "cancelled")
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            return RunResult("failed", None, f"killed by signal {name}")
        return RunResult("succeeded" if code == 0 else "failed", code, f"exit code {code}")


def _exit_signal(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _write_record(path: Path, record: Mapping[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record), encoding="utf-8")
    temporary.replace(path)


class LocalRunner:
    """Runs modules with ``runner: local``. ``work_root`` is the processing work folder:
    :meth:`remove_orphans` looks for the pid files of runs under it."""

    name = "local"

    def __init__(self, work_root: Path, *, grace: float = DEFAULT_GRACE) -> None:
        self.work_root = work_root
        self.grace = grace

    def start(self, spec: RunSpec) -> LocalRun:
        module = spec.module
        if module.runner != "local" or not module.command:
            raise RunnerError(
                f"module {spec.module_name} is not a local module (runner: {module.runner})"
            )
        env = module_environment(spec)
        argv = expand_arguments(module.command, _contract(spec))
        executable = _resolve(argv[0], env["PATH"])
        if executable is None:
            raise RunnerError(
                f"module {spec.module_name}: command {argv[0]!r} not found or not executable "
                f"(searched {env['PATH']}); give its absolute path or install it"
            )
        run_dir = spec.in_dir.parent
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with spec.log_path.open("ab") as log:
                process = subprocess.Popen(
                    argv,
                    executable=executable,
                    cwd=run_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            raise RunnerError(
                f"module {spec.module_name}: cannot start {executable}: {error.strerror}"
            ) from error
        pid_file = run_dir / PID_FILE
        record = {
            "pgid": process.pid,
            "start_time": _start_time(process.pid),
            "run_id": spec.run_id,
            "job_id": spec.job_id,
            "step": spec.step,
            "labels": {JOB_LABEL: spec.job_id, **spec.labels},
        }
        try:
            _write_record(pid_file, record)
        except OSError as error:
            stop_group(process.pid, 0)
            process.wait()
            raise RunnerError(f"cannot write {pid_file}: {error}") from error
        return LocalRun(process, spec, pid_file, self.grace)

    def _pid_files(self, labels: Mapping[str, str]) -> list[Path]:
        job = labels.get(JOB_LABEL)
        if job is not None:
            if not job or "/" in job or job.startswith("."):
                return []
            return sorted((self.work_root / job).glob(f"*/*/{PID_FILE}"))
        return sorted(self.work_root.glob(f"*/*/*/{PID_FILE}"))

    def remove_orphans(self, labels: Mapping[str, str]) -> list[str]:
        """Stop the runs under the work folder whose recorded labels include all of
        ``labels`` (every run has ``mercury.job``; empty labels match every run), and
        remove their pid files. Only for runs nobody waits on any more (after a crash): a
        recorded process whose pid now belongs to another program is left alone."""
        removed: list[str] = []
        for pid_file in self._pid_files(labels):
            try:
                record = json.loads(pid_file.read_text(encoding="utf-8"))
                pgid = int(record["pgid"])
                recorded: dict[str, str] = dict(record.get("labels", {}))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if any(recorded.get(key) != value for key, value in labels.items()):
                continue
            if _still_ours(pgid, record.get("start_time")) and group_alive(pgid):
                stop_group(pgid, self.grace)
                removed.append(
                    f"local run {record.get('run_id')} (job {record.get('job_id')}, step "
                    f"{record.get('step')}): process group {pgid}"
                )
            pid_file.unlink(missing_ok=True)
        return removed


def _still_ours(pgid: int, start_time: Any) -> bool:
    """Whether the group recorded is the one we started: its leader still has the start
    time recorded, or the leader is gone (a group id is not reused while the group has
    members, so survivors of that group are ours)."""
    now = _start_time(pgid)
    return now is None or start_time is None or now == start_time
