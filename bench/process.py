"""Processing benchmark: what mercury adds around a module that does nothing, against the
same module started with plain subprocess (and `podman run --rm`), same data, same run.

Run from the repository root:  .venv/bin/python -m bench.process [--quick]

1. Overhead per module run of a no-op module:
   a. LocalRunner start -> wait of `python bench/noop_module.py` (empty input) against the
      same command started with subprocess.run, interleaved run by run;
   b. DockerRunner against `podman run --rm` of the same busybox image (the measurement of
      bench/process_docker.py); skipped when podman is not installed.
2. Throughput of one-series jobs (10 small images each) through a real `mercury serve`
   with processing.workers 1, 2 and 4: local runner, the module copies its inputs to its
   output, rule action `process` (nothing is dispatched). All series are received and
   routed first (`--only receiver --only router`) so every job exists before a processor
   (`--only processor`) starts; the time is the journal's first `job.claimed` to last
   `job.succeeded`. Reference: the same module invocations on the same images with plain
   subprocess, one after another and N at once.

Ratios are mercury / plain for times (above 1: mercury is slower) and mercury / plain for
jobs/s (below 1: mercury is slower). Results JSON under bench/results/. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from mercury.config.modules import Module
from mercury.process.base import RunSpec, contract_environment
from mercury.process.runners.local import LocalRunner, module_environment
from mercury.store.models import EventRow
from tests.helpers import dcmtk_env, free_port, make_small_images, port_open, wait_for

WORK_ROOT = Path(__file__).resolve().parent / "results"
NOOP = Path(__file__).resolve().parent / "noop_module.py"
IMAGES_PER_SERIES = 10
SENDERS = 4


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- 1a. the local runner, one no-op run at a time ---------------------------------------


def _local_spec(folder: Path) -> RunSpec:
    run_id = uuid.uuid4().hex[:12]
    run = folder / run_id
    (run / "in").mkdir(parents=True)
    (run / "out").mkdir()
    module = Module(runner="local", command=["python", str(NOOP)])
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


def local_overhead(folder: Path, n: int) -> dict[str, float]:
    """LocalRunner start -> wait against subprocess.run of the same command, environment,
    working directory and log file; interleaved so drift hits both alike."""
    runner = LocalRunner(folder)
    runner.start(_local_spec(folder)).wait(60)  # warm-up: the page cache, the interpreter
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(n):
        spec = _local_spec(folder)
        began = time.perf_counter()
        result = runner.start(spec).wait(60)
        ours.append(time.perf_counter() - began)
        if result.status != "succeeded":
            raise RuntimeError(f"no-op module {result.status}: {result.message}")
        spec = _local_spec(folder)
        env = module_environment(spec)
        began = time.perf_counter()
        with spec.log_path.open("ab") as log:
            subprocess.run(
                [sys.executable, str(NOOP)],
                cwd=spec.in_dir.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        plain.append(time.perf_counter() - began)
    return {
        "runs": n,
        "runner_p50": _percentile(ours, 0.5),
        "runner_p90": _percentile(ours, 0.9),
        "runner_mean": statistics.fmean(ours),
        "subprocess_p50": _percentile(plain, 0.5),
        "subprocess_p90": _percentile(plain, 0.9),
        "subprocess_mean": statistics.fmean(plain),
        "p50_ratio": _percentile(ours, 0.5) / _percentile(plain, 0.5),
        "p50_overhead_ms": 1000 * (_percentile(ours, 0.5) - _percentile(plain, 0.5)),
    }


# -- 1b. the docker runner (bench/process_docker.py's measurement) -------------------------


def docker_overhead(folder: Path, n: int) -> dict[str, float] | str:
    """DockerRunner against `podman run --rm`, or why it was skipped."""
    from tests.process.podman import podman_missing

    missing = podman_missing()
    if missing:
        return missing
    from bench.process_docker import _cli_times, _runner_times
    from tests.process.podman import BUSYBOX_IMAGE, build_busybox_image, start_podman_service

    service = start_podman_service(folder / "podman")
    try:
        build_busybox_image(service.url, BUSYBOX_IMAGE)
        ours = _runner_times(service, folder / "runs", n)
        cli = _cli_times(service, folder / "cli", n)
    finally:
        service.stop()
    return {
        "runs": n,
        "runner_p50": _percentile(ours, 0.5),
        "runner_p90": _percentile(ours, 0.9),
        "cli_p50": _percentile(cli, 0.5),
        "cli_p90": _percentile(cli, 0.9),
        "p50_ratio": _percentile(ours, 0.5) / _percentile(cli, 0.5),
    }


# -- 2. throughput through `mercury serve` ---------------------------------------------


def _write_config(folder: Path, port: int, workers: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mercury.yaml"
    config.write_text(
        f"receiver: {{host: 127.0.0.1, port: {port}, ae_titles: [MERCURY]}}\n"
        f"web: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"storage: {{spool: {folder / 'spool'}, "
        f"database: 'sqlite:///{folder / 'mercury.db'}', reserve_mb: 0}}\n"
        f"processing: {{workers: {workers}, persistence_folder: {folder / 'persistence'}}}\n"
        "modules:\n"
        f'  noop: {{runner: local, command: "python {NOOP}"}}\n'
        "rules:\n"
        "  all: {rule: 'True', action: process, processing_module: noop, "
        "series_complete_on: [association_end]}\n"
    )
    return config


@contextmanager
def _serve(config: Path, services: list[str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    exe = str(Path(sys.executable).parent / "mercury")
    only = [arg for service in services for arg in ("--only", service)]
    log = (config.parent / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), *only, "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def _scalar(database: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _send(port: int, series: list[list[Path]]) -> None:
    """SENDERS storescu at once, each sending its share of the series on one association."""
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", "MERCURY", "127.0.0.1", str(port)]
            + [str(f) for group in series[s::SENDERS] for f in group],
            env=dcmtk_env(True),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for s in range(SENDERS)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")


def _journal(database: Path) -> list[EventRow]:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            query = select(EventRow).where(EventRow.stage == "process").order_by(EventRow.id)
            return list(conn.execute(query))  # type: ignore[arg-type]
    finally:
        engine.dispose()


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _phases(events: list[EventRow], workers: int) -> dict[str, float]:
    """Span first claim -> last success, and where a job's time goes (journal times)."""
    per_job: dict[str, dict[str, datetime]] = {}
    for event in events:
        job = (event.details or {}).get("job")
        if job:
            per_job.setdefault(job, {}).setdefault(event.kind, event.time)
    claimed = [times["job.claimed"] for times in per_job.values()]
    succeeded = [times["job.succeeded"] for times in per_job.values() if "job.succeeded" in times]
    if len(succeeded) != len(per_job):
        raise RuntimeError(f"{len(per_job) - len(succeeded)} job(s) did not succeed")
    span = _seconds(min(claimed), max(succeeded))

    def mean(first: str, last: str) -> float:
        return statistics.fmean(_seconds(t[first], t[last]) for t in per_job.values())

    busy = sum(_seconds(t["job.claimed"], t["job.succeeded"]) for t in per_job.values())
    return {
        "span": span,
        "jobs_per_s": len(per_job) / span,
        "prepare_mean": mean("job.claimed", "module.started"),
        "module_mean": mean("module.started", "module.finished"),
        "finish_mean": mean("module.finished", "job.succeeded"),
        "job_mean": busy / len(per_job),
        "worker_idle_share": max(0.0, 1 - busy / (span * workers)),
    }


