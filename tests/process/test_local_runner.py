"""The local runner: what a module sees, exit codes and logs, stopping whole process trees,
and cleaning up after a crash."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from mercury.config.models import Module
from mercury.process.base import RunnerError, RunSpec
from mercury.process.runners.local import (
    PID_FILE,
    LocalRunner,
    expand_arguments,
    module_environment,
)
from mercury.process.workspace import StepFolder, make_run_folder
from tests.helpers import wait_for

MODULES = Path(__file__).parent / "modules"
PYTHON = sys.executable


def _spec(
    step: StepFolder,
    command: list[str],
    *,
    job_id: str = "job1",
    environment: dict[str, str] | None = None,
    gpus: tuple[str, ...] = (),
    persistence: Path | None = None,
    timeout: float | None = 30,
) -> RunSpec:
    module = Module(runner="local", command=command, environment=environment or {})
    return RunSpec(
        run_id=f"{job_id}-0",
        job_id=job_id,
        step=0,
        module_name="test-module",
        module=module,
        in_dir=step.in_dir,
        out_dir=step.out_dir,
        persistence_dir=persistence,
        log_path=step.log_path,
        timeout=timeout,
        gpus=gpus,
    )


def _step(tmp_path: Path, job_id: str = "job1") -> StepFolder:
    return make_run_folder(tmp_path / "work", job_id, 1).step(0)


def _running(pid: int) -> bool:
    """A process exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2] not in "ZX"


def _pids(step: StepFolder) -> dict[str, int]:
    path = step.out_dir / "pids.json"
    wait_for(path.exists, timeout=20, what="the module's pids.json")
    pids: dict[str, int] = json.loads(path.read_text())
    return pids


def test_expand_arguments() -> None:
    variables = {"MERCURE_IN_DIR": "/in", "MERCURE_OUT_DIR": "/out"}
    arguments = ["$MERCURE_IN_DIR", "${MERCURE_OUT_DIR}/x", "$HOME", "$MERCURE_IN_DIRX", "a$b", "$"]
    assert expand_arguments(arguments, variables) == [
        "/in",
        "/out/x",
        "$HOME",
        "$MERCURE_IN_DIRX",
        "a$b",
        "$",
    ]


def test_module_sees_its_folders_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCURY_DATABASE_PASSWORD", "secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    step = _step(tmp_path)
    persistence = tmp_path / "persistence" / "test-module"
    persistence.mkdir(parents=True)
    command = ["python", str(MODULES / "dump_env.py"), "$MERCURE_IN_DIR", "${MONAI_OUTPUTPATH}/x"]
    command += ["$HOME", "$MODULE_PERSISTENCE_DIR", "it's; $(not a shell)"]
    spec = _spec(
        step,
        command,
        environment={"MODEL": "v2", "MERCURE_IN_DIR": "/elsewhere"},
        gpus=("1", "3"),
        persistence=persistence,
    )
    result = LocalRunner(tmp_path / "work").start(spec).wait(30)
    assert result.status == "succeeded", step.log_path.read_text()
    assert result.exit_code == 0
    seen = json.loads((step.out_dir / "env.json").read_text())
    env = seen["env"]
    assert seen["cwd"] == str(step.root)
    assert seen["argv"][1:] == [
        str(step.in_dir),
        f"{step.out_dir}/x",
        "$HOME",
        str(persistence),
        "it's; $(not a shell)",
    ]
    for name in ("MERCURE_IN_DIR", "MONAI_INPUTPATH", "HOLOSCAN_INPUT_PATH"):
        assert env[name] == str(step.in_dir)
    for name in ("MERCURE_OUT_DIR", "MONAI_OUTPUTPATH", "HOLOSCAN_OUTPUT_PATH"):
        assert env[name] == str(step.out_dir)
    assert env["MODULE_PERSISTENCE_DIR"] == str(persistence)
    assert env["MODEL"] == "v2"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert env["LANG"] == "C.UTF-8"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(PYTHON).parent)
    assert "MERCURY_DATABASE_PASSWORD" not in env
    assert not (step.root / PID_FILE).exists()  # removed once the run ended


