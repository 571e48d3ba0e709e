"""Baseline with durable writes: pynetdicom vs mercury.dicom.net, fsync before every response.

The same storescu runs as in ``bench.net_only``, but each receiver writes the data set to
its own file and fsyncs it before answering, the minimum a receiver that promises
durability must do. This is the figure the network layer was built to raise.

Run from the repository root:
    .venv/bin/python -m bench.pynetdicom_baseline [--ct 300] [--small 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.net_only import HOST, MAX_PDU, UNCOMPRESSED, AckOnly, _env, _storescu, measure
from mercury.dicom.net import Association, DicomServer, StoreRequest, StoreResult
from tests.net.netsupport import make_image_files


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class FsyncStore(AckOnly):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    async def on_store(self, association: Association, request: StoreRequest) -> StoreResult:
        path = self.folder / request.sop_instance_uid
        await asyncio.to_thread(_write_durably, path, request.data)
        return await super().on_store(association, request)


def run_mercury(directory: Path, count: int) -> float:
    async def main(folder: Path) -> float:
        handler = FsyncStore(folder)
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

    with tempfile.TemporaryDirectory(prefix="mercury-out-", dir=directory.parent) as out:
        return asyncio.run(main(Path(out)))


def run_pynetdicom(directory: Path, count: int) -> float:
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.dimse_primitives import C_STORE

    received = 0

    with tempfile.TemporaryDirectory(prefix="pynetdicom-out-", dir=directory.parent) as out:

        def on_store(event: evt.Event) -> int:
            nonlocal received
            request = event.request
            assert isinstance(request, C_STORE)
            data = request.DataSet.getvalue() if request.DataSet is not None else b""
            _write_durably(Path(out) / str(request.AffectedSOPInstanceUID), data)
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
            started = time.perf_counter()
            subprocess.run(
                _storescu(server.server_address[1], directory),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=int, default=300)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mercury-bench-", dir=Path.cwd()) as tmp:
        cases = [
            (f"{args.ct} CT slices 512x512", Path(tmp) / "ct", args.ct, 512),
            (f"{args.small} small images 64x64", Path(tmp) / "small", args.small, 64),
        ]
        for title, directory, count, size in cases:
            make_image_files(directory, count, rows=size, columns=size)
            print(f"{title}, storescu TCP_NODELAY=1, write + fsync before each response:")
            ours = measure("mercury", run_mercury, directory, count, args.repeat)
            theirs = measure("pynetdicom", run_pynetdicom, directory, count, args.repeat)
            print(f"  mercury/pynetdicom: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
