"""Processing end to end with real processes: storescu -> `mercury serve` -> modules
written for mercure's contract (local runner) -> dispatch to DCMTK's storescp. Each series
of one send is picked by its own rule, so one mercury process serves every case."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import create_engine, select

from mercury.store.models import EventRow, JobRow
from tests.cli.test_cli import run
from tests.conftest import MercuryProcess, write_config
from tests.helpers import free_port, make_small_images, port_open, storescu, wait_for

MODULES = Path(__file__).parent / "modules"


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    received = tmp_path / "storescp"
    received.mkdir()
    proc = subprocess.Popen(
        ["storescp", "-aet", "PACS", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), 30, "storescp to listen")
        yield port, received
    finally:
        proc.terminate()
        proc.wait(30)


def _module(script: str, **extra: str) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in extra.items())
    return (
        f'{{runner: local, command: "python {MODULES / script}"{", " + fields if fields else ""}}}'
    )


def _config(tmp_path: Path, port: int, pacs_port: int, extra: str = "") -> Path:
    config = write_config(tmp_path, port)
    config.write_text(
        config.read_text()
        + f"""
processing: {{persistence_folder: {tmp_path / "persistence"}, lease: 2}}
targets:
  pacs: {{target_type: dicom, ip: 127.0.0.1, port: {pacs_port}, aet_target: PACS}}
  other: {{target_type: folder, folder: "{tmp_path / "other"}"}}
  archive: {{target_type: folder, folder: "{tmp_path / "archive"}"}}
modules:
  blur: {_module("blur.py", settings="{kernel: 5}")}
  decompress: {_module("decompress.py")}
  router: {_module("route_and_notify.py")}
  fail: {_module("fail.py")}
  hang: {_module("hang.py", timeout="2")}
  sleeper: {_module("hang.py")}
  hang_once: {_module("hang_once.py", requires_persistence="true")}
