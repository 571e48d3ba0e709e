"""Removing files from the spool without ever removing one the receiver has just written.

An instance file is first moved aside (renamed into the spool's ``tmp`` folder, on the same
file system) and only unlinked once the index says nobody wants it. A file written after
the series was marked for cleaning (a sender re-sending an image: the receiver replaces
the file in place) is recognised by its modification time against a marker taken from
the spool's own clock, and by its inode when it is replaced while being moved; such a
file is left (or put back) where it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("mercury.clean")


@dataclass(frozen=True)
class DiskUsage:
    total: int
    used: int
    available: int

    @property
    def percent(self) -> float:
        """Used share of the space a user can have, as ``df`` shows it."""
        usable = self.used + self.available
        return 100.0 * self.used / usable if usable else 0.0


def disk_usage(path: Path) -> DiskUsage:
    stats = os.statvfs(path)
    total = stats.f_blocks * stats.f_frsize
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    return DiskUsage(total=total, used=used, available=stats.f_bavail * stats.f_frsize)


def clock_marker(folder: Path) -> int:
    """The file system's current time (ns), read from a file made for the purpose: files
    written from now on have a modification time at or after it, whatever the skew between
    this machine's clock and a shared file system's."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f"clean-marker-{secrets.token_hex(8)}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


@dataclass
class Parked:
    """A file moved aside, and where it came from."""

    original: Path
    parked: Path
    size: int


@dataclass
class Removal:
    """What removing a series' instance files did."""

    parked: dict[str, Parked] = field(default_factory=dict)
    """SOP Instance UID -> the file moved aside, not unlinked yet."""
    missing: int = 0
    kept: list[str] = field(default_factory=list)
    """Instances whose file was written after the marker (received again): left in place."""
    errors: list[str] = field(default_factory=list)

    def settle(self, wanted: set[str]) -> tuple[int, int]:
        """Put back the parked files of ``wanted`` instances (received again meanwhile) and
        unlink the others; returns (files removed, bytes freed)."""
        removed = freed = 0
        for uid, item in self.parked.items():
            if uid in wanted:
                with contextlib.suppress(FileExistsError):  # an even newer copy is there
                    os.link(item.parked, item.original)
                self.kept.append(uid)
            else:
                removed += 1
                freed += item.size
            item.parked.unlink(missing_ok=True)
        self.parked.clear()
        return removed, freed


def park_files(files: dict[str, Path], trash: Path, marker_ns: int) -> Removal:
    """Move each file (SOP Instance UID -> path) into ``trash`` unless it is newer than the
    marker; :meth:`Removal.settle` finishes the job once the index has been updated."""
    trash.mkdir(parents=True, exist_ok=True)
    removal = Removal()
    for uid, path in files.items():
        try:
            before = os.lstat(path)
        except FileNotFoundError:
            removal.missing += 1
            continue
        except OSError as exc:
            removal.errors.append(f"{path}: {exc.strerror or exc}")
            continue
        if before.st_mtime_ns >= marker_ns:
            removal.kept.append(uid)
            continue
        parked = trash / f"clean-{secrets.token_hex(8)}.dcm"
        try:
            os.rename(path, parked)
        except FileNotFoundError:
            removal.missing += 1
            continue
        except OSError as exc:
            removal.errors.append(f"{path}: {exc.strerror or exc}")
            continue
        after = os.lstat(parked)
        if (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev) or (
            after.st_mtime_ns >= marker_ns
        ):
            # Replaced between the look and the move: the new copy goes back.
            with contextlib.suppress(FileExistsError):
                os.link(parked, path)
            parked.unlink(missing_ok=True)
            removal.kept.append(uid)
            continue
        removal.parked[uid] = Parked(path, parked, before.st_size)
    return removal


def prune_empty(folders: set[Path], stop: Path) -> None:
    """Remove these folders and their parents up to ``stop`` while they are empty."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        current = folder
        while current != stop and stop in current.parents:
            try:
                current.rmdir()
            except OSError:
                break
            current = current.parent


def remove_tree(folder: Path) -> tuple[int, list[str]]:
    """Remove a folder and everything in it (links are removed, never followed); returns
    (bytes freed, errors)."""
    if not folder.is_dir() or folder.is_symlink():
        return 0, []
    freed = 0
    errors: list[str] = []
    for base, dirs, names in os.walk(folder, topdown=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
            path = os.path.join(base, name)
            try:
                size = os.lstat(path).st_size
                os.unlink(path)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
                continue
            freed += size
        try:
            os.rmdir(base)
        except OSError as exc:
            errors.append(f"{base}: {exc.strerror or exc}")
    return freed, errors
