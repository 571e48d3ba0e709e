"""The folder target against the real file system, including a full one (a small tmpfs)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mercury.config.targets import FolderTarget
from mercury.dispatch.base import (
    OutgoingInstance,
    SenderContext,
    SendFailed,
    Shipment,
    TargetUnreachable,
)
from mercury.dispatch.registry import create_sender
from mercury.dispatch.targets import staging
from mercury.dispatch.targets.folder import FolderSender, LocalJobFolder
from tests.dispatch.support import shipment
from tests.helpers import make_ct_series, make_small_images


def folder_sender(folder: Path, file_filter: str = "") -> FolderSender:
    target = FolderTarget(target_type="folder", folder=folder, file_filter=file_filter)
    sender = create_sender("out", target, SenderContext("MERCURY", folder.parent))
    assert isinstance(sender, FolderSender)
    return sender


def assert_delivered(job_dir: Path, job: Shipment) -> None:
    """``job_dir`` holds exactly the job's files, byte for byte, and an empty .complete."""
    expected = {item.export_name: item for item in job.instances}
    assert sorted(os.listdir(job_dir)) == sorted([*expected, ".complete"])
    assert (job_dir / ".complete").stat().st_size == 0
    for name, item in expected.items():
        assert (job_dir / name).read_bytes() == item.path.read_bytes()


def hidden_entries(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".")]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def small(tmp_path: Path) -> list[Path]:
    return make_small_images(tmp_path / "src", 6, per_series=3)


def test_a_series_lands_whole_with_complete_marker(out: Path, small: list[Path]) -> None:
    job = shipment(small, job_id="a1b2c3")
    sender = folder_sender(out)

    report = sender.send(job)

    assert [r.status for r in report.results] == ["sent"] * 6
    assert os.listdir(out) == ["a1b2c3"]
    assert_delivered(out / "a1b2c3", job)
    name = job.instances[0].export_name
    assert name == f"{job.instances[0].series_uid}#{job.instances[0].sop_instance_uid}.dcm"
    assert (
        pydicom.dcmread(out / "a1b2c3" / name).SOPInstanceUID == job.instances[0].sop_instance_uid
    )
    assert sender.describe() == f"folder {out}"
    assert type(sender).resumable is False


def test_marker_is_written_last_and_the_rename_comes_after_it(out: Path, small: list[Path]) -> None:
    """The order of operations, recorded on the real file system."""
    calls: list[tuple[str, str]] = []

    class Recording(LocalJobFolder):
        def put(self, item: OutgoingInstance, path: str) -> None:
            calls.append(("put", path))
            super().put(item, path)

        def write_marker(self, path: str) -> None:
            calls.append(("marker", path))
            assert not (out / "j1").exists()  # nothing visible under the job's name yet
            super().write_marker(path)

        def rename(self, old: str, new: str) -> None:
            calls.append(("rename", new))
            super().rename(old, new)

    job = shipment(small, job_id="j1")
    plan = staging.plan_job(job, "")
    staging.deliver(Recording(), str(out), plan, job)

    kinds = [kind for kind, _ in calls]
    assert kinds == ["put"] * 6 + ["marker", "rename"]
    assert all(path.startswith(str(out / ".j1.partial") + "/") for _, path in calls[:-1])
    assert calls[-1] == ("rename", str(out / "j1"))
    assert_delivered(out / "j1", job)


def test_file_filter_excludes_and_says_so(out: Path, small: list[Path]) -> None:
    job = shipment(small, job_id="f1")
    left_out = job.instances[0].series_uid
    sender = folder_sender(out, file_filter=f" {left_out}#* , *.nothing")

    report = sender.send(job)

    kept = [item for item in job.instances if item.series_uid != left_out]
    assert len(kept) == 3
    assert sorted(os.listdir(out / "f1")) == sorted([i.export_name for i in kept] + [".complete"])
    by_uid = {r.sop_instance_uid: r for r in report.results}
    assert len(by_uid) == 6
    for item in job.instances:
        result = by_uid[item.sop_instance_uid]
        assert result.status == "sent"
        if item.series_uid == left_out:
            assert "excluded by file_filter" in result.message
        else:
            assert result.message == ""
    assert any("3 of 6" in note for note in report.notes)


