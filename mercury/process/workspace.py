"""Run folders: where a module finds its inputs and leaves its outputs.

Layout: ``<work>/<job id>/<attempt>/step-<i>/{in,out}`` and ``<work>/<job id>/<attempt>/
logs/step-<i>.log``. A step folder (``step-<i>``) is the module's working directory.

The first step's input holds the job's instances as hard links to the spool (a copy only
when the work folder is on another file system), named as mercure names them,
``<SeriesInstanceUID>#<SOPInstanceUID>.dcm``, each with ``<same stem>.tags`` (the tag
dict rules are evaluated on) next to it, and task.json. The links share their inode with
the spool file, so they are made read-only: a module must write results to its output
folder, never over its inputs. A later step's input is the previous step's output, moved.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mercury.dicom.file_meta import split_file
from mercury.dicom.tags import HeaderError, InstanceHeader, read_header
from mercury.process.result import ModuleResult, read_result
from mercury.process.taskfile import write_task
from mercury.store.models import InstanceRow
from mercury.store.spool import Spool

TAGS_SUFFIX = ".tags"
DICOM_SUFFIX = ".dcm"
_HEADER_PREFIX = 64 * 1024  # bytes read first to find a file's tags; most headers are smaller
_DEFLATED = "1.2.840.10008.1.2.1.99"
_READ_ONLY = ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


class WorkspaceError(Exception):
    """A run folder could not be prepared; the message says which file and why."""


def _safe_name(name: str) -> str:
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise WorkspaceError(f"refusing the file name {name!r}")
    return name


@dataclass(frozen=True)
class InputFile:
    """One instance of the job, where it is in the spool and how it arrived."""

    sop_instance_uid: str
    series_uid: str
    path: Path
    transfer_syntax: str
    sender_address: str = ""
    sender_aet: str = ""
    receiver_aet: str = ""

    @classmethod
    def from_row(cls, row: InstanceRow, spool: Spool) -> InputFile:
        return cls(
            sop_instance_uid=row.sop_instance_uid,
            series_uid=row.series_uid,
            path=spool.absolute(row.path),
            transfer_syntax=row.transfer_syntax,
            sender_address=row.peer_host,
            sender_aet=row.calling_ae,
            receiver_aet=row.called_ae,
        )

    @property
    def name(self) -> str:
        """mercure's file name, ``<SeriesInstanceUID>#<SOPInstanceUID>.dcm``."""
        return _safe_name(f"{self.series_uid}#{self.sop_instance_uid}{DICOM_SUFFIX}")


@dataclass(frozen=True)
class StepFolder:
    """One step of a chain: ``step-<i>`` with ``in`` and ``out``; the module's cwd."""

    root: Path
    log_path: Path

    @property
    def in_dir(self) -> Path:
        return self.root / "in"

    @property
    def out_dir(self) -> Path:
        return self.root / "out"


