"""Per-run overhead of the docker runner: a module that does nothing, through DockerRunner
on Podman's Docker API (create, MONAI check, start, wait, logs, remove), against the
`podman run --rm` CLI running the same image with the same isolation, same run.

Run from the repository root:  .venv/bin/python -m bench.process_docker [-n 20]

Needs the Debian packages podman, runc and busybox-static (see tests/process/podman.py).
Prints p50/p90 wall time per run for both, and mercury / CLI (below 1: mercury is faster).
Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from mercury.config.models import ProcessingConfig
from mercury.config.modules import Module
from mercury.process.base import RunSpec
from mercury.process.runners.docker import DockerRunner, container_user
from tests.process.podman import (
    BUSYBOX_IMAGE,
    PodmanService,
    build_busybox_image,
    start_podman_service,
)

NOOP = "true"


def _spec(folder: Path) -> RunSpec:
    run_id = uuid.uuid4().hex[:12]
    run = folder / run_id
    (run / "in").mkdir(parents=True)
    (run / "out").mkdir()
    module = Module(docker_tag=BUSYBOX_IMAGE, environment={"SCRIPT": NOOP})
    return RunSpec(
        run_id=run_id,
        job_id="bench",
        step=0,
        module_name="noop",
        module=module,
        in_dir=run / "in",
        out_dir=run / "out",
        persistence_dir=None,
        log_path=run / "module.log",
        timeout=module.timeout,
    )


def _runner_times(service: PodmanService, folder: Path, n: int) -> list[float]:
    runner = DockerRunner(ProcessingConfig(docker_url=service.url))
    runner.start(_spec(folder)).wait(60)  # warm-up: the client, the engine's caches
    times: list[float] = []
    for _ in range(n):
        spec = _spec(folder)
        began = time.perf_counter()
        result = runner.start(spec).wait(60)
        times.append(time.perf_counter() - began)
        if result.status != "succeeded":
            raise RuntimeError(f"no-op module {result.status}: {result.message}")
    return times


def _cli_times(service: PodmanService, folder: Path, n: int) -> list[float]:
    spec = _spec(folder)
    user = container_user(spec) or "0:0"
    command = [
        "podman",
        "run",
        "--rm",
        "--network=none",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        f"--user={user}",
        f"--volume={spec.in_dir}:/tmp/data:rw",
        f"--volume={spec.out_dir}:/tmp/output:rw",
        f"--env=SCRIPT={NOOP}",
        BUSYBOX_IMAGE,
    ]
    subprocess.run(command, env=service.env, check=True, capture_output=True)  # warm-up
    times: list[float] = []
    for _ in range(n):
        began = time.perf_counter()
        subprocess.run(command, env=service.env, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return times


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def docker_noop_overhead(n: int, folder: Path | None = None) -> list[float]:
    """Wall time in seconds of each of ``n`` no-op runs through DockerRunner."""
    with tempfile.TemporaryDirectory(prefix="mercury-bench-") as tmp:
        work = folder or Path(tmp)
        service = start_podman_service(work / "podman")
        try:
            build_busybox_image(service.url, BUSYBOX_IMAGE)
            return _runner_times(service, work / "runs", n)
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="runs per case (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mercury-bench-") as tmp:
        work = Path(tmp)
        service = start_podman_service(work / "podman")
        try:
            build_busybox_image(service.url, BUSYBOX_IMAGE)
            runner = _runner_times(service, work / "runs", args.n)
            cli = _cli_times(service, work / "cli", args.n)
        finally:
            service.stop()
    print(f"no-op module, {args.n} runs each (seconds per run)")
    print(f"{'case':<34} {'p50':>7} {'p90':>7} {'mean':>7}")
    for name, times in (("DockerRunner (Podman API)", runner), ("podman run --rm (CLI)", cli)):
        print(
            f"{name:<34} {_percentile(times, 0.5):7.3f} {_percentile(times, 0.9):7.3f} "
            f"{statistics.fmean(times):7.3f}"
        )
    ratio = _percentile(runner, 0.5) / _percentile(cli, 0.5)
    print(f"p50 ratio DockerRunner / podman run: {ratio:.2f}")


if __name__ == "__main__":
    main()
