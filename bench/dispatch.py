"""End-to-end relay benchmark: storescu -> mercury -> storescp, against the DCMTK relay
(storescu -> storescp, then storescu from what it wrote -> a second storescp), same data,
same run.

Run from the repository root:  .venv/bin/python -m bench.dispatch [--quick]

mercury routes every series to the storescp target and completes series at association
end. For each case it prints the total time (first image sent to last image delivered),
the time from the last image received to the last image delivered, and the ratios
DCMTK relay / mercury (above 1 means mercury is faster). Not a test.
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

from bench.receive import storescp
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
def mercury_relay(folder: Path, target_port: int) -> Iterator[int]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mercury.yaml"
    config.write_text(
        f"receiver: {{host: 127.0.0.1, port: {port}, ae_titles: [MERCURY]}}\n"
        f"web: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"storage: {{spool: {folder / 'spool'}, "
        f"database: 'sqlite:///{folder / 'mercury.db'}', reserve_mb: 0}}\n"
        "targets:\n"
        f"  pacs: {{target_type: dicom, ip: 127.0.0.1, port: {target_port}, "
        "aet_target: MERCURY}\n"
        "rules:\n"
        "  all: {rule: 'True', target: pacs, series_complete_on: [association_end]}\n"
    )
    exe = str(Path(sys.executable).parent / "mercury")
    log = (folder / "mercury.log").open("wb")
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(port), 120, "mercury")
        yield port
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def _poll(condition: Callable[[], bool], timeout: float) -> None:
    """A tight poll (5 ms): the benchmark measures when delivery ends."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("delivery did not finish")
        time.sleep(0.005)


def _count(folder: Path) -> int:
    return sum(1 for _ in folder.iterdir()) if folder.exists() else 0


def send_batches(port: int, batches: list[list[Path]]) -> None:
    """One storescu per batch, all at once; each batch goes on one association."""
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", "MERCURY", "127.0.0.1", str(port), *map(str, batch)],
            env=dcmtk_env(True),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for batch in batches
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")


def run_mercury(work: Path, batches: list[list[Path]]) -> tuple[float, float]:
    """(total, last received -> last delivered) in seconds."""
    files = [f for batch in batches for f in batch]
    with storescp(work / "target") as target, mercury_relay(work / "mercury", target) as port:
        start = time.perf_counter()
        send_batches(port, batches)
        received = time.perf_counter()
        _poll(lambda: _count(work / "target") >= len(files), 600)
        done = time.perf_counter()
    return done - start, done - received


def run_dcmtk(work: Path, batches: list[list[Path]]) -> tuple[float, float]:
    """The DCMTK relay: receive everything, then forward what was written."""
    with storescp(work / "relay") as relay:
        start = time.perf_counter()
        send_batches(relay, batches)
        received = time.perf_counter()
    relayed = sorted((work / "relay").iterdir())
    forward = [relayed[i :: len(batches)] for i in range(len(batches))]
    with storescp(work / "target") as target:
        forward_start = time.perf_counter()
        send_batches(target, forward)
        done = time.perf_counter()
    # the forward leg starts once storescp was restarted; count only the sending itself
    return (received - start) + (done - forward_start), done - forward_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer images, one repeat")
    args = parser.parse_args()
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-dispatch-", dir=WORK_ROOT))
    slices, series, per_series = (60, 8, 25) if args.quick else (300, 20, 50)
    repeats = 1 if args.quick else 3
    print(f"generating {slices} CT slices and {series} series of {per_series} small images ...")
    ct = make_ct_series(work / "data" / "ct", slices)
    small = make_small_images(work / "data" / "small", series * per_series, per_series)
    # 4 senders, each sending whole series on its own association
    groups = [small[i * per_series : (i + 1) * per_series] for i in range(series)]
    by_sender = [[f for group in groups[s::4] for f in group] for s in range(4)]
    cases = [
        (f"CT {slices} slices, 1 sender", [ct]),
        (f"{series} series x {per_series} small, 4 senders", by_sender),
    ]
    results: dict[str, dict[str, float]] = {}
    for title, batches in cases:
        best: dict[str, tuple[float, float]] = {}
        for name, runner in (("dcmtk", run_dcmtk), ("mercury", run_mercury)):
            for attempt in range(repeats):
                folder = work / f"{name}-{attempt}"
                total, tail = runner(folder, batches)
                shutil.rmtree(folder, ignore_errors=True)
                if name not in best or total < best[name][0]:
                    best[name] = (total, tail)
        (m_total, m_tail), (d_total, d_tail) = best["mercury"], best["dcmtk"]
        results[title] = {
            "mercury_total": m_total,
            "mercury_tail": m_tail,
            "dcmtk_total": d_total,
            "dcmtk_tail": d_tail,
            "total_ratio": d_total / m_total,
            "tail_ratio": d_tail / m_tail,
        }
        print(
            f"{title:34s} total: mercury {m_total:6.2f} s, DCMTK relay {d_total:6.2f} s "
            f"(ratio {d_total / m_total:.2f}); last received -> last delivered: mercury "
            f"{m_tail:6.2f} s, DCMTK {d_tail:6.2f} s (ratio {d_tail / m_tail:.2f})"
        )
    (work / "results.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(work / "data", ignore_errors=True)
    print(f"results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
