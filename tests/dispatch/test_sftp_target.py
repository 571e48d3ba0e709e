"""The sftp target against a real OpenSSH server started for these tests.

The server runs on this machine, so what it wrote is checked on the local file system.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mercury.config.targets import SftpTarget
from mercury.dispatch.base import (
    OutgoingInstance,
    SenderContext,
    Shipment,
    TargetUnreachable,
)
from mercury.dispatch.registry import create_sender
from mercury.dispatch.targets.sftp import RemoteJobFolder, SftpSender
from tests.dispatch.support import shipment
from tests.helpers import free_port, make_small_images, port_open, wait_for

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshServer:
    port: int
    client_key: Path
    other_key: Path
    """A key the server does not know."""
    known_hosts: Path
    """Holds the server's host key."""
    wrong_known_hosts: Path
    """Holds another key for the server's address."""
    empty_known_hosts: Path


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is missing: install the Debian package openssh-server")
    home = tmp_path_factory.mktemp("sshd")
    host_key = keygen(home / "host_key")
    client_key = keygen(home / "client_key")
    other_key = keygen(home / "other_key")
    other_host_key = keygen(home / "other_host_key")
    (home / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()

    def known_hosts(name: str, key: Path) -> Path:
        key_type, blob = Path(f"{key}.pub").read_text().split()[:2]
        path = home / name
        path.write_text(f"[127.0.0.1]:{port} {key_type} {blob}\n")
        return path

    empty_known_hosts = home / "empty_known_hosts"
    empty_known_hosts.write_text("")
    config = home / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\n"
        f"PidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
    log_path = home / "sshd.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-p", str(port), "-f", str(config), "-h", str(host_key)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: process.poll() is not None or port_open(port),
            timeout=20,
            what="sshd to listen",
        )
        if process.poll() is not None:
            pytest.fail(f"sshd exited: {log_path.read_text(errors='replace')}")
        yield SshServer(
            port=port,
            client_key=client_key,
            other_key=other_key,
            known_hosts=known_hosts("known_hosts", host_key),
            wrong_known_hosts=known_hosts("wrong_known_hosts", other_host_key),
            empty_known_hosts=empty_known_hosts,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sftp_sender(
    server: SshServer,
    folder: Path | str,
    *,
    file_filter: str = "",
    key: Path | None = None,
    known_hosts: Path | None = None,
    port: int | None = None,
) -> SftpSender:
    target = SftpTarget(
        target_type="sftp",
        folder=str(folder),
        user="root",
        host="127.0.0.1",
        port=port or server.port,
        key_file=key or server.client_key,
        known_hosts=known_hosts or server.known_hosts,
        file_filter=file_filter,
        timeout=10,
    )
    sender = create_sender("remote", target, SenderContext("MERCURY", Path("/tmp")))
    assert isinstance(sender, SftpSender)
    return sender


def assert_delivered(job_dir: Path, job: Shipment) -> None:
    expected = {item.export_name: item for item in job.instances}
    assert sorted(os.listdir(job_dir)) == sorted([*expected, ".complete"])
    assert (job_dir / ".complete").stat().st_size == 0
    for name, item in expected.items():
        assert (job_dir / name).read_bytes() == item.path.read_bytes()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_small_images(tmp_path_factory.mktemp("src"), 4, per_series=2)


def test_a_job_lands_whole_in_a_folder_made_as_needed(
    sshd: SshServer, tmp_path: Path, images: list[Path]
) -> None:
    out = tmp_path / "remote" / "deep" / "out"
    sender = sftp_sender(sshd, out)
    job = shipment(images, job_id="s1")

    report = sender.send(job)

    assert [r.status for r in report.results] == ["sent"] * 4
    assert os.listdir(out) == ["s1"]
    assert_delivered(out / "s1", job)
    assert any("created folder" in note for note in report.notes)
    assert sender.describe() == f"sftp root@127.0.0.1:{sshd.port}{out}"
    assert type(sender).resumable is False


def test_complete_is_written_last_then_the_folder_is_renamed(
    sshd: SshServer, tmp_path: Path, images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original_put, original_marker = RemoteJobFolder.put, RemoteJobFolder.write_marker
    original_rename = RemoteJobFolder.rename

    def put(self: RemoteJobFolder, item: OutgoingInstance, path: str) -> None:
        calls.append("put")
        original_put(self, item, path)

    def write_marker(self: RemoteJobFolder, path: str) -> None:
        calls.append("marker")
        assert path == f"{tmp_path}/.o1.partial/.complete"
        original_marker(self, path)

    def rename(self: RemoteJobFolder, old: str, new: str) -> None:
        calls.append(f"rename {old} -> {new}")
        original_rename(self, old, new)

    monkeypatch.setattr(RemoteJobFolder, "put", put)
    monkeypatch.setattr(RemoteJobFolder, "write_marker", write_marker)
    monkeypatch.setattr(RemoteJobFolder, "rename", rename)

    sftp_sender(sshd, tmp_path).send(shipment(images, job_id="o1"))

    assert calls == ["put"] * 4 + ["marker", f"rename {tmp_path}/.o1.partial -> {tmp_path}/o1"]


def test_file_filter_excludes(sshd: SshServer, tmp_path: Path, images: list[Path]) -> None:
    job = shipment(images, job_id="ff")
    left_out = job.instances[-1].series_uid

    report = sftp_sender(sshd, tmp_path, file_filter=f"{left_out}#*").send(job)

    kept = [item.export_name for item in job.instances if item.series_uid != left_out]
    assert sorted(os.listdir(tmp_path / "ff")) == sorted([*kept, ".complete"])
    excluded = [r for r in report.results if "excluded by file_filter" in r.message]
    assert len(excluded) == 2
    assert {r.status for r in report.results} == {"sent"}


def test_retry_after_a_partial_attempt_and_again_when_complete(
    sshd: SshServer, tmp_path: Path, images: list[Path]
) -> None:
    job = shipment(images, job_id="rt")
    leftover = tmp_path / ".rt.partial" / "sub"
    leftover.mkdir(parents=True)
    (leftover / "half.dcm").write_bytes(b"cut")
    (tmp_path / ".rt.partial" / job.instances[0].export_name).write_bytes(b"cut short")
    sender = sftp_sender(sshd, tmp_path)

    report = sender.send(job)
    assert sorted(os.listdir(tmp_path)) == ["rt"]
    assert_delivered(tmp_path / "rt", job)
    assert any("earlier attempt" in note for note in report.notes)

    report = sender.send(job)
    assert sorted(os.listdir(tmp_path)) == ["rt"]
    assert_delivered(tmp_path / "rt", job)
    assert any("replaced" in note for note in report.notes)


def test_unknown_host_key_is_refused(sshd: SshServer, tmp_path: Path, images: list[Path]) -> None:
    sender = sftp_sender(sshd, tmp_path, known_hosts=sshd.empty_known_hosts)
    expected = f"host key of 127.0.0.1:{sshd.port} not in known_hosts {sshd.empty_known_hosts}"
    with pytest.raises(TargetUnreachable, match=re.escape(expected)):
        sender.send(shipment(images))
    verdict = sender.probe()
    assert not verdict.ok
    assert expected in verdict.message
    assert "ssh-keyscan" in verdict.message
    assert os.listdir(tmp_path) == []


def test_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path, images: list[Path]) -> None:
    sender = sftp_sender(sshd, tmp_path, known_hosts=sshd.wrong_known_hosts)
    with pytest.raises(TargetUnreachable, match="does not match"):
        sender.send(shipment(images))


def test_missing_known_hosts_file_is_explained(
    sshd: SshServer, tmp_path: Path, images: list[Path]
) -> None:
    sender = sftp_sender(sshd, tmp_path, known_hosts=tmp_path / "nowhere")
    with pytest.raises(TargetUnreachable, match=r"known_hosts file .* does not exist"):
        sender.send(shipment(images))


def test_a_key_the_server_does_not_know_is_refused(
    sshd: SshServer, tmp_path: Path, images: list[Path]
) -> None:
    sender = sftp_sender(sshd, tmp_path, key=sshd.other_key)
    with pytest.raises(TargetUnreachable, match="refused authentication"):
        sender.send(shipment(images))
    assert "refused authentication" in sender.probe().message


def test_no_server_listening_is_unreachable(
    sshd: SshServer, tmp_path: Path, images: list[Path]
) -> None:
    sender = sftp_sender(sshd, tmp_path, port=free_port())
    with pytest.raises(TargetUnreachable, match="cannot connect"):
        sender.send(shipment(images))
    verdict = sender.probe()
    assert not verdict.ok
    assert "SSH server is running" in verdict.message


def test_a_folder_under_a_file_is_unreachable(
    sshd: SshServer, tmp_path: Path, images: list[Path]
) -> None:
    (tmp_path / "a-file").write_text("x")
    sender = sftp_sender(sshd, tmp_path / "a-file" / "out")
    with pytest.raises(TargetUnreachable, match="cannot create folder"):
        sender.send(shipment(images))
    assert not sender.probe().ok


def test_probe_writes_and_removes_a_file(sshd: SshServer, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    verdict = sftp_sender(sshd, out).probe()
    assert verdict.ok, verdict.message
    assert "writable" in verdict.message
    assert os.listdir(out) == []
    shutil.rmtree(out)
