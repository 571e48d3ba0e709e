"""Send benchmark: the same images to DCMTK storescp over one association, by storescu, by
pynetdicom set up the way mercury's sender used it, by mercury's own requestor
(mercury.dicom.net.client) and by the dicom target (whatever it sends with), same run.

Run from the repository root:
    .venv/bin/python -m bench.send [--count 200] [--ct 60] [--repeat 3]

Each case gets a fresh storescp (TCP_NODELAY set, writing to a tmp folder) and is timed
from the first association request to the release; the best of ``--repeat`` runs is
printed. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, _config

from bench.receive import storescp
from mercury.dicom.net import client
from tests.helpers import dcmtk_env, make_ct_series, make_small_images

WORK_ROOT = Path(__file__).resolve().parent / "results"
EXPLICIT = "1.2.840.10008.1.2.1"


def run_storescu(port: int, files: list[Path]) -> None:
    done = subprocess.run(
        ["storescu", "-aec", "MERCURY", "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(True),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode()[-500:])


def _sop_class(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPClassUID)


def run_pynetdicom(port: int, files: list[Path]) -> None:
    """pynetdicom 3.0 as mercury's sender used it: files streamed by path, TCP_NODELAY, a
    0.1 ms DUL loop delay, and every DIMSE message handed to the sending thread."""
    from mercury.dispatch.targets.dicom import _own_the_message_queue

    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title="MERCURY")
        ae.network_timeout = None
        ae.add_requested_context(_sop_class(files), [EXPLICIT])
        assoc: Any = ae.associate("127.0.0.1", port, ae_title="MERCURY")
        assert assoc.is_established
        _own_the_message_queue(assoc, 30)
        assoc.dul.socket.socket.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
        assoc.dul._run_loop_delay = 0.0001
        for path in files:
            status = assoc.send_c_store(path)
            assert status.Status == 0
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def run_client(port: int, files: list[Path]) -> None:
    with client.associate(
        "127.0.0.1",
        port,
        calling_ae="MERCURY",
        called_ae="MERCURY",
        contexts=[(_sop_class(files), [EXPLICIT])],
    ) as assoc:
        for path in files:
            assert assoc.store_file(path).status == 0


def run_target(port: int, files: list[Path]) -> None:
    from mercury.config.targets import DicomTarget
    from mercury.dispatch.base import Origin, OutgoingInstance, SenderContext, Shipment
    from mercury.dispatch.targets.dicom import DicomSender

    items = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        items.append(
            OutgoingInstance(
                str(ds.SOPInstanceUID),
                str(ds.SOPClassUID),
                str(ds.file_meta.TransferSyntaxUID),
                str(ds.SeriesInstanceUID),
                str(ds.StudyInstanceUID),
                path,
                path.stat().st_size,
            )
        )
    target = DicomTarget.model_validate(
        {"target_type": "dicom", "ip": "127.0.0.1", "port": port, "aet_target": "MERCURY"}
    )
    sender = DicomSender("bench", target, SenderContext("MERCURY", WORK_ROOT, {}))
    shipment = Shipment("bench", "bench", items, Origin("BENCH", "MERCURY", "127.0.0.1"))
    started = time.perf_counter()
    report = sender.send(shipment)
    run_target.elapsed = time.perf_counter() - started  # type: ignore[attr-defined]
    assert {result.status for result in report.results} == {"sent"}, report


@contextlib.contextmanager
def _peer(folder: Path) -> Iterator[int]:
    with storescp(folder) as port:
        yield port


def measure(
    work: Path, name: str, runner: Callable[[int, list[Path]], None], files: list[Path]
) -> float:
    folder = work / name
    with _peer(folder) as port:
        started = time.perf_counter()
        runner(port, files)
        elapsed = time.perf_counter() - started
    received = sum(1 for _ in folder.iterdir())
    shutil.rmtree(folder, ignore_errors=True)
    if received != len(files):
        raise RuntimeError(f"{name}: storescp stored {received} of {len(files)}")
    if runner is run_target:  # without building the shipment's instance list
        return float(run_target.elapsed)  # type: ignore[attr-defined]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="small images")
    parser.add_argument("--ct", type=int, default=0, help="CT slices of 512 x 512 (0: none)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-send-", dir=WORK_ROOT))
    try:
        data = [
            (
                f"{args.count} small images",
                make_small_images(work / "small", args.count, args.count),
            )
        ]
        if args.ct:
            data.append((f"{args.ct} CT slices", make_ct_series(work / "ct", args.ct)))
        cases = [
            ("storescu", run_storescu),
            ("pynetdicom", run_pynetdicom),
            ("client", run_client),
            ("dicom target", run_target),
        ]
        for title, files in data:
            best: dict[str, float] = {}
            for _ in range(args.repeat):
                for name, runner in cases:
                    elapsed = measure(work, name.replace(" ", "_"), runner, files)
                    best[name] = min(best.get(name, elapsed), elapsed)
            reference = best["storescu"]
            for name, _ in cases:
                seconds = best[name]
                print(
                    f"{title}, {name:12s} {seconds:6.3f} s ({seconds / len(files) * 1000:5.2f} "
                    f"ms each, {seconds / reference:4.1f}x storescu)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
