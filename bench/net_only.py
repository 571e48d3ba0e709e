"""Network-only receive benchmark: mercury.dicom.net against pynetdicom's AE as storage SCP.

Both receive the same files from DCMTK storescu (TCP_NODELAY=1, one association per run)
and acknowledge every instance without storing it, so only the DICOM network path is
measured: PDU parsing, DIMSE, scheduling. Both advertise the same maximum PDU length.

Run from the repository root:
    .venv/bin/python -m bench.net_only [--ct 300] [--small 2000] [--repeat 3]
Not a test: prints MB/s (10^6 bytes of DICOM file per second) and instances/s per case.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mercury.dicom.net import (
    Association,
    AssociationRequest,
    DicomServer,
    Rejection,
    StoreRequest,
    StoreResult,
)
from tests.net.netsupport import make_image_files

HOST = "127.0.0.1"
MAX_PDU = 262144
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class AckOnly:
    """A ServiceHandler that acknowledges without storing: the network path alone."""

    def __init__(self) -> None:
        self.instances = 0
        self.bytes = 0

    def on_associate(self, request: AssociationRequest) -> Rejection | None:
        return None

    async def on_store(self, association: Association, request: StoreRequest) -> StoreResult:
        self.instances += 1
        self.bytes += len(request.data)
        return StoreResult(0x0000)

    async def on_echo(self, association: Association) -> None:
        return None

    async def on_close(self, association: Association, how: str) -> None:
        return None

    def on_protocol_error(self, peer_host: str, peer_port: int, message: str) -> None:
        raise AssertionError(message)


def _storescu(port: int, directory: Path) -> list[str]:
    return ["storescu", "-aec", "BENCH", "+sd", HOST, str(port), str(directory)]


def _env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def run_mercury(directory: Path, count: int) -> float:
    async def main() -> float:
        handler = AckOnly()
        server = DicomServer(
            handler,
            accept_abstract_syntax=lambda uid: True,
            transfer_syntaxes=UNCOMPRESSED,
            max_pdu=MAX_PDU,
        )
        await server.start(HOST, 0)
        try:
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *_storescu(server.port, directory),
                env=_env(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert await proc.wait() == 0, "storescu failed against mercury"
            elapsed = time.perf_counter() - started
        finally:
            await server.close()
        assert handler.instances == count, (handler.instances, count)
        return elapsed

    return asyncio.run(main())


def run_pynetdicom(directory: Path, count: int) -> float:
    from pynetdicom import AE, StoragePresentationContexts, evt

    received = 0

    def on_store(event: evt.Event) -> int:
        nonlocal received
        received += 1
        return 0x0000

    ae = AE(ae_title="BENCH")
    ae.maximum_pdu_size = MAX_PDU
    for context in StoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, list(UNCOMPRESSED))
    server = ae.start_server((HOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        port = server.server_address[1]
        started = time.perf_counter()
        subprocess.run(
            _storescu(port, directory),
            env=_env(),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
    finally:
        server.shutdown()
    assert received == count, (received, count)
    return elapsed


def measure(
    name: str, run: Callable[[Path, int], float], directory: Path, count: int, repeat: int
) -> float:
    size = sum(p.stat().st_size for p in directory.iterdir())
    times = [run(directory, count) for _ in range(repeat)]
    best, median = min(times), statistics.median(times)
    print(
        f"  {name:<11} {size / 1e6 / median:8.1f} MB/s {count / median:8.0f} inst/s"
        f"   (median of {repeat}: {median:.3f}s; best {size / 1e6 / best:.1f} MB/s,"
        f" {count / best:.0f} inst/s)"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=int, default=300, help="512x512x16-bit CT slices")
    parser.add_argument("--small", type=int, default=2000, help="64x64x16-bit images")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="mercury-bench-") as tmp:
        cases = [
            (f"{args.ct} CT slices 512x512", Path(tmp) / "ct", args.ct, 512),
            (f"{args.small} small images 64x64", Path(tmp) / "small", args.small, 64),
        ]
        for title, directory, count, size in cases:
            make_image_files(directory, count, rows=size, columns=size)
            mb = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
            print(f"{title} ({mb:.0f} MB), storescu TCP_NODELAY=1, ack without storing:")
            ours = measure("mercury", run_mercury, directory, count, args.repeat)
            theirs = measure("pynetdicom", run_pynetdicom, directory, count, args.repeat)
            print(f"  mercury/pynetdicom: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
