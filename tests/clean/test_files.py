"""Removing spool files: a file written after the clean began, or replaced while it was
moved aside, stays; parked files of instances received again go back; folders."""

from __future__ import annotations

import os
from pathlib import Path

from mercury.clean.files import (
    DiskUsage,
    clock_marker,
    disk_usage,
    park_files,
    prune_empty,
    remove_tree,
)
from tests.clean.support import backdate


def _files(folder: Path, count: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for index in range(count):
        path = folder / f"1.2.{index}.dcm"
        path.write_bytes(b"x" * (100 + index))
        backdate(path, 60)
        found[f"1.2.{index}"] = path
    return found


def test_parked_files_are_removed_when_settled(tmp_path: Path) -> None:
    files = _files(tmp_path / "data" / "1.2" / "1.3", 3)
    trash = tmp_path / "tmp"
    removal = park_files(files, trash, clock_marker(trash))
    assert not any(path.exists() for path in files.values())
    assert len(list(trash.iterdir())) == 3  # moved aside, not gone yet
    assert removal.settle(set()) == (3, 100 + 101 + 102)
    assert list(trash.iterdir()) == []


def test_a_file_received_again_meanwhile_goes_back(tmp_path: Path) -> None:
    files = _files(tmp_path / "data", 2)
    trash = tmp_path / "tmp"
    removal = park_files(files, trash, clock_marker(trash))
    # The index says 1.2.0 was received again (its row is unrouted): it is put back.
    assert removal.settle({"1.2.0"}) == (1, 101)
    assert files["1.2.0"].read_bytes() == b"x" * 100
    assert not files["1.2.1"].exists()
    assert removal.kept == ["1.2.0"]
    assert list(trash.iterdir()) == []


def test_a_newer_copy_is_not_overwritten_when_putting_back(tmp_path: Path) -> None:
    files = _files(tmp_path / "data", 1)
    trash = tmp_path / "tmp"
    removal = park_files(files, trash, clock_marker(trash))
    files["1.2.0"].write_bytes(b"newest")
    removal.settle({"1.2.0"})
    assert files["1.2.0"].read_bytes() == b"newest"


def test_files_written_after_the_marker_stay(tmp_path: Path) -> None:
    files = _files(tmp_path / "data", 2)
    trash = tmp_path / "tmp"
    marker = clock_marker(trash)
    os.utime(files["1.2.1"], ns=(marker, marker + 1))  # written after the clean began
    removal = park_files(files, trash, marker)
    assert removal.kept == ["1.2.1"]
    assert files["1.2.1"].exists()
    assert removal.settle(set()) == (1, 100)


def test_missing_files_are_counted(tmp_path: Path) -> None:
    files = _files(tmp_path / "data", 2)
    files["1.2.0"].unlink()
    removal = park_files(files, tmp_path / "tmp", clock_marker(tmp_path / "tmp"))
    assert removal.missing == 1
    assert removal.settle(set()) == (1, 101)


def test_the_marker_is_the_file_systems_clock(tmp_path: Path) -> None:
    before = clock_marker(tmp_path)
    probe = tmp_path / "later"
    probe.write_bytes(b"")
    assert probe.stat().st_mtime_ns >= before
    assert [p.name for p in tmp_path.iterdir()] == ["later"]


def test_prune_empty_stops_at_a_non_empty_folder_and_at_the_root(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "s1" / "a").mkdir(parents=True)
    (data / "s1" / "b").mkdir()
    (data / "s1" / "b" / "keep.dcm").write_bytes(b"")
    prune_empty({data / "s1" / "a", data / "s1" / "b"}, data)
    assert (data / "s1" / "b" / "keep.dcm").exists()
    assert not (data / "s1" / "a").exists()
    (data / "s1" / "b" / "keep.dcm").unlink()
    prune_empty({data / "s1" / "b"}, data)
    assert data.is_dir()
    assert list(data.iterdir()) == []


def test_remove_tree_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"p")
    run = tmp_path / "runs" / "job" / "1"
    (run / "step-0" / "in").mkdir(parents=True)
    (run / "step-0" / "in" / "a.dcm").write_bytes(b"12345")
    (run / "step-0" / "in" / "a.dcm").chmod(0o444)
    (run / "link").symlink_to(outside)
    freed, errors = remove_tree(tmp_path / "runs" / "job")
    assert errors == []
    assert freed >= 5
    assert not (tmp_path / "runs" / "job").exists()
    assert (outside / "precious").exists()
    assert remove_tree(tmp_path / "nothing") == (0, [])


def test_disk_usage_is_as_df_shows_it(tmp_path: Path) -> None:
    usage = disk_usage(tmp_path)
    assert usage.total > 0
    assert 0 <= usage.percent <= 100
    assert DiskUsage(total=100, used=45, available=45).percent == 50
    assert DiskUsage(total=0, used=0, available=0).percent == 0
