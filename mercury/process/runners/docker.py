"""The docker runner: each run of a module is one container on a Docker Engine API.

Any engine speaking the Docker Engine API works (Docker, or Podman's `podman system
service`); `processing.docker_url` says where it listens (null: DOCKER_HOST or the default
socket). Per run the runner:

* creates the container `mercury-<run_id>` from the module's `docker_tag`, with mercure's
  contract (run folders at /tmp/data, /tmp/output and /tmp/persistence, the contract
  environment plus the module's), labelled `mercury.run` / `mercury.job` so that
  :meth:`DockerRunner.remove_orphans` finds what a crashed processor left behind;
* never pulls: a missing image is an error that says so. Images are installed by the
  administrator (`docker pull`, `docker build`), so what runs on patient data is always an
  image somebody put there on purpose, and a registry outage never stalls processing;
* runs as a non-root user with every capability dropped, `no-new-privileges`, and no
  network unless the module has `network_enabled` (see :func:`container_user`);
* detects MONAI application packages by `/etc/monai/app.json` in the image, read from the
  created (not yet started) container, once per image. Like mercure, such a package is
  started with the `command` of its manifest (entrypoint cleared); it finds its input in
  MONAI_INPUTPATH / HOLOSCAN_INPUT_PATH and writes to MONAI_OUTPUTPATH /
  HOLOSCAN_OUTPUT_PATH, which are the same /tmp/data and /tmp/output folders every module
  gets. Unlike mercure, which runs every package as root, it runs as the same non-root
  user as any module; a package that must write inside its own image needs
  `requires_root` (and `processing.support_root_modules`);
* on :meth:`DockerRunHandle.wait`: follows the container's state until it ends or the
  timeout passes (then stops it: SIGTERM, SIGKILL after a short grace), writes the
  container's stdout and stderr to the run's log file, and removes the container with its
  anonymous volumes.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import signal
import tarfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types

from mercury.config.models import ProcessingConfig
from mercury.config.modules import DOCKER_ARGUMENT_ALLOW_LIST
from mercury.process.base import (
    CONTAINER_IN,
    CONTAINER_OUT,
    CONTAINER_PERSISTENCE,
    RunnerError,
    RunResult,
    RunSpec,
    contract_environment,
)

log = logging.getLogger(__name__)

MONAI_MANIFEST = "/etc/monai/app.json"
"""A MONAI application package (MAP) carries its manifest here."""

UNPRIVILEGED_USER = "65534:65534"
"""nobody:nogroup, for containers when mercury itself runs as root."""

DEFAULT_STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a run is stopped at its timeout."""

POLL_MIN = 0.01
POLL_MAX = 0.25
"""How often a running container's state is read, at first and at most."""

ENDED_STATES = frozenset({"exited", "dead", "stopped"})
"""Container states (Docker's and Podman's) after the module's process ended."""

ENGINE_LOST_AFTER = 60.0
"""Seconds the engine may not answer while a run is waited on before the run is an error."""

RUN_LABEL = "mercury.run"
JOB_LABEL = "mercury.job"


def container_user(spec: RunSpec) -> str | None:
    """The `uid:gid` the module's container runs as; None keeps the image's own user.

    Normally mercury's own uid and gid, so everything the module writes into the output
    folder belongs to mercury. When mercury runs as root, the owner of the run folder if
    that is not root, else nobody (65534): a module never gets root because mercury has
    it. Only `requires_root` modules, where the spec allows root, keep the image's user.
    """
    if spec.module.requires_root and spec.allow_root:
        return None
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        return f"{uid}:{gid}"
    try:
        owner = spec.out_dir.stat()
    except OSError:
        return UNPRIVILEGED_USER
    if owner.st_uid != 0:
        return f"{owner.st_uid}:{owner.st_gid}"
    return UNPRIVILEGED_USER


