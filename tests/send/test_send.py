"""`mercury send` and send_files against real DCMTK peers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info
from typer.testing import CliRunner

from mercury.cli import app
from mercury.dicom.sop_classes import STORAGE_SOP_CLASSES
from mercury.send import SendProgress, Timeouts, find_dicom_files, send_files
from mercury.send.contexts import MAX_CONTEXTS, plan_associations
from mercury.send.files import DicomFile, Skipped, inspect_file
from tests.dicom.build import (
    DEFLATED,
    EXPLICIT_BE,
    IMPLICIT_LE,
    ct_slice,
    file_dataset,
)
from tests.send.conftest import Peer, free_port, write_dicom

StartPeer = Callable[..., Peer]
PRIVATE_SOP_CLASS = "1.3.12.2.1107.5.9.1"  # Siemens CSA Non-Image Storage


def received_by_uid(peer: Peer) -> dict[str, Path]:
    return {
        str(read_file_meta_info(path).MediaStorageSOPInstanceUID): path for path in peer.received()
    }


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["send", *args])
    return result.exit_code, result.stdout, result.stderr


def test_files_arrive_byte_identical(
    start_peer: StartPeer, ct_files: list[Path], tmp_path: Path
) -> None:
    peer = start_peer("+xa")  # accept every transfer syntax DCMTK knows
    others = tmp_path / "others"
    extra = [
        write_dicom(ct_slice(rows=16, columns=16), others / "implicit.dcm", IMPLICIT_LE),
        write_dicom(ct_slice(rows=16, columns=16), others / "big.dcm", EXPLICIT_BE),
        write_dicom(ct_slice(rows=16, columns=16), others / "deflated.dcm", DEFLATED),
    ]
    for name in ("JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        source = get_testdata_file(name)
        assert source is not None
        extra.append(Path(shutil.copy(source, others / name)))
    paths = [*ct_files, *extra]

    report = send_files([*ct_files, others], "127.0.0.1", peer.port, peer.ae_title)

    assert report.ok, report
    assert report.associations == 1
    assert len(report.succeeded) == len(paths)
    received = received_by_uid(peer)
    for path in paths:
        uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        arrived = received[uid]
        assert (
            read_file_meta_info(arrived).TransferSyntaxUID
            == read_file_meta_info(path).TransferSyntaxUID
        )
        assert file_dataset(arrived) == file_dataset(path), path.name


def test_uncompressed_fallback_when_the_peer_refuses_the_files_syntax(
    start_peer: StartPeer, tmp_path: Path
) -> None:
    peer = start_peer("+xi")  # implicit VR little endian only
    explicit = write_dicom(ct_slice(rows=16, columns=16), tmp_path / "explicit.dcm")
    deflated = write_dicom(ct_slice(rows=16, columns=16), tmp_path / "deflated.dcm", DEFLATED)
    big = write_dicom(ct_slice(rows=16, columns=16), tmp_path / "big.dcm", EXPLICIT_BE)

    report = send_files([explicit, deflated, big], "127.0.0.1", peer.port, peer.ae_title)

    assert report.error is None
    assert [result.path for result in report.succeeded] == [explicit, deflated]
    for path in (explicit, deflated):
        sent = dcmread(path)
        arrived = dcmread(received_by_uid(peer)[sent.SOPInstanceUID])
        assert arrived.file_meta.TransferSyntaxUID == IMPLICIT_LE
        assert arrived.PatientName == sent.PatientName
        assert arrived.Rows == sent.Rows
        assert arrived.PixelData == sent.PixelData
    [failed] = report.failed
    assert failed.path == big
    assert "dcmconv +te" in failed.comment


def test_compressed_file_the_peer_refuses(
    start_peer: StartPeer, ct_files: list[Path], tmp_path: Path
) -> None:
    peer = start_peer()  # uncompressed transfer syntaxes only
    source = get_testdata_file("JPEG2000.dcm")
    assert source is not None
    jpeg = Path(shutil.copy(source, tmp_path / "jpeg2000.dcm"))

    report = send_files([*ct_files, jpeg], "127.0.0.1", peer.port, peer.ae_title)

    assert report.error is None
    assert len(report.succeeded) >= len(ct_files)
    [result] = [r for r in report.results if r.path == jpeg]
    # Sent decompressed if pydicom has a JPEG 2000 decoder here, else a clear failure.
    assert result.outcome == "success" or "could not be converted" in result.comment


def test_refused_association(start_peer: StartPeer, ct_files: list[Path]) -> None:
    peer = start_peer("--refuse")
    report = send_files(ct_files, "127.0.0.1", peer.port, peer.ae_title)
    assert not report.ok
    assert report.error is not None
    assert "association rejected" in report.error
    assert all(result.status is None for result in report.results)
    assert len(report.results) == len(ct_files)

    code, _, stderr = run_cli(
        *map(str, ct_files), "--to", f"127.0.0.1:{peer.port}", "--aec", "STORESCP"
    )
    assert code == 2
    assert "association rejected" in " ".join(stderr.split())


def test_called_ae_title_not_recognised(
    start_peer: StartPeer, ct_files: list[Path], tmp_path: Path
) -> None:
    database = tmp_path / "qrdb"
    database.mkdir()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        "NetworkTCPPort = 104\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nARCHIVE {database} RW (100, 100mb) ANY\nAETable END\n",
        encoding="utf-8",
    )
    peer = start_peer(command=("dcmqrscp", "-c", str(config)), ae_title="ARCHIVE")

    code, _, stderr = run_cli(str(ct_files[0]), "--to", f"127.0.0.1:{peer.port}", "--aec", "WRONG")
    message = " ".join(stderr.split())
    assert code == 2
    assert "called AE title 'WRONG' not recognised" in message
    assert "--aec" in message

    assert send_files(ct_files[:1], "127.0.0.1", peer.port, "ARCHIVE").ok


def test_connection_refused(ct_files: list[Path]) -> None:
    port = free_port()  # nothing listens there
    report = send_files(ct_files, "127.0.0.1", port, "ANY")
    assert report.error is not None
    assert "connection refused" in report.error
    assert "receiver is running" in report.error

    code, stdout, stderr = run_cli(str(ct_files[0]), "--to", f"127.0.0.1:{port}", "--aec", "ANY")
    assert code == 2
    assert "connection refused" in stderr
    assert "Sent" not in stdout


def test_unknown_host(ct_files: list[Path]) -> None:
    report = send_files(
        ct_files[:1], "no-such-host.invalid", 104, "ANY", timeouts=Timeouts(connect=5)
    )
    assert report.error is not None
    assert "cannot resolve host 'no-such-host.invalid'" in report.error


def test_non_dicom_files_are_skipped_with_a_warning(
    start_peer: StartPeer, ct_files: list[Path]
) -> None:
    peer = start_peer()
    folder = ct_files[0].parent
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    (folder / "empty").write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 20)

    code, stdout, stderr = run_cli(
        str(folder), "--to", f"127.0.0.1:{peer.port}", "--aec", "STORESCP"
    )

    assert code == 0, stderr
    assert "skipped 3 path(s)" in stderr
    assert "notes.txt" in stderr
    assert "fake.dcm" in stderr
    assert f"Sent {len(ct_files)} of {len(ct_files)} file(s)" in " ".join(stdout.split())
    assert len(peer.received()) == len(ct_files)


def test_folders_are_searched_recursively_unless_told_not_to(
    start_peer: StartPeer, ct_files: list[Path], tmp_path: Path
) -> None:
    deeper = tmp_path / "ct" / "deeper" / "still"
    write_dicom(ct_slice(rows=8, columns=8), deeper / "deep.dcm")
    files, _ = find_dicom_files([tmp_path / "ct"])
    assert len(files) == len(ct_files) + 1
    files, _ = find_dicom_files([tmp_path / "ct"], recursive=False)
    assert len(files) == len(ct_files)


def test_a_sop_class_the_peer_does_not_store(
    start_peer: StartPeer, ct_files: list[Path], tmp_path: Path
) -> None:
    peer = start_peer()  # not promiscuous: private SOP classes are refused
    private = ct_slice(rows=8, columns=8)
    private.SOPClassUID = PRIVATE_SOP_CLASS
    private_path = write_dicom(private, tmp_path / "private.dcm")

    report = send_files([*ct_files, private_path], "127.0.0.1", peer.port, peer.ae_title)

    assert report.error is None
    assert len(report.succeeded) == len(ct_files)
    [failed] = report.failed
    assert failed.path == private_path
    assert "does not accept" in failed.comment
    assert PRIVATE_SOP_CLASS in failed.comment

    code, stdout, _ = run_cli(
        *map(str, [*ct_files, private_path]), "--to", f"127.0.0.1:{peer.port}", "--aec", "STORESCP"
    )
    assert code == 1
    assert "1 failed" in stdout

    only_private = send_files([private_path], "127.0.0.1", peer.port, peer.ae_title)
    assert only_private.error is not None
    assert "none of its presentation contexts" in only_private.error


def test_peer_aborts_while_sending(start_peer: StartPeer, ct_files: list[Path]) -> None:
    peer = start_peer("--abort-after")
    started = time.monotonic()
    report = send_files(ct_files, "127.0.0.1", peer.port, peer.ae_title)
    assert time.monotonic() - started < 10, "the abort must end the wait, not the timeout"
    assert report.error is not None
    assert "association ended while sending" in report.error
    assert not report.succeeded
    assert len(report.results) == len(ct_files)


def test_dimse_timeout(start_peer: StartPeer, ct_files: list[Path]) -> None:
    peer = start_peer("--sleep-during", "5")
    started = time.monotonic()
    report = send_files(
        ct_files[:2], "127.0.0.1", peer.port, peer.ae_title, timeouts=Timeouts(dimse=1)
    )
    assert time.monotonic() - started < 5
    assert report.error is not None
    assert "--dimse-timeout" in report.error
    assert report.failed[0].comment.startswith("no response within the DIMSE timeout")


@pytest.mark.parametrize("nodelay", [False, True])
def test_many_small_files_without_stalls(
    start_peer: StartPeer, tmp_path: Path, nodelay: bool
) -> None:
    # A missed C-STORE response would stall for the DIMSE timeout and fail the send.
    peer = start_peer(nodelay=nodelay)
    template = ct_slice(rows=4, columns=4)
    # Without TCP_NODELAY storescp's own replies wait for delayed ACKs (~50 ms a file).
    count = 300 if nodelay else 100
    paths = []
    for index in range(count):
        template.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1234.{index + 1}"
        template.InstanceNumber = str(index + 1)
        paths.append(write_dicom(template, tmp_path / "small" / f"{index:03d}.dcm"))

    started = time.monotonic()
    report = send_files(paths, "127.0.0.1", peer.port, peer.ae_title, timeouts=Timeouts(dimse=3))
    elapsed = time.monotonic() - started

    assert report.ok, report.error
    assert len(report.succeeded) == count
    assert len(peer.received()) == count
    assert elapsed < 30, f"{elapsed:.1f} s for {count} small files"


def test_progress_reports_files_and_bytes(start_peer: StartPeer, ct_files: list[Path]) -> None:
    peer = start_peer()
    updates: list[SendProgress] = []
    report = send_files(ct_files, "127.0.0.1", peer.port, peer.ae_title, progress=updates.append)
    assert report.ok
    total = sum(path.stat().st_size for path in ct_files)
    assert updates[0].files_done == 0
    assert [u.files_done for u in updates] == list(range(len(ct_files) + 1))
    assert all(u.files_total == len(ct_files) and u.bytes_total == total for u in updates)
    assert updates[-1].bytes_done == total
    assert updates[-1].last is not None
    assert updates[-1].last.status == 0


def test_json_report(start_peer: StartPeer, ct_files: list[Path]) -> None:
    peer = start_peer()
    code, stdout, _ = run_cli(
        str(ct_files[0].parent), "--to", f"127.0.0.1:{peer.port}", "--aec", "STORESCP", "--json"
    )
    assert code == 0
    report = json.loads(stdout)
    assert report["ok"] is True
    assert report["sent"] == len(ct_files)
    assert report["failed"] == 0
    assert {entry["status"] for entry in report["files"]} == {0}
    assert report["files"][0]["status_text"] == "0x0000 Success"


def test_many_sop_classes_are_split_over_associations(
    start_peer: StartPeer, tmp_path: Path
) -> None:
    peer = start_peer("-pm")  # promiscuous: stores any SOP class
    classes = sorted(STORAGE_SOP_CLASSES)[:70]  # 70 classes x 2 contexts > 128
    paths = []
    for index, sop_class in enumerate(classes):
        ds = ct_slice(rows=4, columns=4, index=index)
        ds.SOPClassUID = sop_class
        paths.append(write_dicom(ds, tmp_path / "classes" / f"{index:02d}.dcm"))

    report = send_files(paths, "127.0.0.1", peer.port, peer.ae_title)

    assert report.error is None
    assert report.associations == 2
    # DCMTK refuses a few non-image storage classes even in promiscuous mode.
    assert all("does not accept" in result.comment for result in report.failed)
    assert len(report.failed) < 10
    assert len(peer.received()) == len(report.succeeded)


def test_plan_associations_respects_the_context_limit() -> None:
    pairs = [
        (f"1.2.3.{n}", syntax)
        for n in range(100)
        for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    ]
    groups = plan_associations(pairs)
    assert all(len(group) <= MAX_CONTEXTS for group in groups)
    planned = {
        (context.sop_class_uid, context.transfer_syntaxes) for group in groups for context in group
    }
    for sop_class, syntax in pairs:
        assert (sop_class, (syntax,)) in planned
    # A SOP class never straddles two associations.
    owners: dict[str, int] = {}
    for number, group in enumerate(groups):
        for context in group:
            assert owners.setdefault(context.sop_class_uid, number) == number


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "localhost", "--aec", "X"], "HOST:PORT"),
        (["--to", "localhost:99999", "--aec", "X"], "between 1 and 65535"),
        (["--to", "localhost:104", "--aec", "WAY_TOO_LONG_AE_TITLE"], "not an AE title"),
        (["--to", "localhost:104", "--aec", "X", "--aet", "BACK\\SLASH"], "not an AE title"),
    ],
)
def test_bad_arguments(args: list[str], message: str, ct_files: list[Path]) -> None:
    code, stdout, stderr = run_cli(str(ct_files[0]), *args)
    assert code == 2
    assert message in " ".join((stdout + stderr).split())


def test_nothing_to_send(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello", encoding="utf-8")
    code, _, stderr = run_cli(str(tmp_path), "--to", "127.0.0.1:104", "--aec", "X")
    assert code == 2
    assert "no DICOM files to send" in stderr


def test_silent_peer_times_out_with_advice(ct_files: list[Path]) -> None:
    # A TCP listener that never speaks DICOM: the kernel accepts, nobody answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        report = send_files(ct_files[:1], "127.0.0.1", port, "ANY", timeouts=Timeouts(acse=1))
    assert time.monotonic() - started < 10
    assert report.error is not None
    assert "did not answer the association request within 1 s" in report.error
    assert "--acse-timeout" in report.error


def test_the_installed_command(start_peer: StartPeer, ct_files: list[Path]) -> None:
    executable = Path(sys.executable).with_name("mercury")
    assert executable.exists(), "the mercury command is not installed in this environment"
    peer = start_peer()
    done = subprocess.run(
        [
            str(executable),
            "send",
            str(ct_files[0].parent),
            "--to",
            f"127.0.0.1:{peer.port}",
            "--aec",
            "STORESCP",
            "--aet",
            "TESTSCU",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(peer.received()) == len(ct_files)
    refused = subprocess.run(
        [
            str(executable),
            "send",
            str(ct_files[0]),
            "--to",
            f"127.0.0.1:{free_port()}",
            "--aec",
            "STORESCP",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2
    assert "connection refused" in refused.stderr


@given(st.binary(max_size=400))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_inspecting_garbage_never_raises(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + tail)
    result = inspect_file(path)
    assert isinstance(result, DicomFile | Skipped)
