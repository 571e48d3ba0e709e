"""The folder target: each job is copied to ``<folder>/<job id>/`` on a local or mounted
file system, whole or not at all (see :mod:`mercury.dispatch.targets.staging`).

The destination folder must exist: mercury does not create it, so a share that is not
mounted is reported instead of silently filling the local disk under the mount point.
Every file, the ``.complete`` marker and both folders are fsynced before the job counts as
sent.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import ClassVar

from mercury.config.targets import FolderTarget, TargetBase
from mercury.dispatch.base import (
    OutgoingInstance,
    ProbeResult,
    SenderContext,
    SendReport,
    Shipment,
    TargetUnreachable,
)
from mercury.dispatch.targets.staging import deliver, plan_job

_COPY_BUFFER = 1024 * 1024


class LocalJobFolder:
    """:class:`~mercury.dispatch.targets.staging.JobFolder` on the local file system."""

    failures: tuple[type[Exception], ...] = (OSError,)

    def where(self, path: str) -> str:
        return path

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def remove_tree(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)

    def make_dir(self, path: str) -> None:
        os.mkdir(path)

    def put(self, item: OutgoingInstance, path: str) -> None:
        with open(item.path, "rb") as source, open(path, "xb") as destination:
            shutil.copyfileobj(source, destination, _COPY_BUFFER)
            destination.flush()
            os.fsync(destination.fileno())

    def write_marker(self, path: str) -> None:
        with open(path, "xb") as marker:
            os.fsync(marker.fileno())

    def rename(self, old: str, new: str) -> None:
        os.rename(old, new)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot take jobs, or None when it looks usable."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        return (
            f"folder {folder} does not exist; create it (mercury does not, in case it is "
            "a mount point whose share is not mounted)"
        )
    except NotADirectoryError:
        return f"folder {folder} cannot exist: a part of its path is a file, not a folder"
    except OSError as exc:
        return f"folder {folder} cannot be read: {exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is a file, not a folder; point `folder` at a folder"
    return None


class FolderSender:
    resumable: ClassVar[bool] = False

    def __init__(self, name: str, target: FolderTarget) -> None:
        self.name = name
        self.target = target
        self.folder = Path(target.folder)

    def send(self, shipment: Shipment) -> SendReport:
        plan = plan_job(shipment, self.target.file_filter)
        if plan.to_send:
            problem = _folder_problem(self.folder)
            if problem:
                raise TargetUnreachable(f"target {self.name}: {problem}")
        return deliver(LocalJobFolder(), str(self.folder), plan, shipment)

    def probe(self) -> ProbeResult:
        problem = _folder_problem(self.folder)
        if problem:
            return ProbeResult(False, problem)
        probe_file = self.folder / f".mercury-probe-{uuid.uuid4().hex}"
        try:
            with open(probe_file, "xb") as handle:
                handle.write(b"mercury write probe\n")
                os.fsync(handle.fileno())
            probe_file.unlink()
        except OSError as exc:
            probe_file.unlink(missing_ok=True)
            hint = (
                "the file system is full"
                if exc.errno == errno.ENOSPC
                else "check its permissions and that it is not mounted read-only"
            )
            return ProbeResult(False, f"cannot write to folder {self.folder}: {exc}; {hint}")
        usage = shutil.disk_usage(self.folder)
        free_gib = usage.free / 1024**3
        details = {"free_bytes": usage.free, "total_bytes": usage.total}
        return ProbeResult(
            True, f"folder {self.folder} is writable; {free_gib:.1f} GiB free", details
        )

    def describe(self) -> str:
        return f"folder {self.folder}"


def create(name: str, target: TargetBase, context: SenderContext) -> FolderSender:
    assert isinstance(target, FolderTarget)
    return FolderSender(name, target)
