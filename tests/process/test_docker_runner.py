"""The docker runner against a real Docker Engine API (Podman's), through production code.

Every module here is a busybox shell script: the test image runs the script in the
module's SCRIPT environment variable.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.types
import pytest

from mercury.config.models import ProcessingConfig
from mercury.config.modules import Module
from mercury.process.base import RunnerError, RunSpec
from mercury.process.runners.docker import (
    DockerRunner,
    container_kwargs,
    container_user,
    gpu_environment,
    monai_command,
    run_result,
)
from tests.helpers import wait_for
from tests.process.podman import (
    BROKEN_IMAGE,
    BUSYBOX_IMAGE,
    MISSING_IMAGE,
    MONAI_IMAGE,
    PodmanService,
    podman,  # noqa: F401 (the session fixture)
    podman_missing,
)

_missing = podman_missing()
if _missing is not None:
    pytest.skip(_missing, allow_module_level=True)


def make_spec(
    folder: Path,
    script: str = "true",
    *,
    image: str = BUSYBOX_IMAGE,
    job_id: str | None = None,
    persistence: Path | None = None,
    allow_root: bool = False,
    gpus: tuple[str, ...] = (),
    runtime: str | None = None,
    **module_fields: Any,
) -> RunSpec:
    run_id = uuid.uuid4().hex[:12]
    run = folder / run_id
    (run / "in").mkdir(parents=True)
    (run / "out").mkdir()
    module = Module(
        docker_tag=image,
        environment={"SCRIPT": script, **module_fields.pop("environment", {})},
        **module_fields,
    )
    return RunSpec(
        run_id=run_id,
        job_id=job_id or f"job-{run_id}",
        step=0,
        module_name="test-module",
        module=module,
        in_dir=run / "in",
        out_dir=run / "out",
        persistence_dir=persistence,
        log_path=run / "module.log",
        timeout=module.timeout,
        gpus=gpus,
        runtime=runtime,
        allow_root=allow_root,
        labels={"mercury.owner": "tests"},
    )


@pytest.fixture
def runner(podman: PodmanService) -> DockerRunner:  # noqa: F811
    return DockerRunner(ProcessingConfig(docker_url=podman.url))


@pytest.fixture
def client(podman: PodmanService) -> Iterator[Any]:  # noqa: F811
    engine = podman.client()
    yield engine
    engine.close()


def containers_of(client: Any, spec: RunSpec) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"mercury.run={spec.run_id}"}))


def running(client: Any, spec: RunSpec) -> Any:
    found = containers_of(client, spec)
    return found[0] if found and found[0].status == "running" else None


# --- through the engine -------------------------------------------------------------------


def test_mounts_environment_user_and_output_ownership(
    runner: DockerRunner, client: Any, tmp_path: Path
) -> None:
    spec = make_spec(
        tmp_path,
        "env > /tmp/output/env.txt; id -u > /tmp/output/uid; id -g > /tmp/output/gid; "
        "ls /tmp/data > /tmp/output/ls.txt; cat /tmp/data/task.json > /tmp/output/copy.json",
        environment={"MODULE_SETTING": "42"},
    )
    (spec.in_dir / "task.json").write_text('{"id": "t"}')
    (spec.in_dir / "1.2.3#a.dcm").write_bytes(b"DICM")

    result = runner.start(spec).wait(60)

    assert (result.status, result.exit_code, result.monai) == ("succeeded", 0, False)
    out = spec.out_dir
    env = dict(
        line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["MERCURE_IN_DIR"] == env["MONAI_INPUTPATH"] == env["HOLOSCAN_INPUT_PATH"]
    assert env["MERCURE_IN_DIR"] == "/tmp/data"
    assert env["MERCURE_OUT_DIR"] == env["MONAI_OUTPUTPATH"] == env["HOLOSCAN_OUTPUT_PATH"]
    assert env["MERCURE_OUT_DIR"] == "/tmp/output"
    assert env["MODULE_SETTING"] == "42"
    assert "MODULE_PERSISTENCE_DIR" not in env
    assert (out / "ls.txt").read_text().split() == ["1.2.3#a.dcm", "task.json"]
    assert (out / "copy.json").read_text() == '{"id": "t"}'
    uid = int((out / "uid").read_text())
    gid = int((out / "gid").read_text())
    assert uid != 0
    assert f"{uid}:{gid}" == container_user(spec)
    # What the module wrote belongs to the user it ran as, and mercury can read it.
    assert (out / "env.txt").stat().st_uid == uid
    assert os.access(out / "env.txt", os.R_OK)
    assert containers_of(client, spec) == []  # removed after the run


def test_no_network_and_no_capabilities(runner: DockerRunner, tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        "ls /sys/class/net > /tmp/output/net; grep CapEff /proc/self/status > /tmp/output/cap",
    )
    assert runner.start(spec).wait(60).status == "succeeded"
    assert (spec.out_dir / "net").read_text().split() == ["lo"]
    assert (spec.out_dir / "cap").read_text().split() == ["CapEff:", "0000000000000000"]


def test_network_enabled_has_an_interface_besides_lo(runner: DockerRunner, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "ls /sys/class/net > /tmp/output/net", network_enabled=True)
    assert runner.start(spec).wait(60).status == "succeeded"
    interfaces = (spec.out_dir / "net").read_text().split()
    assert "lo" in interfaces
    assert len(interfaces) > 1


def test_exit_code_and_logs(runner: DockerRunner, client: Any, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "echo to-stdout; echo to-stderr >&2; exit 3")
    result = runner.start(spec).wait(60)
    assert (result.status, result.exit_code, result.message) == ("failed", 3, "exit code 3")
    logged = spec.log_path.read_text()
    assert "to-stdout" in logged
    assert "to-stderr" in logged
    assert containers_of(client, spec) == []


def test_timeout_stops_the_module(podman: PodmanService, client: Any, tmp_path: Path) -> None:  # noqa: F811
    runner = DockerRunner(ProcessingConfig(docker_url=podman.url), stop_grace=1)
    spec = make_spec(tmp_path, "echo started; sleep 600", timeout=2)
    result = runner.start(spec).wait(spec.timeout)
    assert result.status == "timeout"
    assert result.message == "stopped after 2 s (module timeout)"
    assert "started" in spec.log_path.read_text()
    assert containers_of(client, spec) == []


def test_cancel_from_another_thread(runner: DockerRunner, client: Any, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "sleep 600")
    handle = runner.start(spec)
    wait_for(lambda: running(client, spec), timeout=30, what="the container to run")
    canceller = threading.Thread(target=handle.cancel)
    canceller.start()
    result = handle.wait(60)
    canceller.join(timeout=30)
    assert result.status == "cancelled"
    assert containers_of(client, spec) == []


def test_docker_arguments_reach_the_container(
    runner: DockerRunner, client: Any, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, "sleep 600", docker_arguments={"mem_limit": "64m", "pids_limit": 50})
    handle = runner.start(spec)
    try:
        container = wait_for(lambda: running(client, spec), timeout=30, what="the container")
        host_config = container.attrs["HostConfig"]
        assert host_config["Memory"] == 64 * 1024 * 1024
        assert host_config["PidsLimit"] == 50
        assert host_config["NetworkMode"] == "none"
        dropped = {cap.upper().removeprefix("CAP_") for cap in host_config["CapDrop"] or []}
        # Docker records "ALL"; Podman lists every capability it dropped.
        assert "ALL" in dropped or {"CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID"} <= dropped
        labels = container.attrs["Config"]["Labels"]
        assert labels["mercury.run"] == spec.run_id
        assert labels["mercury.job"] == spec.job_id
        assert labels["mercury.owner"] == "tests"
        assert container.name == f"mercury-{spec.run_id}"
    finally:
        handle.cancel()
        assert handle.wait(60).status == "cancelled"


def test_missing_image_is_an_error_that_says_so(
    runner: DockerRunner, client: Any, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, image=MISSING_IMAGE)
    with pytest.raises(RunnerError, match="is not on this Docker engine: pull or build it"):
        runner.start(spec)
    assert containers_of(client, spec) == []


def test_a_module_that_cannot_start(runner: DockerRunner, client: Any, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, image=BROKEN_IMAGE)
    with pytest.raises(RunnerError, match=r"could not start: .*no-such-program"):
        runner.start(spec)
    assert containers_of(client, spec) == []


def test_out_of_memory(runner: DockerRunner, tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        "x=0123456789abcdef; while true; do x=$x$x; done",
        docker_arguments={"mem_limit": "32m", "memswap_limit": "32m"},
    )
    result = runner.start(spec).wait(60)
    assert (result.status, result.exit_code) == ("failed", 137)
    # Docker sets State.OOMKilled; Podman does not, and the message says what is likely.
    assert "out of memory" in result.message


def test_unreachable_engine(tmp_path: Path) -> None:
    runner = DockerRunner(ProcessingConfig(docker_url=f"unix://{tmp_path}/nothing.sock"))
    with pytest.raises(RunnerError, match="cannot reach the Docker engine at unix://"):
        runner.start(make_spec(tmp_path))
    with pytest.raises(RunnerError, match=r"set processing\.docker_url"):
        runner.remove_orphans({"mercury.job": "j"})


def test_root_only_when_allowed(runner: DockerRunner, tmp_path: Path) -> None:
    refused = make_spec(tmp_path, requires_root=True)
    with pytest.raises(RunnerError, match="support_root_modules"):
        runner.start(refused)
    allowed = make_spec(tmp_path, "id -u > /tmp/output/uid", requires_root=True, allow_root=True)
    assert runner.start(allowed).wait(60).status == "succeeded"
    assert (allowed.out_dir / "uid").read_text().strip() == "0"


def test_persistence_folder_is_kept_between_runs(runner: DockerRunner, tmp_path: Path) -> None:
    persistence = tmp_path / "persistence" / "test-module"
    script = (
        'runs=$(cat "$MODULE_PERSISTENCE_DIR/count" 2>/dev/null | wc -l); '
        'echo "run $runs" >> /tmp/persistence/count; '
        "cp /tmp/persistence/count /tmp/output/seen"
    )
    for _ in range(2):
        spec = make_spec(tmp_path, script, persistence=persistence, requires_persistence=True)
        assert runner.start(spec).wait(60).status == "succeeded"
    assert (spec.out_dir / "seen").read_text().split("\n")[:2] == ["run 0", "run 1"]
    assert (persistence / "count").read_text().splitlines() == ["run 0", "run 1"]


def test_remove_orphans_after_a_crash(runner: DockerRunner, client: Any, tmp_path: Path) -> None:
    crashed = make_spec(tmp_path, "sleep 600", job_id=f"crashed-{uuid.uuid4().hex[:8]}")
    other = make_spec(tmp_path, "sleep 600", job_id=f"other-{uuid.uuid4().hex[:8]}")
    runner.start(crashed)  # the handle is dropped: the processor died
    survivor = runner.start(other)
    try:
        wait_for(lambda: running(client, crashed), timeout=30, what="the orphan to run")
        removed = runner.remove_orphans({"mercury.job": crashed.job_id})
        assert len(removed) == 1
        assert f"mercury-{crashed.run_id}" in removed[0]
        assert containers_of(client, crashed) == []
        assert running(client, other) is not None  # another job's run is left alone
        assert runner.remove_orphans({"mercury.job": crashed.job_id}) == []
    finally:
        survivor.cancel()
        survivor.wait(60)


def test_monai_application_package(runner: DockerRunner, tmp_path: Path) -> None:
    for _ in range(2):  # the second run uses what the first read from the image
        spec = make_spec(tmp_path, "echo not-the-manifest-command", image=MONAI_IMAGE)
        result = runner.start(spec).wait(60)
        assert (result.status, result.monai) == ("succeeded", True)
        # The manifest's command ran, as the same non-root user, writing to MONAI_OUTPUTPATH.
        assert (spec.out_dir / "monai.txt").read_text().split() == [
            "monai",
            str(container_user(spec)).split(":")[0],
        ]


def test_a_tag_moved_to_another_image(runner: DockerRunner, client: Any, tmp_path: Path) -> None:
    moving = "localhost/mercury-test/moving:1"
    client.images.get(BUSYBOX_IMAGE).tag(*moving.rsplit(":", 1))
    plain = make_spec(tmp_path, "echo plain > /tmp/output/plain.txt", image=moving)
    assert runner.start(plain).wait(60).monai is False
    client.images.get(MONAI_IMAGE).tag(
        *moving.rsplit(":", 1)
    )  # the administrator installs a new version
    spec = make_spec(tmp_path, "echo plain > /tmp/output/plain.txt", image=moving)
    assert runner.start(spec).wait(60).monai is True
    assert (spec.out_dir / "monai.txt").exists()
    client.images.get(BUSYBOX_IMAGE).tag(*moving.rsplit(":", 1))  # and back
    again = make_spec(tmp_path, "echo plain > /tmp/output/plain.txt", image=moving)
    assert runner.start(again).wait(60).monai is False
    assert (again.out_dir / "plain.txt").exists()
    client.images.remove(moving)


# --- without an engine: what is asked of it --------------------------------------------


def test_container_kwargs(tmp_path: Path) -> None:
    persistence = tmp_path / "persist"
    spec = make_spec(
        tmp_path,
        "true",
        persistence=persistence,
        requires_persistence=True,
        additional_volumes={"/srv/models": {"bind": "/models", "mode": "ro"}},
        docker_arguments={
            "mem_limit": "2g",
            "environment": {"FROM_ARGS": "1", "MERCURE_IN_DIR": "/elsewhere"},
            "labels": {"team": "ai", "mercury.run": "forged"},
        },
    )
    kwargs = container_kwargs(spec, "1000:1000")
    assert kwargs["image"] == BUSYBOX_IMAGE
    assert kwargs["name"] == f"mercury-{spec.run_id}"
    assert kwargs["user"] == "1000:1000"
    assert kwargs["volumes"] == {
        str(spec.in_dir): {"bind": "/tmp/data", "mode": "rw"},
        str(spec.out_dir): {"bind": "/tmp/output", "mode": "rw"},
        str(persistence): {"bind": "/tmp/persistence", "mode": "rw"},
        "/srv/models": {"bind": "/models", "mode": "ro"},
    }
    env = kwargs["environment"]
    assert env["FROM_ARGS"] == "1"
    assert env["MERCURE_IN_DIR"] == "/tmp/data"  # the contract cannot be overridden
    assert env["MODULE_PERSISTENCE_DIR"] == "/tmp/persistence"
    assert kwargs["labels"]["team"] == "ai"
    assert kwargs["labels"]["mercury.run"] == spec.run_id
    assert kwargs["labels"]["mercury.owner"] == "tests"
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["network_mode"] == "none"
    assert kwargs["mem_limit"] == "2g"
    assert "runtime" not in kwargs
    assert "device_requests" not in kwargs
    assert "entrypoint" not in kwargs


def test_container_kwargs_gpus_and_runtime(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, gpus=("2", "3"), runtime="nvidia", network_enabled=True)
    kwargs = container_kwargs(spec, None)
    (request,) = kwargs["device_requests"]
    assert isinstance(request, docker.types.DeviceRequest)
    assert request["DeviceIDs"] == ["2", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Driver"] == ""
    assert request["Count"] == 0
    assert kwargs["environment"]["NVIDIA_VISIBLE_DEVICES"] == "2,3"
    assert kwargs["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"  # numbered from 0 inside
    assert kwargs["runtime"] == "nvidia"
    assert "network_mode" not in kwargs
    assert "user" not in kwargs
    # a module's own runtime wins over processing.runtime
    own = make_spec(tmp_path, runtime="nvidia", docker_arguments={"runtime": "runsc"})
    assert container_kwargs(own, "1:1")["runtime"] == "runsc"
    assert gpu_environment(["GPU-aa", "GPU-bb"]) == {
        "NVIDIA_VISIBLE_DEVICES": "GPU-aa,GPU-bb",
        "CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb",
    }


def test_container_kwargs_refusals(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    sneaky = spec.module.model_copy(update={"docker_arguments": {"privileged": True}})
    with pytest.raises(RunnerError, match="not allowed: privileged"):
        container_kwargs(dataclasses.replace(spec, module=sneaky), "1:1")
    clash = make_spec(tmp_path, additional_volumes={"/srv/x": {"bind": "/tmp/output"}})
    with pytest.raises(RunnerError, match="collides with a run folder"):
        container_kwargs(clash, "1:1")
    with pytest.raises(RunnerError, match="support_root_modules"):
        container_kwargs(make_spec(tmp_path, requires_root=True), None)


def test_monai_manifest_commands() -> None:
    assert monai_command(b'{"command": "[\\"python3\\", \\"/opt/app\\"]"}') == [
        "python3",
        "/opt/app",
    ]
    assert monai_command(b'{"command": "python3 -u /opt/monai/app/app.py"}') == [
        "python3",
        "-u",
        "/opt/monai/app/app.py",
    ]
    assert monai_command(b'{"command": ["run", "it"]}') == ["run", "it"]
    assert monai_command(b'{"version": 1}') is None
    assert monai_command(b"not json") is None


def test_run_results() -> None:
    assert run_result({"ExitCode": 0}).status == "succeeded"
    oom = run_result({"ExitCode": 137, "OOMKilled": True})
    assert oom.status == "failed"
    assert "out of memory" in oom.message
    killed = run_result({"ExitCode": 137}, mem_limit="64m")
    assert killed.message.startswith("exit code 137 (killed by SIGKILL")
    assert "mem_limit 64m" in killed.message
    assert run_result({"ExitCode": 137}, timed_out=600).message == (
        "stopped after 600 s (module timeout)"
    )
    assert run_result({"ExitCode": 137}, cancelled=True).status == "cancelled"