def receive_jobs(folder: Path, series: list[list[Path]]) -> Path:
    """Receive and route every series (`--only receiver --only router`) so that one queued
    processing job per series exists; returns the folder, a template for the runs."""
    port = free_port()
    config = _write_config(folder, port, 1)
    database = folder / "mercury.db"
    count_jobs = "select count(*) from jobs where kind = 'process'"
    with _serve(config, ["receiver", "router"], "receive") as proc:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 120, "mercury")
        _send(port, series)
        wait_for(lambda: _scalar(database, count_jobs) >= len(series), 120, "the jobs")
    return folder


def mercury_throughput(template: Path, folder: Path, jobs: int, workers: int) -> dict[str, float]:
    """A copy of the template's spool and index, then `mercury serve --only processor`."""
    shutil.copytree(template, folder, ignore=shutil.ignore_patterns("*.log", "*.yaml"))
    config = _write_config(folder, free_port(), workers)
    database = folder / "mercury.db"
    done = (
        "select count(*) from jobs where kind = 'process' "
        "and state in ('succeeded', 'failed', 'cancelled')"
    )
    began = time.perf_counter()
    with _serve(config, ["processor"], "process") as proc:
        while _scalar(database, done) < jobs:
            if proc.poll() is not None:
                raise RuntimeError(f"the processor exited: {(folder / 'process.log').read_text()}")
            if time.perf_counter() - began > 600:
                raise TimeoutError("processing did not finish")
            time.sleep(0.1)
        wall = time.perf_counter() - began
    result = _phases(_journal(database), workers)
    result["wall_from_launch"] = wall
    return result


def _plain_folders(folder: Path, series: list[list[Path]]) -> list[dict[str, str]]:
    """One run folder per job with its images in `in`, and the module's environment."""
    envs = []
    for index, files in enumerate(series):
        run = folder / f"job{index:03d}"
        (run / "in").mkdir(parents=True)
        (run / "out").mkdir()
        for path in files:
            shutil.copyfile(path, run / "in" / path.name)
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        env.update(contract_environment(str(run / "in"), str(run / "out"), None))
        envs.append(env)
    return envs