def test_no_gpu_means_none_visible(tmp_path: Path) -> None:
    spec = _spec(_step(tmp_path), ["true"])
    env = module_environment(spec, inherited={"PATH": "/usr/bin", "USER": "mercury"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "MODULE_PERSISTENCE_DIR" not in env
    assert "USER" not in env
    assert env["PATH"] == f"{Path(PYTHON).parent}{os.pathsep}/usr/bin"


def test_exit_code_and_log(tmp_path: Path) -> None:
    step = _step(tmp_path)
    spec = _spec(step, [PYTHON, str(MODULES / "fail.py")])
    result = LocalRunner(tmp_path / "work").start(spec).wait(30)
    assert (result.status, result.exit_code, result.message) == ("failed", 3, "exit code 3")
    log = step.log_path.read_text()
    assert "starting" in log
    assert "cannot process these images: model file missing" in log


def test_silent_module_succeeds(tmp_path: Path) -> None:
    step = _step(tmp_path)
    result = LocalRunner(tmp_path / "work").start(_spec(step, [PYTHON, str(MODULES / "silent.py")]))
    assert result.wait(30).status == "succeeded"
    assert list(step.out_dir.iterdir()) == []


def test_killed_by_a_signal(tmp_path: Path) -> None:
    step = _step(tmp_path)
    spec = _spec(step, [PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    result = LocalRunner(tmp_path / "work").start(spec).wait(30)
    assert (result.status, result.exit_code) == ("failed", None)
    assert result.message == "killed by signal SIGKILL"


def test_timeout_stops_the_whole_tree(tmp_path: Path) -> None:
    step = _step(tmp_path)
    # Both processes ignore SIGTERM: only the SIGKILL after the grace period ends them.
    spec = _spec(step, [PYTHON, str(MODULES / "tree.py"), "ignore-term"])
    handle = LocalRunner(tmp_path / "work", grace=0.5).start(spec)
    pids = _pids(step)
    assert _running(pids["parent"])
    assert _running(pids["child"])
    result = handle.wait(0.1)
    assert result.status == "timeout"
    assert result.exit_code is None
    assert result.message == "stopped after the 0.1 s timeout"
    wait_for(lambda: not _running(pids["child"]), timeout=10, what="the child to be gone")
    assert not _running(pids["parent"])
    assert handle.wait(5) is result  # asking again gives the same answer


def test_leftovers_are_killed_when_the_module_exits(tmp_path: Path) -> None:
    step = _step(tmp_path)
    code = (
        "import json, os, subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)']); "
        "open(os.environ['MERCURE_OUT_DIR'] + '/pids.json', 'w').write("
        "json.dumps({'child': child.pid}))"
    )
    result = LocalRunner(tmp_path / "work").start(_spec(step, [PYTHON, "-c", code])).wait(30)
    assert result.status == "succeeded"
    pid = json.loads((step.out_dir / "pids.json").read_text())["child"]
    wait_for(lambda: not _running(pid), timeout=10, what="the left-over child to be gone")


def test_cancel_from_another_thread(tmp_path: Path) -> None:
    step = _step(tmp_path)
    handle = LocalRunner(tmp_path / "work").start(_spec(step, [PYTHON, str(MODULES / "hang.py")]))

    def cancel_once_working() -> None:
        wait_for(lambda: "working" in step.log_path.read_text(), timeout=20, what="the module")
        handle.cancel()

    canceller = threading.Thread(target=cancel_once_working)
    canceller.start()
    result = handle.wait(None)
    canceller.join()
    assert (result.status, result.message) == ("cancelled", "cancelled")
    assert not _running(handle.pgid)


def test_cancel_before_wait(tmp_path: Path) -> None:
    step = _step(tmp_path)
    handle = LocalRunner(tmp_path / "work").start(_spec(step, [PYTHON, str(MODULES / "hang.py")]))
    handle.cancel()
    assert handle.wait(30).status == "cancelled"
    handle.cancel()  # after the end: nothing to do


def test_missing_command(tmp_path: Path) -> None:
    step = _step(tmp_path)
    runner = LocalRunner(tmp_path / "work")
    with pytest.raises(RunnerError, match="command 'no-such-module-binary' not found"):
        runner.start(_spec(step, ["no-such-module-binary", "$MERCURE_IN_DIR"]))
    script = tmp_path / "module.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(RunnerError, match="not found or not executable"):
        runner.start(_spec(step, [str(script)]))
    docker = Module(docker_tag="org/module:1")
    spec = _spec(step, ["true"])
    with pytest.raises(RunnerError, match="not a local module"):
        runner.start(replace(spec, module=docker))


def test_orphans_after_a_crash(tmp_path: Path) -> None:
    step = _step(tmp_path, "job-crashed")
    other = _step(tmp_path, "job-other")
    runner = LocalRunner(tmp_path / "work", grace=2)
    handle = runner.start(_spec(step, [PYTHON, str(MODULES / "tree.py")], job_id="job-crashed"))
    keep = runner.start(_spec(other, [PYTHON, str(MODULES / "hang.py")], job_id="job-other"))
    pids = _pids(step)
    assert (step.root / PID_FILE).exists()
    del handle  # the processor crashed: nobody waits on this run any more

    restarted = LocalRunner(tmp_path / "work", grace=2)
    assert restarted.remove_orphans({"mercury.job": "job-unknown"}) == []
    removed = restarted.remove_orphans({"mercury.job": "job-crashed"})
    assert len(removed) == 1
    assert "job job-crashed" in removed[0]
    assert f"process group {pids['parent']}" in removed[0]
    wait_for(lambda: not _running(pids["child"]), timeout=10, what="the orphan's child")
    assert not _running(pids["parent"])
    assert not (step.root / PID_FILE).exists()
    # The other job's run was not touched.
    assert (other.root / PID_FILE).exists()
    assert _running(keep.pgid)
    keep.cancel()
    assert keep.wait(30).status == "cancelled"
    assert restarted.remove_orphans({}) == []
