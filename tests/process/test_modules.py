"""Modules written for mercure's contract, run unmodified through the local runner on real
DICOM input: the run folder, task.json, the runner and the output all meet here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from mercury.config.models import Module, Rule
from mercury.process.base import RunResult, RunSpec
from mercury.process.result import apply_routing
from mercury.process.runners.local import LocalRunner
from mercury.process.taskfile import build_task
from mercury.process.workspace import (
    InputFile,
    RunFolder,
    RunOutput,
    StepFolder,
    collect_output,
    hand_over,
    make_run_folder,
    retain_inputs,
    stage_inputs,
)
from mercury.store.spool import Spool
from tests.helpers import make_ct_series
from tests.process.test_workspace import spool_files

MODULES = Path(__file__).parent / "modules"


def _module(script: str, settings: dict[str, Any] | None = None) -> Module:
    return Module(
        runner="local", command=["python", str(MODULES / script)], settings=settings or {}
    )


def _inputs(tmp_path: Path, paths: list[Path]) -> list[InputFile]:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return [InputFile.from_row(row, spool) for row in spool_files(spool, paths)]


def _ct_inputs(tmp_path: Path, count: int = 2) -> list[InputFile]:
    return _inputs(tmp_path, make_ct_series(tmp_path / "ct", count, rows=24, columns=20))


def _jpeg2000_inputs(tmp_path: Path) -> list[InputFile]:
    return _inputs(tmp_path, [Path(str(get_testdata_file("JPEG2000.dcm")))])


def _task(rule: Rule, step: int, modules: dict[str, Module], inputs: list[InputFile]) -> Any:
    name = rule.processing_module[step]
    return build_task(
        job_id="job1",
        rule_name="test_rule",
        rule=rule,
        triggered_rules=["test_rule"],
        uid=inputs[0].series_uid,
        uid_type="series",
        tags={"SeriesInstanceUID": inputs[0].series_uid},
        module_name=name,
        module=modules[name],
        step=step,
    )


def _run_step(
    run: RunFolder, index: int, module: Module, timeout: float = 60
) -> tuple[StepFolder, RunResult]:
    step = run.step(index)
    spec = RunSpec(
        run_id=f"job1-{index}",
        job_id="job1",
        step=index,
        module_name=f"step{index}",
        module=module,
        in_dir=step.in_dir,
        out_dir=step.out_dir,
        persistence_dir=None,
        log_path=step.log_path,
        timeout=timeout,
    )
    result = LocalRunner(run.root.parent.parent).start(spec).wait(timeout)
    return step, result


def run_module(
    tmp_path: Path,
    module: Module,
    inputs: list[InputFile],
    rule_settings: dict[str, Any] | None = None,
    timeout: float = 60,
) -> tuple[RunResult, RunOutput, StepFolder]:
    """One module on the inputs, as the processor runs a single-step job."""
    rule = Rule(
        rule="True",
        action="process",
        processing_module=["module"],
        processing_settings=rule_settings or {},
    )
    run = make_run_folder(tmp_path / "work", "job1", 1)
    stage_inputs(run.step(0), inputs, _task(rule, 0, {"module": module}, inputs))
    step, result = _run_step(run, 0, module, timeout)
    return result, collect_output(step.out_dir), step


def box_blur(image: np.ndarray, size: int) -> np.ndarray:
    pad = size // 2
    padded = np.pad(image.astype(np.float64), pad, mode="edge")
    rows, columns = image.shape
    total = sum(
        padded[dy : dy + rows, dx : dx + columns] for dy in range(size) for dx in range(size)
    )
    return np.asarray(total) / (size * size)


@pytest.mark.parametrize(
    ("module_settings", "rule_settings", "size"),
    [({"sigma": 1}, None, 3), ({"sigma": 1}, {"kernel": 5}, 5)],
)
def test_blur(
    tmp_path: Path,
    module_settings: dict[str, Any],
    rule_settings: dict[str, Any] | None,
    size: int,
) -> None:
    inputs = _ct_inputs(tmp_path)
    module = _module("blur.py", module_settings)
    result, output, step = run_module(tmp_path, module, inputs, rule_settings)
    assert result.status == "succeeded", step.log_path.read_text()
    assert f"{size}x{size} box" in step.log_path.read_text()
    originals = {item.sop_instance_uid: pydicom.dcmread(item.path) for item in inputs}
    by_number = {int(ds.InstanceNumber): ds for ds in originals.values()}
    blurred = [pydicom.dcmread(path) for path in output.files]
    assert len(blurred) == len(inputs)
    new_series = {ds.SeriesInstanceUID for ds in blurred}
    assert len(new_series) == 1
    assert new_series.isdisjoint({item.series_uid for item in inputs})
    new_sops = {ds.SOPInstanceUID for ds in blurred}
    assert len(new_sops) == len(inputs)
    assert new_sops.isdisjoint(originals)
    for path, ds in zip(output.files, blurred, strict=True):
        assert path.name == f"{ds.SeriesInstanceUID}#{ds.SOPInstanceUID}.dcm"
        assert ds.SeriesDescription == "CT Thorax 1mm blurred"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        original = by_number[int(ds.InstanceNumber)]
        assert ds.StudyInstanceUID == original.StudyInstanceUID
        before = original.pixel_array
        after = ds.pixel_array
        assert after.dtype == before.dtype
        assert not np.array_equal(after, before)
        np.testing.assert_allclose(after, box_blur(before, size), atol=1)
        # Smoothed: neighbouring pixels differ less than before.
        assert (
            np.abs(np.diff(after.astype(float))).mean()
            < np.abs(np.diff(before.astype(float))).mean()
        )


def test_decompress(tmp_path: Path) -> None:
    inputs = _jpeg2000_inputs(tmp_path) + _ct_inputs(tmp_path / "ct", count=1)
    result, output, step = run_module(tmp_path, _module("decompress.py"), inputs)
    assert result.status == "succeeded", step.log_path.read_text()
    assert sorted(path.name for path in output.files) == sorted(item.name for item in inputs)
    for item in inputs:
        original = pydicom.dcmread(item.path)
        written = pydicom.dcmread(step.out_dir / item.name)
        assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert written.SOPInstanceUID == original.SOPInstanceUID
        np.testing.assert_array_equal(written.pixel_array, original.pixel_array)
    compressed = pydicom.dcmread(inputs[0].path)
    assert compressed.file_meta.TransferSyntaxUID.is_compressed


def test_chain_decompress_then_blur_retaining_inputs(tmp_path: Path) -> None:
    inputs = _jpeg2000_inputs(tmp_path)
    modules = {"decompress": _module("decompress.py"), "blur": _module("blur.py")}
    rule = Rule(
        rule="True",
        action="process",
        processing_module=["decompress", "blur"],
        processing_settings=[{}, {"kernel": 3, "suffix": " (smoothed)"}],
        processing_retain_images=True,
    )
    run = make_run_folder(tmp_path / "work", "job1", 1)
    stage_inputs(run.step(0), inputs, _task(rule, 0, modules, inputs))
    first, result = _run_step(run, 0, modules["decompress"])
    assert result.status == "succeeded", first.log_path.read_text()
    hand_over(first, run.step(1), _task(rule, 1, modules, inputs))
    second, result = _run_step(run, 1, modules["blur"])
    assert result.status == "succeeded", second.log_path.read_text()
    assert retain_inputs(second.out_dir, inputs) == 1
    files = collect_output(second.out_dir).files
    assert len(files) == 2
    datasets = {path.name: pydicom.dcmread(path) for path in files}
    original = datasets.pop(inputs[0].name)
    assert original.file_meta.TransferSyntaxUID.is_compressed  # the original, retained
    (blurred,) = datasets.values()
    assert blurred.SeriesDescription.endswith(" (smoothed)")
    assert blurred.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_allclose(blurred.pixel_array, box_blur(original.pixel_array, 3), atol=1)


def test_route_and_notify(tmp_path: Path) -> None:
    inputs = _ct_inputs(tmp_path)
    settings = {
        "routing": {"target": ["ai_store", "X"]},
        "notification": {"text": "2 nodules", "requested": True},
    }
    result, output, _ = run_module(tmp_path, _module("route_and_notify.py"), inputs, settings)
    assert result.status == "succeeded"
    assert len(output.files) == len(inputs)
    assert output.result.problems == ()
    assert output.result.data is not None
    assert output.result.data["module"] == "module"
    assert output.result.notification is not None
    assert output.result.notification.text == "2 nodules"
    assert output.result.notification.requested
    rule = Rule(
        rule="True",
        action="both",
        processing_module=["module"],
        target=["pacs"],
        dynamic_routing=True,
        dynamic_routing_allowed_targets=["ai_store"],
    )
    decision = apply_routing(rule, output.result.routing)
    assert decision.targets == ("ai_store",)
    assert decision.messages == (
        "module asked for target X, which is not in dynamic_routing_allowed_targets: ignored",
    )


def test_malformed_result_is_reported_not_fatal(tmp_path: Path) -> None:
    inputs = _ct_inputs(tmp_path, count=1)
    settings = {"raw_result": '{"__mercure_routing": {"target": '}
    result, output, _ = run_module(tmp_path, _module("route_and_notify.py"), inputs, settings)
    assert result.status == "succeeded"
    assert len(output.files) == 1
    assert output.result.routing is None
    assert "not valid JSON" in output.result.problems[0]


def test_fail_hang_and_silent(tmp_path: Path) -> None:
    inputs = _ct_inputs(tmp_path, count=1)
    failed, output, step = run_module(tmp_path / "fail", _module("fail.py"), inputs)
    assert (failed.status, failed.exit_code) == ("failed", 3)
    assert "model file missing" in step.log_path.read_text()
    assert output.files == ()
    hung, _, _ = run_module(tmp_path / "hang", _module("hang.py"), inputs, timeout=0.5)
    assert hung.status == "timeout"
    silent, output, _ = run_module(tmp_path / "silent", _module("silent.py"), inputs)
    assert silent.status == "succeeded"
    assert output.files == ()
    assert output.result.data is None
    assert output.result.problems == ()


def test_modules_are_plain_scripts() -> None:
    """They import only the standard library, pydicom and numpy: what a mercure image has."""
    allowed = {"pydicom", "numpy"} | set(sys.stdlib_module_names)
    for script in MODULES.glob("*.py"):
        for line in script.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]):
                assert words[1].split(".")[0] in allowed, f"{script.name}: {line}"
