"""The sftp target: each job is copied to ``<folder>/<job id>/`` on a remote host over SFTP,
whole or not at all (see :mod:`mercury.dispatch.targets.staging`).

The server's host key must already be in the known_hosts file: an unknown or changed key
is refused, never learnt on first use. Authentication uses ``key_file`` (the password, if
set, unlocks it or is tried after it), else the password alone, else the SSH agent and the
keys in ``~/.ssh``. The destination folder is created as needed. The staging folder is
renamed into place with OpenSSH's posix-rename extension when the server has it.
"""

from __future__ import annotations

import errno
import posixpath
import stat
import uuid
from pathlib import Path
from typing import Any, ClassVar

import paramiko

from mercury.config.targets import SftpTarget, TargetBase
from mercury.dispatch.base import (
    OutgoingInstance,
    ProbeResult,
    SenderContext,
    SendReport,
    Shipment,
    TargetUnreachable,
)
from mercury.dispatch.targets.staging import deliver, nothing_to_deliver, plan_job

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in the known_hosts file."""


class _RefuseUnknownHosts(paramiko.MissingHostKeyPolicy):
    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise UnknownHostKey(f"{key.get_name()} {key.fingerprint}")


class RemoteJobFolder:
    """:class:`~mercury.dispatch.targets.staging.JobFolder` on an SFTP server."""

    failures: tuple[type[Exception], ...] = (OSError, EOFError, paramiko.SSHException)

    def __init__(self, sftp: paramiko.SFTPClient, host: str) -> None:
        self.sftp = sftp
        self.host = host
        self._posix_rename = True

    def where(self, path: str) -> str:
        return f"{self.host}:{path}"

    def exists(self, path: str) -> bool:
        try:
            self.sftp.lstat(path)
        except FileNotFoundError:
            return False
        return True

    def remove_tree(self, path: str) -> None:
        mode = self.sftp.lstat(path).st_mode or 0
        if not stat.S_ISDIR(mode):
            self.sftp.remove(path)
            return
        for entry in self.sftp.listdir_attr(path):
            self.remove_tree(posixpath.join(path, entry.filename))
        self.sftp.rmdir(path)

    def make_dir(self, path: str) -> None:
        self.sftp.mkdir(path)

    def put(self, item: OutgoingInstance, path: str) -> None:
        self.sftp.put(str(item.path), path, confirm=True)

    def write_marker(self, path: str) -> None:
        with self.sftp.open(path, "wb"):
            pass

    def rename(self, old: str, new: str) -> None:
        if self._posix_rename:
            try:
                self.sftp.posix_rename(old, new)
                return
            except OSError as exc:
                # a server without the extension answers SSH_FX_OP_UNSUPPORTED
                if exc.errno is not None or "unsupported" not in str(exc).lower():
                    raise
                self._posix_rename = False
        self.sftp.rename(old, new)

    def sync_dir(self, path: str) -> None:
        """SFTP has no way to make a folder's entries durable; the server's disk decides."""

    def make_dirs(self, path: str) -> list[str]:
        """``mkdir -p``; returns the folders it created."""
        created: list[str] = []
        current = "/" if path.startswith("/") else ""
        for part in [segment for segment in path.split("/") if segment]:
            current = posixpath.join(current, part) if current else part
            try:
                mode = self.sftp.stat(current).st_mode or 0
            except FileNotFoundError:
                self.sftp.mkdir(current)
                created.append(current)
                continue
            if not stat.S_ISDIR(mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", current)
        return created


class SftpSender:
    resumable: ClassVar[bool] = False

    def __init__(self, name: str, target: SftpTarget) -> None:
        self.name = name
        self.target = target
        self.known_hosts = Path(target.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()

    # -- connection -------------------------------------------------------------------------

    def _host(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def connect(self) -> paramiko.SSHClient:
        """An authenticated connection whose host key was verified; raises
        :class:`TargetUnreachable` naming what went wrong and how to fix it."""
        target = self.target
        if not self.known_hosts.is_file():
            raise TargetUnreachable(
                f"target {self.name}: known_hosts file {self.known_hosts} does not exist; "
                f"create it with the server's verified host key (ssh-keyscan -p {target.port} "
                f"{target.host}, then compare the fingerprint)"
            )
        if target.key_file is not None and not Path(target.key_file).is_file():
            raise TargetUnreachable(
                f"target {self.name}: key file {target.key_file} does not exist"
            )
        client = paramiko.SSHClient()
        try:
            client.load_system_host_keys(str(self.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise TargetUnreachable(
                f"target {self.name}: cannot read known_hosts file {self.known_hosts}: {exc}"
            ) from exc
        client.set_missing_host_key_policy(_RefuseUnknownHosts())
        password = target.password.get_secret_value() if target.password else None
        use_default_keys = target.key_file is None and password is None
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                password=password,
                key_filename=str(target.key_file) if target.key_file else None,
                timeout=target.timeout,
                banner_timeout=target.timeout,
                auth_timeout=target.timeout,
                channel_timeout=target.timeout,
                allow_agent=use_default_keys,
                look_for_keys=use_default_keys,
            )
        except Exception as exc:
            client.close()
            raise TargetUnreachable(self._connect_problem(exc)) from exc
        return client

    def _connect_problem(self, exc: Exception) -> str:
        target, prefix = self.target, f"target {self.name}: "
        if isinstance(exc, UnknownHostKey):
            return (
                f"{prefix}host key of {self._host()} not in known_hosts {self.known_hosts} "
                f"(the server offers {exc}); add the server's key after checking its "
                f"fingerprint: ssh-keyscan -p {target.port} {target.host} >> {self.known_hosts}"
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return (
                f"{prefix}host key of {self._host()} does not match the one in known_hosts "
                f"{self.known_hosts} (offered {exc.key.get_name()} {exc.key.fingerprint}); "
                "the server was reinstalled or something is in between: verify, then "
                "update its known_hosts entry"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            how = (
                f"key {target.key_file}"
                if target.key_file
                else "password"
                if target.password
                else "SSH agent and ~/.ssh keys"
            )
            return (
                f"{prefix}{target.user}@{self._host()} refused authentication with the {how}: "
                f"{exc}; check user, key_file and password"
            )
        if isinstance(exc, paramiko.SSHException):
            return f"{prefix}SSH handshake with {self._host()} failed: {exc}"
        if isinstance(exc, OSError):
            reason = str(exc)
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                reason = "; ".join(sorted({str(error) for error in exc.errors.values()}))
            return (
                f"{prefix}cannot connect to {self._host()}: {reason}; check host, port and "
                "that the SSH server is running"
            )
        return f"{prefix}connecting to {self._host()} failed: {exc!r}"

    def _open(self, client: paramiko.SSHClient) -> RemoteJobFolder:
        try:
            sftp = client.open_sftp()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TargetUnreachable(
                f"target {self.name}: {self._host()} accepted SSH but not SFTP: {exc}; "
                "enable the sftp subsystem on the server"
            ) from exc
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(self.target.timeout)
        return RemoteJobFolder(sftp, self.target.host)

    def _ensure_folder(self, remote: RemoteJobFolder) -> list[str]:
        try:
            created = remote.make_dirs(self.target.folder)
        except remote.failures as exc:
            raise TargetUnreachable(
                f"target {self.name}: cannot create folder {self.target.folder} on "
                f"{self._host()} as {self.target.user}: {exc}; create it or grant access"
            ) from exc
        return [f"created folder {remote.where(path)}" for path in created]

    # -- sending ----------------------------------------------------------------------------

    def send(self, shipment: Shipment) -> SendReport:
        plan = plan_job(shipment, self.target.file_filter)
        if not plan.to_send:
            return nothing_to_deliver(plan)
        client = self.connect()
        try:
            remote = self._open(client)
            notes = self._ensure_folder(remote)
            report = deliver(remote, self.target.folder, plan, shipment)
        finally:
            client.close()
        report.notes[:0] = notes
        return report

    def probe(self) -> ProbeResult:
        details: dict[str, Any] = {"host": self._host(), "folder": self.target.folder}
        try:
            client = self.connect()
        except TargetUnreachable as exc:
            return ProbeResult(False, str(exc), details)
        try:
            try:
                remote = self._open(client)
                notes = self._ensure_folder(remote)
            except TargetUnreachable as exc:
                return ProbeResult(False, str(exc), details)
            probe_file = posixpath.join(self.target.folder, f".mercury-probe-{uuid.uuid4().hex}")
            try:
                with remote.sftp.open(probe_file, "wb") as handle:
                    handle.write(b"mercury write probe\n")
                remote.sftp.remove(probe_file)
            except remote.failures as exc:
                return ProbeResult(
                    False,
                    f"cannot write to {remote.where(self.target.folder)} as "
                    f"{self.target.user}: {exc}; check the folder's permissions and free space",
                    details,
                )
        finally:
            client.close()
        message = f"{self.target.user}@{self._host()}: folder {self.target.folder} is writable"
        if notes:
            message += "; " + "; ".join(notes)
        return ProbeResult(True, message, details)

    def describe(self) -> str:
        folder = self.target.folder
        path = folder if folder.startswith("/") else f"/~/{folder}"
        return f"sftp {self.target.user}@{self._host()}{path}"


def create(name: str, target: TargetBase, context: SenderContext) -> SftpSender:
    assert isinstance(target, SftpTarget)
    return SftpSender(name, target)
