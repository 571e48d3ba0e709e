"""The one interface every runner implements, and the values it trades in.

The processor prepares a run's folders (input with the instances, `.tags` files and
task.json; an empty output folder; the persistence folder) and hands a :class:`RunSpec`
to the module's runner. A runner starts the module and returns a :class:`RunHandle`; the
processor waits on it with the module's timeout, can cancel it, and gets a
:class:`RunResult` with the exit code and the captured log. Everything a runner needs is
in the spec, so a cluster runner (submitting to Dask) fits without changes above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from mercury.config.models import Module

# Inside a container, and the environment variables a module reads (mercure's contract).
CONTAINER_IN = "/tmp/data"  # noqa: S108 (paths inside the container)
CONTAINER_OUT = "/tmp/output"  # noqa: S108
CONTAINER_PERSISTENCE = "/tmp/persistence"  # noqa: S108


def contract_environment(in_dir: str, out_dir: str, persistence: str | None) -> dict[str, str]:
    """mercure's variables and their MONAI/Holoscan aliases for the given folders."""
    env = {
        "MERCURE_IN_DIR": in_dir,
        "MERCURE_OUT_DIR": out_dir,
        "MONAI_INPUTPATH": in_dir,
        "MONAI_OUTPUTPATH": out_dir,
        "HOLOSCAN_INPUT_PATH": in_dir,
        "HOLOSCAN_OUTPUT_PATH": out_dir,
    }
    if persistence is not None:
        env["MODULE_PERSISTENCE_DIR"] = persistence
    return env


@dataclass(frozen=True)
class RunSpec:
    """One run of one module (one step of a chain) on real host folders."""

    run_id: str
    """Unique per run; names containers and log files (letters, digits, '-')."""
    job_id: str
    step: int
    module_name: str
    module: Module
    in_dir: Path
    out_dir: Path
    persistence_dir: Path | None
    log_path: Path
    """Where the runner writes the module's combined stdout and stderr."""
    timeout: float | None
    gpus: Sequence[str] = ()
    """GPU indices this run may use (admission picked them); empty: no GPU."""
    runtime: str | None = None
    """Docker runtime (such as `nvidia`) from processing.runtime."""
    allow_root: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels the runner attaches where it can (containers), to find orphans after a crash."""


RunStatus = Literal["succeeded", "failed", "timeout", "cancelled", "error"]


@dataclass(frozen=True)
class RunResult:
    status: RunStatus
    exit_code: int | None
    message: str
    """Human reason: 'exit code 3', 'stopped after the 600 s timeout', 'image not found'."""
    monai: bool = False
    """The image is a MONAI application package (/etc/monai/app.json)."""


class RunHandle(Protocol):
    """A started run."""

    def wait(self, timeout: float | None) -> RunResult:
        """Block until the module ends, or stop it when ``timeout`` seconds have passed
        (status 'timeout'). Always leaves nothing running and the log written."""
        ...

    def cancel(self) -> None:
        """Stop the module now (from another thread); ``wait`` then returns 'cancelled'."""
        ...


class Runner(Protocol):
    name: str

    def start(self, spec: RunSpec) -> RunHandle:
        """Start the module; raise :class:`RunnerError` when it cannot even start (image
        missing, command not found, Docker unreachable)."""
        ...

    def remove_orphans(self, labels: Mapping[str, str]) -> list[str]:
        """Stop and remove what earlier runs with these labels left running (after a crash);
        returns a description of each thing removed."""
        ...


class RunnerError(Exception):
    """The module could not be started; the message says why and how to fix it."""
