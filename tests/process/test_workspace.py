"""Run folders: inputs linked from the spool with their .tags, chain hand-over, outputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from mercury.process.workspace import (
    InputFile,
    WorkspaceError,
    collect_output,
    hand_over,
    instance_tags,
    make_run_folder,
    retain_inputs,
    stage_inputs,
)
from mercury.store.models import InstanceRow
from mercury.store.spool import Spool
from tests.helpers import make_ct_series, make_small_images

TASK: dict[str, Any] = {
    "id": "job1",
    "info": {},
    "dispatch": {},
    "process": {},
    "study": {},
    "nomad_info": None,
}


def spool_files(spool: Spool, paths: list[Path]) -> list[InstanceRow]:
    """Put DICOM files where the receiver would, and the index rows that describe them."""
    rows = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        relative = Spool.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        destination = spool.absolute(relative)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        rows.append(
            InstanceRow(
                sop_instance_uid=ds.SOPInstanceUID,
                series_uid=ds.SeriesInstanceUID,
                study_uid=ds.StudyInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                path=relative,
                size=destination.stat().st_size,
                calling_ae="MODALITY",
                called_ae="MERCURY",
                peer_host="10.0.0.5",
                association_id="a1",
                received_at=datetime.now(UTC),
            )
        )
    return rows


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return spool


@pytest.fixture
def ct_inputs(tmp_path: Path, spool: Spool) -> list[InputFile]:
    paths = make_ct_series(tmp_path / "source", 3, rows=32, columns=32)
    return [InputFile.from_row(row, spool) for row in spool_files(spool, paths)]


def test_run_folder_layout(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "work", "job1", 2)
    assert run.root == tmp_path / "work" / "job1" / "2"
    assert run.logs.is_dir()
    step = run.step(1)
    assert step.root == run.root / "step-1"
    assert step.in_dir.is_dir()
    assert step.out_dir.is_dir()
    assert step.log_path == run.logs / "step-1.log"
    (step.out_dir / "left-over").write_text("x")
    again = make_run_folder(tmp_path / "work", "job1", 2)  # a crashed attempt is cleared
    assert not (again.root / "step-1").exists()
    with pytest.raises(WorkspaceError):
        make_run_folder(tmp_path / "work", "../escape", 1)


def test_inputs_are_hard_links_with_tags(tmp_path: Path, ct_inputs: list[InputFile]) -> None:
    step = make_run_folder(tmp_path / "work", "job1", 1).step(0)
    staged = stage_inputs(step, ct_inputs, TASK, additional_tags={"PixelSpacing": ""})
    assert (staged.files, staged.linked, staged.copied) == (3, 3, 0)
    for item in ct_inputs:
        name = f"{item.series_uid}#{item.sop_instance_uid}.dcm"
        staged_file = step.in_dir / name
        assert staged_file.stat().st_ino == item.path.stat().st_ino
        assert not staged_file.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        tags = json.loads((step.in_dir / name.replace(".dcm", ".tags")).read_text())
        assert tags["SOPInstanceUID"] == item.sop_instance_uid
        assert tags["SeriesInstanceUID"] == item.series_uid
        assert tags["SeriesDescription"] == "CT Thorax 1mm"
        assert tags["Modality"] == "CT"
        assert tags["PatientName"] == "Test^Patient"
        assert tags["MediaStorageSOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
        assert tags["PixelSpacing"] == "0.7\\0.7"
        assert tags["SenderAddress"] == "10.0.0.5"
        assert tags["SenderAET"] == "MODALITY"
        assert tags["ReceiverAET"] == "MERCURY"
    assert json.loads((step.in_dir / "task.json").read_text()) == TASK
    assert len(list(step.in_dir.iterdir())) == 2 * 3 + 1
    instance_numbers = sorted(
        json.loads(path.read_text())["InstanceNumber"] for path in step.in_dir.glob("*.tags")
    )
    assert instance_numbers == ["1", "2", "3"]


def test_tags_of_small_files_and_large_headers(tmp_path: Path, spool: Spool) -> None:
    small = make_small_images(tmp_path / "small", 1, size=8)
    big = make_ct_series(tmp_path / "big", 1, rows=8, columns=8)[0]
    ds = pydicom.dcmread(big)
    block = ds.private_block(0x0009, "MERCURY TEST", create=True)
    block.add_new(0x10, "OB", b"\0" * 200_000)  # the header outgrows the first read
    ds.save_as(big)
    rows = spool_files(spool, [*small, big])
    small_tags, big_tags = (instance_tags(InputFile.from_row(row, spool), {}) for row in rows)
    assert small_tags["Modality"] == "OT"
    assert big_tags["SliceThickness"] == "1.0"  # group 0018: after the large private element
    assert big_tags["InstanceNumber"] == "1"


def test_unreadable_instance_is_an_error(tmp_path: Path, ct_inputs: list[InputFile]) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x01")
    item = InputFile("1.2.3", "1.2.4", broken, "1.2.840.10008.1.2.1")
    with pytest.raises(WorkspaceError, match="cannot read the tags"):
        instance_tags(item, {})


@pytest.mark.parametrize("series_uid", ["1.2/3", ".1.2"])
def test_unsafe_names_are_refused(series_uid: str) -> None:
    with pytest.raises(WorkspaceError, match="refusing"):
        _ = InputFile("1.2.3", series_uid, Path("/x"), "1.2.840.10008.1.2.1").name


@pytest.fixture
def other_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on another file system: a tmpfs when we may mount one; otherwise hard
    links are made to fail with EXDEV, which is what the kernel answers across them."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True, check=False).returncode == 0
    if not mounted:

        def cross_device(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

        monkeypatch.setattr(os, "link", cross_device)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def test_copies_across_file_systems(other_filesystem: Path, ct_inputs: list[InputFile]) -> None:
    step = make_run_folder(other_filesystem, "job1", 1).step(0)
    staged = stage_inputs(step, ct_inputs, TASK)
    assert (staged.linked, staged.copied) == (0, 3)
    for item in ct_inputs:
        copy = step.in_dir / item.name
        assert (copy.stat().st_dev, copy.stat().st_ino) != (
            item.path.stat().st_dev,
            item.path.stat().st_ino,
        )
        assert copy.read_bytes() == item.path.read_bytes()


def test_chain_hand_over(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "work", "job1", 1)
    first, second = run.step(0), run.step(1)
    (first.out_dir / "a#1.dcm").write_bytes(b"one")
    (first.out_dir / "nested").mkdir()
    (first.out_dir / "nested" / "b#2.dcm").write_bytes(b"two")
    (first.out_dir / "result.json").write_text("{}")
    (first.out_dir / "task.json").write_text('{"id": "stale"}')
    next_task = {**TASK, "process": {"module_name": "second"}}
    assert hand_over(first, second, next_task) == 4
    assert list(first.out_dir.iterdir()) == []
    assert (second.in_dir / "a#1.dcm").read_bytes() == b"one"
    assert (second.in_dir / "nested" / "b#2.dcm").read_bytes() == b"two"
    assert (second.in_dir / "result.json").exists()
    assert json.loads((second.in_dir / "task.json").read_text()) == next_task


def test_retain_inputs_adds_the_originals(tmp_path: Path, ct_inputs: list[InputFile]) -> None:
    out = make_run_folder(tmp_path / "work", "job1", 1).step(0).out_dir
    result_name = f"{generate_uid()}#{generate_uid()}.dcm"
    (out / result_name).write_bytes(b"result")
    (out / ct_inputs[0].name).write_bytes(b"module's own version")
    assert retain_inputs(out, ct_inputs) == 2
    assert (out / ct_inputs[0].name).read_bytes() == b"module's own version"
    for item in ct_inputs[1:]:
        assert (out / item.name).stat().st_ino == item.path.stat().st_ino
    assert len(list(out.glob("*.dcm"))) == 4


def test_collect_output(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path / "work", "job1", 1).step(0).out_dir
    (out / "series" / "deeper").mkdir(parents=True)
    (out / "b.dcm").write_bytes(b"b")
    (out / "series" / "a.dcm").write_bytes(b"a")
    (out / "series" / "deeper" / "c.dcm").write_bytes(b"c")
    (out / "report.pdf").write_bytes(b"%PDF")
    (out / "leak.dcm").symlink_to("/etc/passwd")
    (out / "result.json").write_text('{"__mercure_routing": {"target": "pacs"}}')
    output = collect_output(out)
    assert [path.relative_to(out).as_posix() for path in output.files] == [
        "b.dcm",
        "series/a.dcm",
        "series/deeper/c.dcm",
    ]
    assert output.skipped == ("leak.dcm",)
    assert output.result.routing is not None
    assert output.result.routing.targets == ("pacs",)
    (tmp_path / "empty").mkdir()
    empty = collect_output(tmp_path / "empty")
    assert empty.files == ()
    assert empty.result.data is None