def test_a_filter_that_excludes_everything_writes_no_folder(out: Path, small: list[Path]) -> None:
    report = folder_sender(out, file_filter="*.dcm").send(shipment(small, job_id="none"))
    assert os.listdir(out) == []
    assert {r.status for r in report.results} == {"sent"}
    assert all("excluded by file_filter" in r.message for r in report.results)


def test_retry_after_a_partial_attempt_delivers_the_whole_job(out: Path, small: list[Path]) -> None:
    job = shipment(small, job_id="r1")
    leftover = out / ".r1.partial"
    leftover.mkdir()
    first = job.instances[0]
    (leftover / first.export_name).write_bytes(first.path.read_bytes()[:100])  # cut short
    (leftover / "stray.tmp").write_bytes(b"x")

    report = folder_sender(out).send(job)

    assert os.listdir(out) == ["r1"]
    assert_delivered(out / "r1", job)
    assert any("earlier attempt" in note for note in report.notes)


def test_sending_a_job_again_replaces_the_complete_copy(out: Path, small: list[Path]) -> None:
    job = shipment(small, job_id="twice")
    sender = folder_sender(out)
    sender.send(job)
    (out / "twice" / "reader-note.txt").write_text("seen")

    report = sender.send(job)

    assert os.listdir(out) == ["twice"]
    assert_delivered(out / "twice", job)
    assert any("replaced" in note for note in report.notes)


def test_cancel_stops_without_leaving_anything(out: Path, small: list[Path]) -> None:
    job = shipment(small, job_id="c1")
    job.cancel.set()
    with pytest.raises(SendFailed, match="cancelled"):
        folder_sender(out).send(job)
    assert os.listdir(out) == []


def test_a_folder_that_cannot_exist_is_unreachable(tmp_path: Path, small: list[Path]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    sender = folder_sender(blocker / "out")

    with pytest.raises(TargetUnreachable, match="a part of its path is a file"):
        sender.send(shipment(small))
    verdict = sender.probe()
    assert not verdict.ok
    assert str(blocker / "out") in verdict.message

    with pytest.raises(TargetUnreachable, match="is a file, not a folder"):
        folder_sender(blocker).send(shipment(small))


def test_a_missing_folder_is_not_created(tmp_path: Path, small: list[Path]) -> None:
    sender = folder_sender(tmp_path / "mnt" / "share")
    with pytest.raises(TargetUnreachable, match="does not exist"):
        sender.send(shipment(small))
    assert not (tmp_path / "mnt").exists()
    assert "mount point" in sender.probe().message


def test_probe_writes_and_removes_a_file_and_reports_free_space(out: Path) -> None:
    verdict = folder_sender(out).probe()
    assert verdict.ok, verdict.message
    assert "writable" in verdict.message
    assert "GiB free" in verdict.message
    assert verdict.details["free_bytes"] > 0
    assert os.listdir(out) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, when this machine lets us mount one."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            "cannot mount a small tmpfs to fill up (needs root and CAP_SYS_ADMIN): "
            + (result.stderr.strip() or f"mount exited {result.returncode}")
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_fails_the_job_and_leaves_nothing_complete(
    tiny_disk: Path, tmp_path: Path, small: list[Path]
) -> None:
    big = make_ct_series(tmp_path / "ct", 4, rows=512, columns=512)  # ~2 MiB for 1 MiB of disk
    sender = folder_sender(tiny_disk)

    with pytest.raises(SendFailed, match="No space left") as failure:
        sender.send(shipment(big, job_id="big"))

    assert "nothing was marked complete" in str(failure.value)
    leftovers = [Path(root) / name for root, _, files in os.walk(tiny_disk) for name in files]
    assert not any(path.name == ".complete" for path in leftovers)
    assert not (tiny_disk / "big").exists()
    assert os.listdir(tiny_disk) == []  # the partial copy was removed, freeing the space

    small_job = shipment(small, job_id="after")
    sender.send(small_job)
    assert_delivered(tiny_disk / "after", small_job)
