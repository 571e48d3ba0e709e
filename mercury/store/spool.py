"""The spool: image files written once, durably (temp file, fsync, rename).

File names derive from validated UIDs only, so nothing a sender controls can
become a path outside the spool.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from mercury.dicom.uids import is_valid_uid

Buffer = bytes | bytearray | memoryview


class SpoolFullError(OSError):
    """The spool's disk is full or below the configured reserve."""


class Spool:
    """Image files under ``root/data/<study>/<series>/<sop>.dcm``; temp files under ``root/tmp``."""

    def __init__(self, root: Path, reserve_bytes: int = 0) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.tmp_dir = root / "tmp"
        self.reserve_bytes = reserve_bytes

    def prepare(self) -> int:
        """Create the folders and remove temp files a crash left; returns how many were removed."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    @staticmethod
    def relative_path(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        """The spool-relative path of an instance; refuses anything that is not a valid UID."""
        for uid in (study_uid, series_uid, sop_instance_uid):
            if not is_valid_uid(uid):
                raise ValueError(f"not a valid DICOM UID: {uid!r}")
        return f"data/{study_uid}/{series_uid}/{sop_instance_uid}.dcm"

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def has_room(self, size: int) -> bool:
        return self.free_bytes() - size >= self.reserve_bytes

    def write(self, relative: str, chunks: Sequence[Buffer]) -> tuple[int, list[Path]]:
        """Write ``chunks`` durably to ``relative``; returns (size, directories that changed).

        The caller fsyncs the returned directories (grouped across instances) before it
        records the instance in the index.
        """
        final = self.root / relative
        tmp = self.tmp_dir / f"{secrets.token_hex(12)}.part"
        size = sum(len(chunk) for chunk in chunks)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            try:
                _write_all(fd, chunks)
                os.fsync(fd)
            finally:
                os.close(fd)
            changed = _make_parents(final.parent, self.data_dir)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFullError(exc.errno, "no space left in the spool") from exc
            raise
        changed.append(final.parent)
        return size, changed


def _write_all(fd: int, chunks: Sequence[Buffer]) -> None:
    views = [memoryview(chunk) for chunk in chunks if len(chunk)]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _make_parents(folder: Path, stop: Path) -> list[Path]:
    """mkdir -p that reports the parents whose entries changed, so they can be fsynced."""
    if folder.is_dir():
        return []
    changed: list[Path] = []
    missing: list[Path] = []
    current = folder
    while not current.is_dir() and current != stop:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        changed.append(path.parent)
    return changed


def fsync_directories(folders: Iterable[Path]) -> None:
    """Make renames and new entries in these folders durable."""
    for folder in set(folders):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
