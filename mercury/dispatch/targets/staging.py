"""What the folder, s3 and sftp targets share: which files a job delivers, and how a job
lands whole or not at all.

Layout of a delivered job (folder and sftp)::

    <folder>/<job id>/<SeriesUID>#<SOPInstanceUID>.dcm
    <folder>/<job id>/.complete        empty; present before the folder gets its name

A job is written into ``<folder>/.<job id>.partial/``; the ``.complete`` marker is the
last file written there, and renaming the staging folder to ``<folder>/<job id>/`` is the
last step. A reader therefore never sees ``<job id>/`` half written: it appears in one
rename, marker included. A reader that waits for ``.complete`` (mercure's convention) is
safe as well. Names starting with a dot are mercury's working names; readers skip them.

A retry (same job id) first removes whatever an earlier attempt left in
``.<job id>.partial/`` (and ``.<job id>.replaced/``). If ``<job id>/`` already exists,
complete from an earlier attempt whose success was not recorded, the new copy replaces it:
the old folder is renamed to ``.<job id>.replaced/``, the new one renamed into place, the
old one removed. Delivery is at least once; the content of a job id never changes.

S3 has no folders and no rename, but every object appears whole when its upload ends, so
the s3 target uploads the files under their final keys and the ``.complete`` object last.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mercury.dispatch.base import (
    InstanceResult,
    OutgoingInstance,
    SendFailed,
    SendReport,
    Shipment,
    TargetUnreachable,
    filtered,
    parse_file_filter,
)

COMPLETE_MARKER = ".complete"
"""Empty file (or object) written last: the job is whole."""

EXCLUDED_MESSAGE = "excluded by file_filter: intentionally not delivered"

_JOB_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]*$")


def checked_job_id(job_id: str) -> str:
    """The job id, once it is known to be a safe single path component."""
    if not _JOB_ID.match(job_id):
        raise ValueError(f"job id {job_id!r} cannot name a folder (letters, digits, - and _)")
    return job_id


def staging_name(job_id: str) -> str:
    """Where a job is written before it gets its name: hidden from readers."""
    return f".{job_id}.partial"


def replaced_name(job_id: str) -> str:
    """Where an earlier complete copy of the job waits while the new one takes its name."""
    return f".{job_id}.replaced"


@dataclass(frozen=True)
class JobPlan:
    """One shipment seen through a target's file_filter."""

    job_id: str
    instances: Sequence[OutgoingInstance] = field(repr=False)
    """Every instance of the shipment."""
    to_send: list[OutgoingInstance]
    """Instances to deliver, one per export name, in shipment order."""
    excluded: list[OutgoingInstance]
    """Instances the file_filter keeps back."""

    def report(self, notes: Sequence[str] = ()) -> SendReport:
        """The report once the job is delivered: every instance 'sent', the filtered ones
        saying they were left out on purpose."""
        kept_back = {item.sop_instance_uid for item in self.excluded}
        results = [
            InstanceResult(item.sop_instance_uid, "sent", message=EXCLUDED_MESSAGE)
            if item.sop_instance_uid in kept_back
            else InstanceResult(item.sop_instance_uid, "sent")
            for item in self.instances
        ]
        all_notes = list(notes)
        if self.excluded:
            all_notes.append(
                f"{len(self.excluded)} of {len(self.instances)} instance(s) excluded by file_filter"
            )
        return SendReport(results=results, notes=all_notes)


def plan_job(shipment: Shipment, file_filter: str) -> JobPlan:
    """Split a shipment into the files to deliver and those the file_filter excludes."""
    job_id = checked_job_id(shipment.job_id)
    kept = filtered(shipment.instances, parse_file_filter(file_filter))
    kept_uids = {item.sop_instance_uid for item in kept}
    excluded = [item for item in shipment.instances if item.sop_instance_uid not in kept_uids]
    unique: dict[str, OutgoingInstance] = {}
    for item in kept:
        unique.setdefault(item.export_name, item)
    return JobPlan(job_id, shipment.instances, list(unique.values()), excluded)


