"""Interoperability with DCMTK's storescu, dcmsend and echoscu as real peers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.net.netsupport import (
    DCMTK,
    EXPLICIT,
    HOST,
    RecordingHandler,
    ServerThread,
    dataset_bytes,
    make_image_files,
    sop_instance_uid,
    wait_until,
)


def _needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if not DCMTK.get(t) and not _which(t)]
    return pytest.mark.skipif(bool(missing), reason=f"DCMTK {', '.join(missing)} not installed")


def _which(tool: str) -> str | None:
    import shutil

    return shutil.which(tool)


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60) -> None:
    result = subprocess.run(
        argv, check=False, capture_output=True, text=True, env=env, timeout=timeout
    )
    assert result.returncode == 0, f"{argv[0]} failed ({result.returncode}):\n{result.stderr}"


def _env(nodelay: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _as_storescp_receives(send: list[str], path: str, workdir: Path) -> bytes:
    """The data set exactly as DCMTK's own SCP receives it (bit-preserving mode)."""
    out = workdir / "storescp"
    out.mkdir()
    port = _free_port()
    scp = subprocess.Popen(
        ["storescp", "+xa", "+B", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _listening(port), 10, "storescp to listen")
        _run([*send, HOST, str(port), path])
        written = list(out.iterdir())
        assert len(written) == 1
        return bytes(dataset_bytes(written[0]))
    finally:
        scp.terminate()
        scp.wait(10)


@_needs("storescu")
def test_storescu_explicit_vr_files_arrive_byte_identical(
    server: ServerThread, handler: RecordingHandler, small_files: list[Path]
) -> None:
    _run(["storescu", "-aec", "MERCURY", HOST, str(server.port), *map(str, small_files)])
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")
    received = handler.data_by_uid()
    for path in small_files:
        assert received[sop_instance_uid(path)] == dataset_bytes(path)
    association, request = handler.stores[0]
    assert request.context.transfer_syntax == EXPLICIT  # storescu proposes explicit VR first
    assert association.request.calling_ae == "STORESCU"
    assert association.request.called_ae == "MERCURY"
    assert association.request.implementation_version_name.startswith("OFFIS_DCMTK")
    assert [r.message_id for _, r in handler.stores] == list(range(1, len(small_files) + 1))


@_needs("dcmsend")
def test_dcmsend_explicit_vr_files_arrive_byte_identical(
    server: ServerThread, handler: RecordingHandler, small_files: list[Path]
) -> None:
    _run(["dcmsend", HOST, str(server.port), *map(str, small_files)])
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")
    received = handler.data_by_uid()
    assert len(received) == len(small_files)
    for path in small_files:
        assert received[sop_instance_uid(path)] == dataset_bytes(path)


@_needs("storescu", "dcmsend", "storescp")
@pytest.mark.parametrize(
    ("sender", "name"),
    [
        (["storescu", "-xw"], "JPEG2000.dcm"),
        (["storescu", "-xr"], "MR_small_RLE.dcm"),
        (["dcmsend"], "JPEG2000.dcm"),
        (["dcmsend"], "MR_small_RLE.dcm"),
    ],
)
def test_compressed_files_arrive_as_dcmtk_sends_them(
    server: ServerThread,
    handler: RecordingHandler,
    tmp_path: Path,
    sender: list[str],
    name: str,
) -> None:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    _run([*sender, HOST, str(server.port), path])
    handler.wait(lambda: len(handler.stores) == 1, what="the instance")
    _, request = handler.stores[0]
    source = dcmread(path)
    assert request.context.transfer_syntax == source.file_meta.TransferSyntaxUID
    assert request.sop_instance_uid == source.SOPInstanceUID
    assert request.sop_class_uid == source.SOPClassUID
    # DCMTK re-encodes (e.g. drops trailing padding), so the reference is what its own
    # SCP receives from the same sender in bit-preserving mode.
    assert request.data == _as_storescp_receives(sender, path, tmp_path)
    # ...and the compressed pixel data itself is untouched.
    assert source.PixelData in request.data


@_needs("echoscu")
def test_echoscu(server: ServerThread, handler: RecordingHandler) -> None:
    _run(["echoscu", "-aet", "PINGER", HOST, str(server.port)])
    handler.wait(lambda: handler.close_reasons() == ["released"], what="release")
    assert len(handler.echoes) == 1
    assert handler.echoes[0].request.calling_ae == "PINGER"


@pytest.fixture(scope="module")
def two_hundred_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("nagle")
    make_image_files(directory, 200, rows=32, columns=32)
    return directory


@_needs("storescu")
def test_storescu_with_nagle_on_does_not_stall_on_delayed_acks(
    server: ServerThread, handler: RecordingHandler, two_hundred_files: Path
) -> None:
    """Stock storescu leaves Nagle on; without quick ACKs each instance waits ~40 ms."""
    started = time.monotonic()
    _run(["storescu", "+sd", HOST, str(server.port), str(two_hundred_files)], env=_env(False))
    elapsed = time.monotonic() - started
    assert len(handler.stores) == 200
    assert elapsed < 200 * 0.040 / 2, f"200 instances took {elapsed:.2f}s"


@_needs("storescu")
def test_concurrent_storescu_associations(
    server: ServerThread, handler: RecordingHandler, tmp_path: Path
) -> None:
    senders = 12
    procs = []
    for i in range(senders):
        directory = tmp_path / f"sender{i}"
        make_image_files(directory, 8, rows=16, columns=16)
        procs.append(
            subprocess.Popen(
                ["storescu", "-aet", f"SENDER{i}", "+sd", HOST, str(server.port), str(directory)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=_env(True),
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    handler.wait(lambda: len(handler.closes) == senders, what="all associations closed")
    assert handler.close_reasons() == ["released"] * senders
    assert len(handler.stores) == senders * 8
    per_association: dict[str, list[int]] = {}
    for association, request in handler.stores:
        per_association.setdefault(association.id, []).append(request.message_id)
    assert len(per_association) == senders
    assert all(ids == list(range(1, 9)) for ids in per_association.values())
    assert not server.associations()