def _env_mapping(value: Any) -> dict[str, str]:
    """docker's `environment`/`labels` argument as a mapping (a dict or a KEY=VALUE list)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items: dict[str, str] = {}
        for item in value:
            key, _, val = str(item).partition("=")
            items[key] = val
        return items
    raise RunnerError(f"expected a mapping or a KEY=VALUE list, got {value!r}")


def gpu_environment(gpus: list[str]) -> dict[str, str]:
    """What tells a container which GPUs it has.

    NVIDIA_VISIBLE_DEVICES names host devices (the NVIDIA runtime reads it). Inside the
    container the devices it was given are numbered from 0, so CUDA_VISIBLE_DEVICES lists
    0..n-1 for numeric indices; GPU UUIDs stay valid everywhere and are passed as given.
    """
    if not gpus:
        return {}
    host = ",".join(gpus)
    inside = ",".join(str(i) for i in range(len(gpus))) if all(g.isdigit() for g in gpus) else host
    return {"NVIDIA_VISIBLE_DEVICES": host, "CUDA_VISIBLE_DEVICES": inside}


def monai_command(manifest: bytes) -> list[str] | None:
    """The command in a MONAI manifest: a list, a JSON list in a string (the Holoscan
    packager writes that), or a command line. None when the manifest has none."""
    try:
        data = json.loads(manifest)
    except ValueError:
        return None
    command = data.get("command") if isinstance(data, dict) else None
    if isinstance(command, list) and command:
        return [str(part) for part in command]
    if isinstance(command, str) and command.strip():
        text = command.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and parsed:
                return [str(part) for part in parsed]
        return shlex.split(text)
    return None


def container_kwargs(
    spec: RunSpec, user: str | None, command: list[str] | None = None
) -> dict[str, Any]:
    """Everything passed to `containers.create` for ``spec`` (no engine needed).

    ``user`` comes from :func:`container_user`; ``command`` overrides the image's command
    and clears its entrypoint (a MONAI package's manifest command).
    """
    module = spec.module
    if module.requires_root and not spec.allow_root:
        raise RunnerError(
            f"module {spec.module_name!r} requires root, which processing.support_root_modules "
            "does not allow; enable it only for modules you trust"
        )
    arguments = dict(module.docker_arguments)
    refused = sorted(set(arguments) - DOCKER_ARGUMENT_ALLOW_LIST)
    if refused:
        raise RunnerError(
            f"module {spec.module_name!r} sets docker arguments that are not allowed: "
            f"{', '.join(refused)}"
        )

    persistence = CONTAINER_PERSISTENCE if spec.persistence_dir is not None else None
    volumes: dict[str, dict[str, str]] = {
        str(spec.in_dir): {"bind": CONTAINER_IN, "mode": "rw"},
        str(spec.out_dir): {"bind": CONTAINER_OUT, "mode": "rw"},
    }
    if spec.persistence_dir is not None:
        volumes[str(spec.persistence_dir)] = {"bind": CONTAINER_PERSISTENCE, "mode": "rw"}
    reserved = {CONTAINER_IN, CONTAINER_OUT, CONTAINER_PERSISTENCE}
    for source, mount in module.additional_volumes.items():
        if mount.bind.rstrip("/") in reserved or source in volumes:
            raise RunnerError(
                f"module {spec.module_name!r}: additional volume {source} -> {mount.bind} "
                "collides with a run folder"
            )
        volumes[source] = {"bind": mount.bind, "mode": mount.mode}

    # The module's variables, then mercure's contract (which they cannot override, as in
    # mercure), then the GPUs this run was given.
    environment = _env_mapping(arguments.pop("environment", None))
    environment.update(_env_mapping(arguments.pop("env", None)))
    environment.update(module.environment)
    environment.update(contract_environment(CONTAINER_IN, CONTAINER_OUT, persistence))
    environment.update(gpu_environment(list(spec.gpus)))

    labels = _env_mapping(arguments.pop("labels", None))
    labels.update(spec.labels)
    labels.update(
        {
            RUN_LABEL: spec.run_id,
            JOB_LABEL: spec.job_id,
            "mercury.step": str(spec.step),
            "mercury.module": spec.module_name,
        }
    )

    runtime = arguments.pop("runtime", None) or spec.runtime
    kwargs: dict[str, Any] = {
        "image": module.docker_tag,
        "name": f"mercury-{spec.run_id}",
        "volumes": volumes,
        "environment": environment,
        "labels": labels,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        **arguments,
    }
    if user is not None:
        kwargs["user"] = user
    if not module.network_enabled:
        kwargs["network_mode"] = "none"
    if runtime:
        kwargs["runtime"] = runtime
    if spec.gpus:
        kwargs["device_requests"] = [
            docker.types.DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])
        ]
    if command is not None:
        kwargs["entrypoint"] = ""
        kwargs["command"] = command
    return kwargs


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_result(
    state: Mapping[str, Any],
    *,
    timed_out: float | None = None,
    cancelled: bool = False,
    monai: bool = False,
    mem_limit: Any = None,
) -> RunResult:
    """How an ended container's `State` reads as a run result."""
    raw_code = state.get("ExitCode")
    exit_code = int(raw_code) if raw_code is not None else None
    if cancelled:
        return RunResult("cancelled", exit_code, "cancelled", monai=monai)
    if timed_out is not None:
        return RunResult(
            "timeout", exit_code, f"stopped after {timed_out:g} s (module timeout)", monai=monai
        )
    if state.get("OOMKilled"):
        return RunResult(
            "failed",
            exit_code,
            f"killed: out of memory (exit code {exit_code}); the module needs more memory "
            "than its limit (docker_arguments.mem_limit) or this host has",
            monai=monai,
        )
    if exit_code == 0:
        return RunResult("succeeded", 0, "exit code 0", monai=monai)
    if exit_code is None:
        return RunResult("error", None, "the container ended without an exit code", monai=monai)
    message = f"exit code {exit_code}"
    if 128 < exit_code < 128 + 65:
        message += f" (killed by {_signal_name(exit_code - 128)}"
        if exit_code == 128 + signal.SIGKILL and mem_limit:
            message += f"; with mem_limit {mem_limit} this is usually running out of memory"
        message += ")"
    return RunResult("failed", exit_code, message, monai=monai)


class DockerRunHandle:
    """One started container."""

    def __init__(
        self,
        container: Any,
        spec: RunSpec,
        *,
        monai: bool,
        stop_grace: float,
    ) -> None:
        self._container = container
        self._spec = spec
        self._monai = monai
        self._stop_grace = stop_grace
        self._cancelled = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._result: RunResult | None = None

    @property
    def container_id(self) -> str:
        return str(self._container.id)

    def cancel(self) -> None:
        self._cancelled.set()
        self._wake.set()
        try:
            self._container.kill()
        except docker.errors.NotFound:
            pass  # already removed: the run is over
        except docker.errors.APIError as exc:
            log.debug("kill %s: %s", self._container.name, exc)  # not running any more

    def wait(self, timeout: float | None) -> RunResult:
        with self._lock:
            if self._result is None:
                self._result = self._wait(timeout)
            return self._result

    def _state(self) -> dict[str, Any]:
        info = self._container.client.api.inspect_container(self._container.id)
        return dict(info.get("State") or {})

    def _wait(self, timeout: float | None) -> RunResult:
        """Poll the container's state until it ends, the timeout passes or it is cancelled.

        Polling (10 ms, doubling up to POLL_MAX) rather than the engine's blocking wait
        endpoint: Podman's answers 0.2-0.9 s after the container ended, which dominated
        short runs, and a poll survives an engine restart or a dropped connection.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = POLL_MIN
        failing_since: float | None = None
        while True:
            try:
                state = self._state()
                failing_since = None
                if state.get("Status") in ENDED_STATES:
                    return self._finish(None, None)
            except docker.errors.NotFound:
                return self._finish(None, "the container was removed while it ran")
            except Exception as exc:  # the engine is restarting, or gone
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since > ENGINE_LOST_AFTER:
                    self._stop()
                    return self._finish(None, f"lost the Docker engine while waiting: {exc}")
            now = time.monotonic()
            if deadline is not None and now >= deadline and not self._cancelled.is_set():
                assert timeout is not None
                self._stop()
                return self._finish(timeout, None)
            pause = delay if deadline is None else max(0.0, min(delay, deadline - now))
            self._wake.wait(pause)
            self._wake.clear()
            delay = min(delay * 2, POLL_MAX)

    def _stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace (or the module's own stop_timeout)."""
        container = self._container
        try:
            if "stop_timeout" in self._spec.module.docker_arguments:
                container.stop()
            else:
                container.stop(timeout=max(1, round(self._stop_grace)))
        except Exception as exc:
            log.warning("stopping %s failed (%s); killing it", container.name, exc)
            try:
                container.kill()
            except Exception as kill_exc:
                log.warning("killing %s failed: %s", container.name, kill_exc)

    def _finish(self, timed_out: float | None, lost: str | None) -> RunResult:
        container = self._container
        state: dict[str, Any] = {}
        try:
            container.reload()
            state = dict(container.attrs.get("State") or {})
            if state.get("Running"):  # the engine answered oddly: make sure it ends
                container.kill()
                container.wait(timeout=30)
                container.reload()
                state = dict(container.attrs.get("State") or {})
        except Exception as exc:
            lost = lost or f"cannot inspect the container: {exc}"
        self._write_log()
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:
            log.warning("cannot remove container %s (%s); remove_orphans will", container.name, exc)
        if lost is not None and not self._cancelled.is_set() and timed_out is None:
            code = state.get("ExitCode")
            return RunResult("error", int(code) if code is not None else None, lost, self._monai)
        return run_result(
            state,
            timed_out=timed_out,
            cancelled=self._cancelled.is_set(),
            monai=self._monai,
            mem_limit=self._spec.module.docker_arguments.get("mem_limit"),
        )

    def _write_log(self) -> None:
        path = self._spec.log_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                for chunk in self._container.logs(
                    stdout=True, stderr=True, stream=True, follow=False, timestamps=False
                ):
                    out.write(chunk)
        except Exception as exc:
            log.warning("cannot write the log of %s to %s: %s", self._container.name, path, exc)
            try:
                with path.open("a", encoding="utf-8") as out:
                    out.write(f"\n[mercury] the container's log could not be read: {exc}\n")
            except OSError:
                pass


class DockerRunner:
    """Runs modules as containers on a Docker Engine API (Docker or Podman)."""

    name = "docker"

    def __init__(
        self, processing: ProcessingConfig, *, stop_grace: float = DEFAULT_STOP_GRACE
    ) -> None:
        self._url = processing.docker_url
        self._stop_grace = stop_grace
        self._client_lock = threading.Lock()
        self._client_obj: Any = None
        self._monai_lock = threading.Lock()
        self._monai_images: dict[str, tuple[str, bool, list[str] | None]] = {}
        """docker_tag -> (image id, is a MONAI package, its command): the manifest is read
        once per image, not per run."""

    def _where(self) -> str:
        return self._url or os.environ.get("DOCKER_HOST") or "the default socket"

    def _unreachable(self, exc: BaseException) -> RunnerError:
        return RunnerError(
            f"cannot reach the Docker engine at {self._where()}: is docker/podman running? "
            f"set processing.docker_url ({exc})"
        )

    def _client(self) -> Any:
        with self._client_lock:
            if self._client_obj is None:
                try:
                    if self._url:
                        self._client_obj = docker.DockerClient(base_url=self._url)
                    else:
                        self._client_obj = docker.from_env()
                except (docker.errors.DockerException, OSError) as exc:
                    raise self._unreachable(exc) from exc
            return self._client_obj

    def start(self, spec: RunSpec) -> DockerRunHandle:
        user = container_user(spec)
        kwargs = container_kwargs(spec, user)  # refuses root and disallowed arguments first
        self._prepare_folders(spec, user)
        client = self._client()
        created: list[Any] = []
        try:
            container, monai = self._create_for_run(client, spec, user, kwargs, created)
            try:
                container.start()
            except docker.errors.APIError as exc:
                raise RunnerError(
                    f"module {spec.module_name!r} could not start: {_explain(exc)}"
                ) from exc
        except BaseException as exc:
            for leftover in created:  # nothing stays behind from a run that did not start
                try:
                    leftover.remove(force=True, v=True)
                except Exception as cleanup_exc:
                    log.warning("cannot remove container %s: %s", leftover.name, cleanup_exc)
            if isinstance(exc, RunnerError):
                raise
            if isinstance(exc, docker.errors.DockerException):
                raise RunnerError(f"module {spec.module_name!r}: {_explain(exc)}") from exc
            if isinstance(exc, OSError):
                raise self._unreachable(exc) from exc
            raise
        return DockerRunHandle(container, spec, monai=monai, stop_grace=self._stop_grace)

    def _create_for_run(
        self,
        client: Any,
        spec: RunSpec,
        user: str | None,
        kwargs: dict[str, Any],
        created: list[Any],
    ) -> tuple[Any, bool]:
        """The run's container, created (not started), and whether it is a MONAI package.

        A MONAI package runs its manifest's command, which is only known once a container
        of the image exists: the first run of such an image creates its container twice;
        later runs reuse what was read, as long as the tag still names the same image.
        """
        tag = spec.module.docker_tag
        with self._monai_lock:
            known = self._monai_images.get(tag)
        guess = known[2] if known is not None else None
        if guess is not None:
            kwargs = container_kwargs(spec, user, guess)
        container = self._create(client, spec, kwargs)
        created.append(container)
        image_id = str(container.attrs.get("Image") or "")
        if known is not None and known[0] == image_id:
            return container, known[1]
        found = self._inspect_monai(container)
        monai, command = found if found is not None else (False, None)
        if found is not None and image_id:
            with self._monai_lock:
                self._monai_images[tag] = (image_id, monai, command)
        if command != guess:
            container.remove(force=True, v=True)
            created.remove(container)
            container = self._create(client, spec, container_kwargs(spec, user, command))
            created.append(container)
        return container, monai

    def _create(self, client: Any, spec: RunSpec, kwargs: dict[str, Any]) -> Any:
        image = kwargs["image"]
        for attempt in range(2):
            try:
                return client.containers.create(**kwargs)
            except docker.errors.ImageNotFound as exc:
                raise RunnerError(
                    f"image {image} is not on this Docker engine: pull or build it "
                    "(mercury never pulls on its own)"
                ) from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and attempt == 0 and self._remove_same_run(client, spec):
                    continue  # a leftover of this very run (a crash between create and remove)
                raise RunnerError(
                    f"module {spec.module_name!r}: cannot create its container: {_explain(exc)}"
                ) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _remove_same_run(client: Any, spec: RunSpec) -> bool:
        try:
            old = client.containers.get(f"mercury-{spec.run_id}")
        except docker.errors.NotFound:
            return True
        labels = (old.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(RUN_LABEL) != spec.run_id:
            return False
        old.remove(force=True, v=True)
        return True

    @staticmethod
    def _inspect_monai(container: Any) -> tuple[bool, list[str] | None] | None:
        """Whether the image is a MONAI package, and its manifest's command; None when
        the engine could not tell (then the run goes on as an ordinary module)."""
        try:
            stream, _stat = container.get_archive(MONAI_MANIFEST)
            archive = b"".join(stream)
        except docker.errors.NotFound:
            return False, None
        except docker.errors.APIError as exc:
            log.warning("cannot look for %s in %s: %s", MONAI_MANIFEST, container.name, exc)
            return None
        manifest = b""
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        extracted = tar.extractfile(member)
                        if extracted is not None:
                            manifest = extracted.read()
                        break
        except tarfile.TarError as exc:
            log.warning("unreadable %s in %s: %s", MONAI_MANIFEST, container.name, exc)
        return True, monai_command(manifest)

    @staticmethod
    def _prepare_folders(spec: RunSpec, user: str | None) -> None:
        """Make the folders the module writes to writable by its user.

        Only needed when mercury runs as root and the folders are root's: they are handed
        to the unprivileged user the container runs as (the folders, not their contents;
        input files are hard links into the spool and stay as they are).
        """
        if spec.persistence_dir is not None:
            spec.persistence_dir.mkdir(parents=True, exist_ok=True)
        if user is None or os.geteuid() != 0:
            return
        uid, gid = (int(part) for part in user.split(":"))
        folders: list[Path] = [spec.out_dir]
        if spec.persistence_dir is not None:
            folders.append(spec.persistence_dir)
        for folder in folders:
            info = folder.stat()
            if info.st_uid != uid:
                os.chown(folder, uid, gid)

    def remove_orphans(self, labels: Mapping[str, str]) -> list[str]:
        """Remove (killing if needed) every mercury container carrying all ``labels``."""
        client = self._client()
        filters = {"label": [RUN_LABEL, *(f"{key}={value}" for key, value in labels.items())]}
        removed: list[str] = []
        try:
            containers = client.containers.list(all=True, filters=filters)
        except docker.errors.DockerException as exc:
            raise RunnerError(f"cannot list containers: {_explain(exc)}") from exc
        except OSError as exc:
            raise self._unreachable(exc) from exc
        for container in containers:
            own = (container.attrs.get("Config") or {}).get("Labels") or {}
            if RUN_LABEL not in own or any(own.get(k) != v for k, v in labels.items()):
                continue  # an engine that filters loosely: only ever touch our own
            description = (
                f"container {container.name} ({container.short_id}, "
                f"image {(container.attrs.get('Config') or {}).get('Image', '?')}, "
                f"{container.status}, job {own.get(JOB_LABEL, '?')})"
            )
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                log.warning("cannot remove %s: %s", description, exc)
                continue
            removed.append(description)
        return removed


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
