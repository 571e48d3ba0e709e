"""Receive benchmark: storescu -> mercury vs DCMTK storescp (and Orthanc), same data, same run.

Run from the repository root:  .venv/bin/python -m bench.receive [--quick]
Prints MB/s and instances/s per case and the ratio mercury/storescp. Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import (
    dcmtk_env,
    free_port,
    make_ct_series,
    make_small_images,
    port_open,
    wait_for,
)

WORK_ROOT = Path(__file__).resolve().parent / "results"


@contextmanager
def storescp(folder: Path) -> Iterator[int]:
    """DCMTK storescp writing to ``folder`` (it does not fsync), TCP_NODELAY set: its best case."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["storescp", "-od", str(folder), "-aet", "MERCURY", "+xa", str(port)],
        env=dcmtk_env(True),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), 30, "storescp")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def mercury(folder: Path) -> Iterator[int]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mercury.yaml"
    config.write_text(
        f"receiver: {{host: 127.0.0.1, port: {port}, ae_titles: [MERCURY]}}\n"
        f"web: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"storage: {{spool: {folder / 'spool'}, "
        f"database: 'sqlite:///{folder / 'mercury.db'}', reserve_mb: 0}}\n"
    )
    exe = str(Path(sys.executable).parent / "mercury")
    log = (folder / "mercury.log").open("wb")
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(port), 60, "mercury")
        yield port
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


@contextmanager
def orthanc(folder: Path) -> Iterator[int]:
    from tests.peers import Orthanc

    server = Orthanc(folder)
    server.aet = "MERCURY"
    server.start()
    try:
        yield server.dicom_port
    finally:
        server.stop()


def send(port: int, files: list[Path], senders: int, nodelay: bool = True) -> float:
    """Send ``files`` split over ``senders`` concurrent storescu processes; seconds elapsed."""
    chunks = [files[i::senders] for i in range(senders)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", "MERCURY", "127.0.0.1", str(port), *map(str, chunk)],
            env=dcmtk_env(nodelay),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - start


def measure(
    server: Callable[[Path], object],
    work: Path,
    files: list[Path],
    senders: int,
    nodelay: bool = True,
    repeats: int = 3,
) -> float:
    """Best of ``repeats`` runs, each into a fresh folder."""
    best = float("inf")
    for attempt in range(repeats):
        folder = work / f"run{attempt}"
        with server(folder) as port:  # type: ignore[attr-defined]
            best = min(best, send(port, files, senders, nodelay))
        shutil.rmtree(folder, ignore_errors=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer images, one repeat")
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-receive-", dir=WORK_ROOT))
    slices, small = (60, 400) if args.quick else (300, 2000)
    repeats = 1 if args.quick else 3
    print(f"generating {slices} CT slices (512x512) and {small} small images in {work} ...")
    ct = make_ct_series(work / "data" / "ct", slices)
    sc = make_small_images(work / "data" / "small", small)
    ct_mb = sum(p.stat().st_size for p in ct) / 1e6
    servers: dict[str, Callable[[Path], object]] = {"storescp": storescp, "mercury": mercury}
    if not args.no_orthanc and shutil.which("Orthanc"):
        servers["orthanc"] = orthanc
    cases = [
        ("CT 300x512x512, 1 association", ct, 1, True, "MB/s", ct_mb),
        ("2,000 small, 1 association", sc, 1, True, "inst/s", float(len(sc))),
        ("2,000 small, 4 associations", sc, 4, True, "inst/s", float(len(sc))),
        ("2,000 small, 1 assoc., Nagle on", sc, 1, False, "inst/s", float(len(sc))),
    ]
    results: dict[str, dict[str, float]] = {}
    for title, files, senders, nodelay, unit, amount in cases:
        row: dict[str, float] = {}
        for name, server in servers.items():
            if not nodelay and name != "mercury":
                continue  # the Nagle case shows mercury does not stall; peers are measured at best
            seconds = measure(server, work / name, files, senders, nodelay, repeats)
            row[name] = amount / seconds
        results[title] = row
        ratio = row["mercury"] / row["storescp"] if "storescp" in row else float("nan")
        cells = "  ".join(f"{name} {value:8.1f}" for name, value in row.items())
        print(f"{title:36s} {unit:7s} {cells}   mercury/storescp {ratio:.2f}")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(work / "data", ignore_errors=True)
    print(f"results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
