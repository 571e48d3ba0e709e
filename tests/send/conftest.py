"""Real DICOM peers for the sender tests: DCMTK's storescp and dcmqrscp on loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from tests.dicom.build import EXPLICIT_LE, ct_slice


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening_sockets() -> set[int] | None:
    """Ports in LISTEN state, from /proc (None where /proc/net/tcp does not exist)."""
    ports: set[int] = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def _is_listening(port: int) -> bool:
    # Looking at the socket table rather than connecting: a probe connection is itself an
    # event for the peer (storescp --refuse then sometimes resets the next association).
    ports = _listening_sockets()
    if ports is not None:
        return port in ports
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until the peer listens on ``port``; fail at once if it exits."""
    deadline = time.monotonic() + 30
    while not _is_listening(port):
        if process.poll() is not None:
            raise AssertionError(f"the peer exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the peer does not listen on {port}")
        time.sleep(0.02)  # polling interval; the deadline decides, not the sleep


@dataclass
class Peer:
    """A running DCMTK peer: where it listens and where it writes what it receives."""

    port: int
    folder: Path
    ae_title: str
    process: subprocess.Popen[bytes]
    log: Path

    def received(self) -> list[Path]:
        return sorted(path for path in self.folder.iterdir() if path.is_file())


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: install DCMTK (Debian package 'dcmtk')")


@pytest.fixture
def start_peer(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    """Start storescp (or another DCMTK SCP) on a free port; stopped by PID afterwards."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        *options: str,
        ae_title: str = "STORESCP",
        nodelay: bool = False,
        command: tuple[str, ...] | None = None,
    ) -> Peer:
        port = free_port()
        folder = tmp_path / f"received-{port}"
        folder.mkdir()
        log = tmp_path / f"peer-{port}.log"
        args = list(command or ("storescp", "-od", str(folder), "-aet", ae_title, "+B"))
        _require(args[0])
        args += [*options, str(port)]
        env = dict(os.environ)
        if nodelay:
            env["TCP_NODELAY"] = "1"  # DCMTK reads this to set TCP_NODELAY on its sockets
        else:
            env.pop("TCP_NODELAY", None)
        with log.open("wb") as output:
            process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, env=env)
        processes.append(process)
        wait_until_listening(port, process, log)
        return Peer(port, folder, ae_title, process, log)

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def write_dicom(ds: Dataset, path: Path, transfer_syntax: str = EXPLICIT_LE) -> Path:
    """Save ``ds`` as a DICOM file in ``transfer_syntax``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def ct_files(tmp_path: Path) -> list[Path]:
    """Ten small CT slices of one series, explicit VR little endian."""
    folder = tmp_path / "ct"
    first = ct_slice(rows=32, columns=32)
    paths = []
    for index in range(10):
        ds = ct_slice(rows=32, columns=32, index=index)
        ds.StudyInstanceUID = first.StudyInstanceUID
        ds.SeriesInstanceUID = first.SeriesInstanceUID
        paths.append(write_dicom(ds, folder / f"slice{index:02d}.dcm"))
    return paths