def nothing_to_deliver(plan: JobPlan) -> SendReport:
    """The report of a job the file_filter leaves empty (or that has no instances): no job
    folder is written, since an empty one would only puzzle its reader."""
    return plan.report(["nothing to deliver: no instance is left after file_filter"])


def cancelled(shipment: Shipment) -> SendFailed:
    return SendFailed(
        f"job {shipment.job_id}: sending was cancelled (lease lost or shutting down); "
        "nothing was marked complete"
    )


class JobFolder(Protocol):
    """The few file operations a folder-like target needs; paths are POSIX strings.

    Each operation raises one of ``failures`` when the file system refuses."""

    failures: tuple[type[Exception], ...]

    def where(self, path: str) -> str:
        """A path as people should read it in a message: '/data/out/x', 'pacs:/in/x'."""
        ...

    def exists(self, path: str) -> bool: ...

    def remove_tree(self, path: str) -> None: ...

    def make_dir(self, path: str) -> None: ...

    def put(self, item: OutgoingInstance, path: str) -> None:
        """Copy one instance's file to ``path``, durably where the medium allows."""
        ...

    def write_marker(self, path: str) -> None:
        """Write an empty file."""
        ...

    def rename(self, old: str, new: str) -> None: ...

    def sync_dir(self, path: str) -> None:
        """Make a folder's entries durable (no-op where the medium cannot)."""
        ...


def deliver(fs: JobFolder, folder: str, plan: JobPlan, shipment: Shipment) -> SendReport:
    """Write one job into ``<folder>/<job id>/`` by way of the staging folder.

    Raises :class:`TargetUnreachable` when nothing can be written into ``folder`` and
    :class:`SendFailed` when writing broke off; either way no ``<job id>/`` is left that
    was not there before, and the staging folder is removed when the target still lets us.
    """
    if not plan.to_send:
        return nothing_to_deliver(plan)
    notes: list[str] = []

    job_dir = posixpath.join(folder, plan.job_id)
    staging = posixpath.join(folder, staging_name(plan.job_id))
    replaced = posixpath.join(folder, replaced_name(plan.job_id))

    try:
        for leftover in (staging, replaced):
            if fs.exists(leftover):
                fs.remove_tree(leftover)
                notes.append(f"removed {fs.where(leftover)} left by an earlier attempt")
        fs.make_dir(staging)
    except fs.failures as exc:
        raise TargetUnreachable(
            f"cannot write to {fs.where(folder)}: {exc}; check that the folder exists and "
            "that mercury may create folders in it"
        ) from exc

    step = "writing"
    swapped = False
    try:
        for item in plan.to_send:
            if shipment.cancel.is_set():
                raise cancelled(shipment)
            fs.put(item, posixpath.join(staging, item.export_name))
        fs.write_marker(posixpath.join(staging, COMPLETE_MARKER))
        fs.sync_dir(staging)
        step = "moving into place"
        if fs.exists(job_dir):
            fs.rename(job_dir, replaced)
            swapped = True
            notes.append(f"replaced an earlier complete copy of {fs.where(job_dir)}")
            try:
                fs.rename(staging, job_dir)
            except fs.failures:
                _quietly(fs, lambda: fs.rename(replaced, job_dir))
                raise
        else:
            fs.rename(staging, job_dir)
        fs.sync_dir(folder)
    except SendFailed:
        _quietly(fs, lambda: fs.remove_tree(staging))
        raise
    except fs.failures as exc:
        _quietly(fs, lambda: fs.remove_tree(staging))
        raise SendFailed(
            f"job {plan.job_id}: {step} {fs.where(job_dir)} failed: {exc}; "
            "nothing was marked complete"
        ) from exc

    if swapped:
        try:
            fs.remove_tree(replaced)
        except fs.failures as exc:
            notes.append(f"could not remove {fs.where(replaced)}: {exc}")
    return plan.report(notes)


def _quietly(fs: JobFolder, action: Callable[[], None]) -> None:
    """Best-effort clean-up after a failure; the next attempt cleans up what this leaves."""
    with contextlib.suppress(*fs.failures):
        action()