rules:
{extra}
"""
    )
    (tmp_path / "other").mkdir(exist_ok=True)
    (tmp_path / "archive").mkdir(exist_ok=True)
    return config


def _rule(index: int, body: str) -> str:
    return (
        f"  r{index}:\n    rule: \"tags.SeriesDescription == 'Small series {index}'\"\n"
        f"    series_complete_on: [association_end]\n{body}"
    )


def _jobs(tmp_path: Path, kind: str = "process") -> dict[str, JobRow]:
    engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    try:
        with engine.connect() as conn:
            return {j.rule: j for j in conn.execute(select(JobRow).where(JobRow.kind == kind))}
    finally:
        engine.dispose()


def _events(tmp_path: Path, kind: str) -> list[EventRow]:
    engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(EventRow).where(EventRow.kind == kind)))
    finally:
        engine.dispose()


def _alive(pid: int) -> bool:
    """Running (a killed process whose new parent does not reap it stays a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _state(tmp_path: Path, rule: str, states: tuple[str, ...]) -> JobRow | None:
    job = _jobs(tmp_path).get(rule)
    return job if job is not None and job.state in states else None


def test_modules_end_to_end(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    pacs_port, received = storescp
    port = free_port()
    rules = "\n".join(
        [
            _rule(0, "    action: both\n    processing_module: blur\n    target: pacs\n"),
            _rule(
                1,
                "    action: both\n    processing_module: [decompress, blur]\n"
                "    processing_settings: [{}, {kernel: 3, suffix: ' chained'}]\n"
                "    processing_retain_images: true\n    target: pacs\n",
            ),
            _rule(2, "    action: process\n    processing_module: fail\n"),
            _rule(3, "    action: process\n    processing_module: hang\n"),
            _rule(
                4,
                "    action: both\n    processing_module: router\n    target: pacs\n"
                "    dynamic_routing: true\n    dynamic_routing_allowed_targets: [other]\n"
                "    processing_settings: {routing: {target: other}}\n",
            ),
            _rule(
                5,
                "    action: both\n    processing_module: router\n    target: pacs\n"
                "    dynamic_routing: true\n    dynamic_routing_allowed_targets: [other]\n"
                "    processing_settings: {routing: {target: archive}}\n",
            ),
        ]
    )
    config = _config(tmp_path, port, pacs_port, rules)
    mercury = MercuryProcess(config, port)
    mercury.start()
    try:
        files = make_small_images(tmp_path / "img", 18, per_series=3, size=16)
        series = [files[i : i + 3] for i in range(0, 18, 3)]
        for batch in series:  # one association per series: each completes at its end
            assert storescu(batch, port).returncode == 0
        done = ("succeeded", "failed", "cancelled")
        for index in range(6):
            wait_for(lambda i=index: _state(tmp_path, f"r{i}", done), 90, f"job of rule r{index}")
        jobs = _jobs(tmp_path)

        # blur: a new series with new UIDs and smoothed pixels reaches the PACS
        assert jobs["r0"].state == "succeeded"
        wait_for(lambda: len(list(received.iterdir())) >= 3 + 6 + 3, 60, "dispatch to storescp")
        arrived = [pydicom.dcmread(p) for p in received.iterdir()]
        blurred = [ds for ds in arrived if ds.SeriesDescription.endswith(" blurred")]
        originals = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}
        assert len(blurred) == 3
        for ds in blurred:
            assert str(ds.SOPInstanceUID) not in originals
            assert str(ds.SeriesInstanceUID) != str(
                originals[next(iter(originals))].SeriesInstanceUID
            )
        source = pydicom.dcmread(series[0][0]).pixel_array.astype(float)
        assert (
            np.abs(np.diff(blurred[0].pixel_array.astype(float), axis=1)).mean()
            < np.abs(np.diff(source, axis=1)).mean()
        )

        # the chain with per-step settings, and the original images retained
        chained = [ds for ds in arrived if ds.SeriesDescription.endswith(" chained")]
        assert len(chained) == 3
        retained = {str(pydicom.dcmread(f).SOPInstanceUID) for f in series[1]}
        assert retained <= {str(ds.SOPInstanceUID) for ds in arrived}

        # a failing module: failed with the exit code, logs kept and shown
        assert jobs["r2"].state == "failed"
        assert "exit code 3" in (jobs["r2"].last_error or "")
        logs = run("jobs", "logs", jobs["r2"].id, "--config", str(config))
        assert "model file missing" in logs.stdout
        assert "exit code 3" in " ".join(logs.stdout.split())

        # a hung module is stopped by its timeout
        assert jobs["r3"].state == "failed"
        assert "timeout" in (jobs["r3"].last_error or "")

        # dynamic routing: an allowed target is honoured, a refused one is not
        assert jobs["r4"].state == "succeeded"
        wait_for(lambda: list((tmp_path / "other").glob("*/.complete")), 60, "the other target")
        assert jobs["r5"].state == "succeeded"
        assert "not in dynamic_routing_allowed_targets" in str(jobs["r5"].details)
        assert not list((tmp_path / "archive").iterdir())
    finally:
        mercury.stop()


def test_cancel_retry_and_crash_recovery(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    pacs_port, received = storescp
    port = free_port()
    rules = "\n".join(
        [
            _rule(0, "    action: process\n    processing_module: sleeper\n"),
            _rule(1, "    action: both\n    processing_module: hang_once\n    target: pacs\n"),
        ]
    )
    config = _config(tmp_path, port, pacs_port, rules)
    mercury = MercuryProcess(config, port)
    mercury.start()
    try:
        files = make_small_images(tmp_path / "img", 6, per_series=3, size=16)
        assert storescu(files[:3], port).returncode == 0
        assert storescu(files[3:], port).returncode == 0
        sleeper = wait_for(lambda: _state(tmp_path, "r0", ("running",)), 60, "sleeper running")
        marker = tmp_path / "persistence" / "hang_once" / "started"
        wait_for(marker.exists, 60, "hang_once to start its first run")

        # cancel a running module
        cancelled = run("jobs", "cancel", sleeper.id, "--config", str(config))
        assert cancelled.returncode == 0, cancelled.stderr
        wait_for(lambda: _state(tmp_path, "r0", ("cancelled",)), 30, "the cancel")

        # crash while hang_once runs: its process outlives mercury
        orphan = int(marker.read_text())
        mercury.kill()
        assert _alive(orphan)
        mercury.start()
        wait_for(lambda: _state(tmp_path, "r1", ("succeeded",)), 90, "the re-run after restart")
        assert not _alive(orphan)
        assert _events(tmp_path, "module.orphan_removed")
        assert _jobs(tmp_path)["r1"].attempts == 2
        wait_for(lambda: len(list(received.iterdir())) >= 3, 60, "the results at the PACS")

        # a cancelled job runs again on request
        assert run("jobs", "retry", sleeper.id, "--config", str(config)).returncode == 0
        wait_for(lambda: _state(tmp_path, "r0", ("running",)), 60, "the retried job")
    finally:
        mercury.stop()