@dataclass(frozen=True)
class RunFolder:
    """One attempt of one processing job: ``<work>/<job id>/<attempt>``."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def step(self, index: int) -> StepFolder:
        """The folders of the index-th step (0 for the first), made if missing."""
        folder = StepFolder(self.root / f"step-{index}", self.logs / f"step-{index}.log")
        folder.in_dir.mkdir(parents=True, exist_ok=True)
        folder.out_dir.mkdir(parents=True, exist_ok=True)
        return folder


def make_run_folder(work_root: Path, job_id: str, attempt: int) -> RunFolder:
    """Create an attempt's folder with its ``logs``; what an earlier, crashed run of the same
    attempt left there is removed first (stop its orphans before calling this)."""
    _safe_name(job_id)
    root = work_root / job_id / str(attempt)
    if root.exists():
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    return RunFolder(root)


@dataclass(frozen=True)
class StagedInputs:
    """How the input folder was filled."""

    files: int
    linked: int
    copied: int


def _link_or_copy(source: Path, destination: Path) -> bool:
    """Hard-link ``source`` to ``destination``; copy when they are on different file systems
    (EXDEV, or a file system without hard links). Returns True for a link."""
    try:
        os.link(source, destination)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(source, destination)
        return False
    return True


def _make_read_only(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & ~_READ_ONLY:
        path.chmod(stat.S_IMODE(mode) & _READ_ONLY)


def _header_in_prefix(
    prefix: bytes, transfer_syntax: str, additional_tags: Mapping[str, str]
) -> InstanceHeader | None:
    """The header from the first bytes of a file, or None when they do not hold all of it
    (the scan must have stopped at the pixel data inside the prefix)."""
    try:
        dataset = split_file(prefix)[1]
        header = read_header(dataset, transfer_syntax, additional_tags)
    except (HeaderError, ValueError, struct.error):
        return None
    return header if header.header_length < len(dataset) else None


def instance_tags(item: InputFile, additional_tags: Mapping[str, str]) -> dict[str, str]:
    """The tag dict of one instance, built as the receiver builds it: the header's tags
    (:func:`mercury.dicom.tags.read_header`) plus SenderAddress, SenderAET, ReceiverAET."""
    try:
        with item.path.open("rb") as handle:
            data = handle.read(_HEADER_PREFIX)
            header = None
            if item.transfer_syntax != _DEFLATED and len(data) == _HEADER_PREFIX:
                header = _header_in_prefix(data, item.transfer_syntax, additional_tags)
            if header is None:
                data += handle.read()
                header = read_header(split_file(data)[1], item.transfer_syntax, additional_tags)
    except (OSError, HeaderError, ValueError, struct.error) as error:
        raise WorkspaceError(f"cannot read the tags of {item.path}: {error}") from error
    tags = dict(header.tags)
    tags["SenderAddress"] = item.sender_address
    tags["SenderAET"] = item.sender_aet
    tags["ReceiverAET"] = item.receiver_aet
    return tags


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def stage_inputs(
    step: StepFolder,
    inputs: Iterable[InputFile],
    task: Mapping[str, Any],
    additional_tags: Mapping[str, str] | None = None,
) -> StagedInputs:
    """Fill the first step's input folder: each instance linked (or copied) from the spool,
    its ``.tags`` file, and task.json. ``additional_tags`` is the receiver's setting of the
    same name, so the ``.tags`` files hold what the rules saw."""
    extra = additional_tags or {}
    files = linked = 0
    for item in inputs:
        destination = step.in_dir / item.name
        try:
            is_link = _link_or_copy(item.path, destination)
        except OSError as error:
            raise WorkspaceError(f"cannot put {item.path} into {step.in_dir}: {error}") from error
        _make_read_only(destination)
        stem = destination.name.removesuffix(DICOM_SUFFIX)
        _write_json(step.in_dir / f"{stem}{TAGS_SUFFIX}", instance_tags(item, extra))
        files += 1
        linked += is_link
    write_task(step.in_dir, task)
    return StagedInputs(files=files, linked=linked, copied=files - linked)


def hand_over(previous: StepFolder, following: StepFolder, task: Mapping[str, Any]) -> int:
    """Make step i's output step i+1's input: everything in it is moved over (folders
    included), then the step's own task.json is written, replacing one the previous module
    may have left. Returns the number of entries moved."""
    moved = 0
    for entry in sorted(previous.out_dir.iterdir()):
        shutil.move(entry, following.in_dir / entry.name)
        moved += 1
    write_task(following.in_dir, task)
    return moved


def retain_inputs(out_dir: Path, inputs: Iterable[InputFile]) -> int:
    """``processing_retain_images``: add the job's original images (from the spool) to the
    final output. A file the module wrote under the same name is kept. Returns the number
    of images added."""
    added = 0
    for item in inputs:
        destination = out_dir / item.name
        if destination.exists() or destination.is_symlink():
            continue
        try:
            _link_or_copy(item.path, destination)
        except OSError as error:
            raise WorkspaceError(f"cannot add {item.path} to {out_dir}: {error}") from error
        _make_read_only(destination)
        added += 1
    return added


@dataclass(frozen=True)
class RunOutput:
    """What a module left: the DICOM files to dispatch and its result.json."""

    files: tuple[Path, ...]
    result: ModuleResult
    skipped: tuple[str, ...] = ()
    """Entries named ``*.dcm`` that are not regular files (links are never followed: a
    module must not make us send a file from outside its output folder)."""


def dicom_files(out_dir: Path) -> tuple[list[Path], list[str]]:
    """Every regular ``*.dcm`` file under ``out_dir``, at any depth, in a stable order
    (as mercure dispatches them), and the ``*.dcm`` entries skipped because they are not
    regular files."""
    files: list[Path] = []
    skipped: list[str] = []
    for folder, dirs, names in os.walk(out_dir, followlinks=False):
        dirs.sort()
        base = Path(folder)
        for name in sorted(names):
            if not name.endswith(DICOM_SUFFIX):
                continue
            path = base / name
            if stat.S_ISREG(path.lstat().st_mode):
                files.append(path)
            else:
                skipped.append(str(path.relative_to(out_dir)))
    return files, skipped


def collect_output(out_dir: Path) -> RunOutput:
    """The output of the last step: its DICOM files and its parsed result.json."""
    files, skipped = dicom_files(out_dir)
    return RunOutput(files=tuple(files), result=read_result(out_dir), skipped=tuple(skipped))
