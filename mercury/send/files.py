"""Find the DICOM files to send and read what choosing a presentation context needs.

Only the file meta information is read (SOP class, SOP instance, transfer syntax); the
dataset itself is not parsed here. Anything that is not a DICOM Part 10 file is skipped
with a reason rather than failing the whole send.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from mercury.dicom.uids import is_valid_uid

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an instance


@dataclass(frozen=True, slots=True)
class DicomFile:
    """A file to send, with what its file meta information says about it."""

    path: Path
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A path that is not sent, and why."""

    path: Path
    reason: str


def _meta_text(value: object) -> str:
    return str(value).rstrip("\x00 ") if value is not None else ""


def inspect_file(path: Path) -> DicomFile | Skipped:
    """Read the file meta information of one file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(132)
        if len(prefix) < 132 or prefix[128:132] != b"DICM":
            return Skipped(path, "not a DICOM file (no DICM prefix at byte 128)")
        meta = read_file_meta_info(path)
    except Exception as exc:  # whatever breaks reading the meta makes it unsendable, not fatal
        reason = "not a DICOM file" if isinstance(exc, InvalidDicomError) else "unreadable"
        return Skipped(path, f"{reason}: {exc}")
    sop_class = _meta_text(meta.get("MediaStorageSOPClassUID"))
    sop_instance = _meta_text(meta.get("MediaStorageSOPInstanceUID"))
    syntax = _meta_text(meta.get("TransferSyntaxUID"))
    for name, value in (
        ("Media Storage SOP Class UID", sop_class),
        ("Media Storage SOP Instance UID", sop_instance),
        ("Transfer Syntax UID", syntax),
    ):
        if not is_valid_uid(value):
            return Skipped(path, f"file meta has no valid {name} ({value!r})")
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return Skipped(path, "a DICOMDIR index, not an instance to store")
    return DicomFile(path, size, sop_class, sop_instance, syntax)


def _walk(folder: Path, recursive: bool) -> Iterable[Path]:
    if not recursive:
        yield from sorted(p for p in folder.iterdir() if p.is_file())
        return
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            yield Path(root) / name


def find_dicom_files(
    paths: Iterable[str | os.PathLike[str]], recursive: bool = True
) -> tuple[list[DicomFile], list[Skipped]]:
    """The DICOM files among ``paths`` (files, and folders walked in name order)."""
    found: list[DicomFile] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            candidates: Iterable[Path] = _walk(path, recursive)
        elif path.exists():
            candidates = [path]
        else:
            skipped.append(Skipped(path, "no such file or folder"))
            continue
        for candidate in candidates:
            key = candidate.resolve()
            if key in seen:
                continue
            seen.add(key)
            result = inspect_file(candidate)
            if isinstance(result, DicomFile):
                found.append(result)
            else:
                skipped.append(result)
    return found, skipped
