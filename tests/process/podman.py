"""A real Docker Engine API for tests and benchmarks: Podman's `podman system service`.

No Docker engine and no image registry are available, so the service runs with its own
configuration and storage in a private folder, and test images are made by importing a
root filesystem built from Debian's static busybox (`busybox-static`) through the Docker
API itself (`POST /images/create?fromSrc=-`), as one would on a real Docker engine.

Needs the Debian packages `podman`, `runc` and `busybox-static`. Used by
tests/process/test_docker_runner.py (the `podman` fixture) and bench/process_docker.py
(`start_podman_service`, `build_busybox_image`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

BUSYBOX_IMAGE = "localhost/mercury-test/busybox:1"
MONAI_IMAGE = "localhost/mercury-test/busybox-monai:1"
MISSING_IMAGE = "localhost/mercury-test/absent:1"
BROKEN_IMAGE = "localhost/mercury-test/broken:1"
"""Its command does not exist: the container is created but cannot start."""
SCRIPT_CMD = ["/bin/sh", "-c", 'eval "$SCRIPT"']
"""The test images' command: a module is the shell script in its SCRIPT variable."""
MONAI_MANIFEST = {
    "apiVersion": "1.0.0",
    # The Holoscan packager writes the command as a JSON list inside a string.
    "command": json.dumps(
        ["/bin/sh", "-c", 'echo "monai $(id -u)" > "$MONAI_OUTPUTPATH/monai.txt"']
    ),
    "environment": {"HOLOSCAN_INPUT_PATH": "input/", "HOLOSCAN_OUTPUT_PATH": "output/"},
    "input": {"path": "input/", "formats": None},
    "output": {"path": "output/", "format": None},
    "timeout": 0,
    "version": 1,
    "workingDirectory": "/",
}
REQUIRED_PACKAGES = "podman runc busybox-static"
CONTAINERS_CONF = """\
[containers]
# this sandbox refuses raising resource limits
default_ulimits = []

[engine]
# crun fails here (cgroups in hybrid mode)
runtime = "runc"
"""


def podman_missing() -> str | None:
    """Why Podman cannot be used here, or None."""
    if shutil.which("podman") is None:
        return (
            "podman is not installed "
            f"(apt-get install -y --no-install-recommends {REQUIRED_PACKAGES})"
        )
    return None


@dataclass
class PodmanService:
    """A running `podman system service`."""

    folder: Path
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """The podman CLI on the same configuration and storage."""
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, check=check)

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.podman("rm", "--all", "--force", check=False)
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def _podman_env(folder: Path, driver: str) -> dict[str, str]:
    conf = folder / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    storage = folder / f"storage-{driver}.conf"
    storage.write_text(
        "[storage]\n"
        f'driver = "{driver}"\n'
        f'graphroot = "{folder / "storage" / driver}"\n'
        f'runroot = "{folder / "run" / driver}"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def start_podman_service(folder: Path) -> PodmanService:
    """Start `podman system service` on a unix socket in ``folder``, with its own
    containers.conf and storage there (overlay, else vfs, else Podman's default storage).
    Returns once the API answers; call ``stop()`` when done."""
    reason = podman_missing()
    if reason is not None:
        raise RuntimeError(reason)
    folder.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] | None = None
    for driver in ("overlay", "vfs"):
        candidate = _podman_env(folder, driver)
        if (
            subprocess.run(
                ["podman", "info"], env=candidate, capture_output=True, check=False
            ).returncode
            == 0
        ):
            env = candidate
            break
    if env is None:  # private storage does not work here: Podman's default storage
        env = {**os.environ, "CONTAINERS_CONF": str(folder / "containers.conf")}
    socket_path = folder / "podman.sock"
    url = f"unix://{socket_path}"
    log_path = folder / "podman-service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", url],
            env=env,
            cwd=folder,  # conmon leaves files such as `oom` in its working directory
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = PodmanService(folder, url, env, process, log_path)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(
                f"podman system service exited ({process.returncode}): "
                + log_path.read_text(errors="replace")[-2000:]
            )
        if not socket_path.exists():
            return False
        try:
            return bool(service.client().ping())
        except Exception:
            return False

    try:
        wait_for(answers, timeout=60, what="podman system service to answer")
    except BaseException:
        service.stop()
        raise
    return service


def _static_busybox() -> Path:
    path = shutil.which("busybox")
    if path is None:
        raise RuntimeError("busybox is not installed (apt-get install -y busybox-static)")
    real = Path(path).resolve()
    ldd = subprocess.run(["ldd", str(real)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        raise RuntimeError(f"{real} is not statically linked: apt-get install -y busybox-static")
    return real


def _rootfs_tar(files: dict[str, bytes]) -> bytes:
    """A root filesystem: /bin/busybox with a link per applet, /tmp, and ``files``."""
    busybox = _static_busybox()
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))

        for name in ("bin", "etc", "proc", "sys", "dev", "root"):
            add_dir(name)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, now
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        for dirs in sorted({str(Path(name).parent) for name in files} - {"."}):
            parts = Path(dirs).parts
            for depth in range(1, len(parts) + 1):
                sub = "/".join(parts[:depth])
                if sub not in ("bin", "etc", "tmp"):
                    add_dir(sub)
        for name, data in files.items():
            add_file(name, data)
    return buffer.getvalue()


def build_busybox_image(
    url: str,
    name: str,
    files: dict[str, bytes] | None = None,
    command: list[str] | None = None,
) -> str:
    """Import a busybox image called ``name`` (repository:tag) into the engine at ``url``.

    Its command (unless ``command``) runs the shell script in the SCRIPT environment
    variable; ``files`` (path inside the image without the leading '/' -> content) are
    added. Returns the image id.
    """
    import docker

    client = docker.DockerClient(base_url=url)
    try:
        answer = client.api.import_image_from_data(
            _rootfs_tar(files or {}),
            changes=[f"CMD {json.dumps(command or SCRIPT_CMD)}", "ENV PATH=/bin"],
        )
        status = json.loads(answer.strip().splitlines()[-1])
        image_id = status.get("id") or status["status"]
        repository, _, tag = name.rpartition(":")
        client.images.get(image_id).tag(repository, tag)
        return str(image_id)
    finally:
        client.close()


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    """A Podman Docker-API service for the session, with the test images built once."""
    service = start_podman_service(tmp_path_factory.mktemp("podman"))
    try:
        build_busybox_image(service.url, BUSYBOX_IMAGE)
        build_busybox_image(
            service.url,
            MONAI_IMAGE,
            {"etc/monai/app.json": json.dumps(MONAI_MANIFEST).encode()},
        )
        build_busybox_image(service.url, BROKEN_IMAGE, command=["/bin/no-such-program"])
        yield service
    finally:
        service.stop()
