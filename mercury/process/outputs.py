"""A finished module's images, made durable in the spool for the dispatch jobs that send
them. They keep their own folder per job (``results/<job id>/``) because a module may
keep an input's SOP Instance UID while changing its content (a decompressor does): the
original in the index must stay as it was received."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from mercury.dicom.uids import is_valid_uid
from mercury.store.spool import Spool, fsync_directories

RESULTS = "results"


class OutputError(ValueError):
    """A module wrote something that cannot be sent; the message names the file."""


def publish(files: Sequence[Path], spool: Spool, job_id: str) -> list[dict[str, Any]]:
    """Move (or copy) each output file to ``<spool>/results/<job id>/`` durably and
    describe it for a dispatch job: spool-relative path, UIDs, SOP class, syntax, size."""
    folder = spool.root / RESULTS / job_id
    folder.mkdir(parents=True, exist_ok=True)
    described: list[dict[str, Any]] = []
    for index, source in enumerate(files):
        info = describe(source)
        name = f"{index:05d}-{info['sop_instance_uid']}.dcm"
        destination = folder / name
        _move(source, destination)
        info["path"] = f"{RESULTS}/{job_id}/{name}"
        info["size"] = destination.stat().st_size
        described.append(info)
    fsync_directories([folder, folder.parent])
    return described


def describe(path: Path) -> dict[str, Any]:
    """UIDs, SOP class and transfer syntax of an output file, read from its header."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise OutputError(f"{path.name}: not a readable DICOM file ({exc})") from None
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not syntax:
        raise OutputError(f"{path.name}: no transfer syntax in its file meta header")
    uids = {
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
    }
    for key, value in uids.items():
        if not is_valid_uid(value):
            raise OutputError(f"{path.name}: {key} {value!r} is not a valid DICOM UID")
    return {**uids, "transfer_syntax": syntax}


def _move(source: Path, destination: Path) -> None:
    try:
        os.replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, destination)
    fd = os.open(destination, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