def plain_throughput(folder: Path, series: list[list[Path]], workers: int) -> float:
    """Seconds for the same module invocations with subprocess.run, ``workers`` at once."""
    envs = _plain_folders(folder, series)

    def run(env: dict[str, str]) -> None:
        subprocess.run(
            [sys.executable, str(NOOP)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            check=True,
        )

    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, envs))
    seconds = time.perf_counter() - began
    shutil.rmtree(folder, ignore_errors=True)
    return seconds


# -- the report --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, jobs and repeats")
    args = parser.parse_args()
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-process-", dir=WORK_ROOT))
    runs, jobs, repeats = (10, 12, 1) if args.quick else (30, 50, 3)
    levels = (1, 2, 4)
    results: dict[str, Any] = {"quick": args.quick, "cpus": os.cpu_count()}

    print(f"no-op module, {runs} runs each, seconds per run (p50 / p90)")
    local = local_overhead(work / "local", runs)
    results["local_runner"] = local
    print(
        f"  local:  LocalRunner {local['runner_p50']:.3f} / {local['runner_p90']:.3f}, "
        f"subprocess.run {local['subprocess_p50']:.3f} / {local['subprocess_p90']:.3f}; "
        f"p50 ratio {local['p50_ratio']:.2f} (+{local['p50_overhead_ms']:.0f} ms per run)"
    )
    with tempfile.TemporaryDirectory(prefix="mercury-bench-") as tmp:
        docker = docker_overhead(Path(tmp), runs)
    results["docker_runner"] = docker
    if isinstance(docker, str):
        print(f"  docker: skipped: {docker}")
    else:
        print(
            f"  docker: DockerRunner {docker['runner_p50']:.3f} / {docker['runner_p90']:.3f}, "
            f"podman run --rm {docker['cli_p50']:.3f} / {docker['cli_p90']:.3f}; "
            f"p50 ratio {docker['p50_ratio']:.2f}"
        )

    print(f"generating {jobs} series of {IMAGES_PER_SERIES} small images ...")
    files = make_small_images(work / "data", jobs * IMAGES_PER_SERIES, IMAGES_PER_SERIES)
    series = [files[i : i + IMAGES_PER_SERIES] for i in range(0, len(files), IMAGES_PER_SERIES)]
    best_plain: dict[int, float] = {}
    best_ours: dict[int, dict[str, float]] = {}
    for attempt in range(repeats):
        template = receive_jobs(work / f"received-{attempt}", series)
        for workers in levels:
            seconds = plain_throughput(work / "plain", series, workers)
            best_plain[workers] = min(best_plain.get(workers, seconds), seconds)
            folder = work / f"mercury-w{workers}-{attempt}"
            ours = mercury_throughput(template, folder, jobs, workers)
            shutil.rmtree(folder / "spool", ignore_errors=True)
            if workers not in best_ours or ours["span"] < best_ours[workers]["span"]:
                best_ours[workers] = ours
        shutil.rmtree(template, ignore_errors=True)
    sequential = best_plain[1]
    print(
        f"{jobs} one-series jobs ({IMAGES_PER_SERIES} images each), best of {repeats}; plain "
        f"subprocess, one after another: {sequential:.2f} s ({jobs / sequential:.1f} jobs/s)"
    )
    print(
        f"  {'workers':>7} {'mercury s':>9} {'jobs/s':>7} {'plain N s':>9} {'jobs/s':>7} "
        f"{'vs seq.':>7} {'vs N':>6}   per job: prepare / module / finish (ms), idle"
    )
    throughput: dict[str, Any] = {"jobs": jobs, "plain_sequential": sequential}
    for workers in levels:
        ours, plain = best_ours[workers], best_plain[workers]
        row = {
            **ours,
            "plain_same_workers": plain,
            "ratio_vs_sequential": ours["jobs_per_s"] / (jobs / sequential),
            "ratio_vs_same_workers": ours["jobs_per_s"] / (jobs / plain),
        }
        throughput[f"workers_{workers}"] = row
        print(
            f"  {workers:>7} {ours['span']:9.2f} {ours['jobs_per_s']:7.1f} {plain:9.2f} "
            f"{jobs / plain:7.1f} {row['ratio_vs_sequential']:7.2f} "
            f"{row['ratio_vs_same_workers']:6.2f}   {1000 * ours['prepare_mean']:.0f} / "
            f"{1000 * ours['module_mean']:.0f} / {1000 * ours['finish_mean']:.0f}, "
            f"{100 * ours['worker_idle_share']:.0f} %"
        )
    results["throughput"] = throughput
    (work / "results.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(work / "local", ignore_errors=True)
    print(f"results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
