"""Processing modules, with mercure's field names plus how mercury runs them.

mercure stores ``additional_volumes``, ``environment`` and ``docker_arguments`` as JSON
text; mercury's file holds real mappings (the importer parses mercure's text).
"""

from __future__ import annotations

import shlex
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mercury.config.base import Seconds, Section
from mercury.config.issues import Loc, raise_if_any

DOCKER_ARGUMENT_ALLOW_LIST: frozenset[str] = frozenset(
    {
        "mem_limit",
        "memswap_limit",
        "cpu_count",
        "cpu_percent",
        "cpu_period",
        "cpu_quota",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "cpu_shares",
        "cpuset_cpus",
        "cpuset_mems",
        "nano_cpus",
        "shm_size",
        "runtime",
        "labels",
        "blkio_weight",
        "blkio_weight_device",
        "device_read_bps",
        "device_read_iops",
        "device_write_bps",
        "device_write_iops",
        "pids_limit",
        "environment",
        "env",
        "read_only",
        "stop_signal",
        "stop_timeout",
        "healthcheck",
    }
)
"""docker ``containers.run`` arguments a module may set: resources and runtime only, as in
mercure. Anything that widens the container's privileges (privileged, cap_add, volumes,
network_mode, user, ...) is refused."""

DEFAULT_MODULE_TIMEOUT = 3600.0
"""Seconds a module may run before it is stopped: a hung module must not block the queue."""


class VolumeMount(Section):
    """Where a host folder or docker volume appears inside the module's container."""

    bind: str = Field(description="Absolute path inside the container.")
    mode: Literal["rw", "ro"] = Field(
        default="rw", description="rw (read-write) or ro (read-only)."
    )

    @field_validator("bind")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must be an absolute path inside the container")
        return value


class Module(Section):
    """A processing module: a container image, or the same program run as a local command."""

    runner: Literal["docker", "local"] = Field(
        default="docker",
        description="docker: run `docker_tag` in a container; local: run `command` on this host "
        "(mercury only).",
    )
    docker_tag: str = Field(default="", description="Container image, such as `org/model:1.2`.")
    command: list[str] = Field(
        default_factory=list,
        description="Program and arguments for the local runner; a string is split like a shell "
        "would, but never run by one (mercury only).",
    )
    additional_volumes: dict[str, VolumeMount] = Field(
        default_factory=dict,
        description="Extra mounts: host path or volume name -> {bind, mode}.",
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the module."
    )
    docker_arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra docker `containers.run` arguments; only resource and runtime "
        "arguments are allowed (see below).",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Module settings passed in task.json; a rule's settings override them.",
    )
    requires_root: bool = Field(
        default=False,
        description="Run the container as root; refused unless `processing.support_root_modules`.",
    )
    requires_persistence: bool = Field(
        default=False, description="Mount a folder that survives between runs at /tmp/persistence."
    )
    persistence_folder_name: str | None = Field(
        default=None,
        description="Name of that folder under `processing.persistence_folder`; null uses the "
        "module's name.",
    )
    network_enabled: bool = Field(
        default=False, description="Give the container network access (off: no network at all)."
    )
    timeout: Seconds | None = Field(
        default=DEFAULT_MODULE_TIMEOUT,
        gt=0,
        description="Seconds a run may take before it is stopped and fails; null for no limit "
        "(mercury only; mercure has none).",
    )
    gpus: int = Field(
        default=0,
        ge=0,
        description="GPUs a run needs: it waits for that many free indices of processing.gpus "
        "and sees only those devices (mercury only).",
    )
    max_parallel: int | None = Field(
        default=None,
        ge=1,
        description="Runs of this module at the same time; null: only the global limit "
        "(mercury only).",
    )
    contact: str = Field(default="", description="Who maintains this module.")
    comment: str = Field(default="", description="Free text for administrators.")

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            return shlex.split(value)
        return value

    @field_validator("persistence_folder_name", mode="before")
    @classmethod
    def _check_folder_name(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, str) and (
            value in (".", "..")
            or not value.replace("-", "").replace("_", "").replace(".", "").isalnum()
            or not value.isascii()
        ):
            raise ValueError(
                f"{value!r} must be a single folder name of letters, digits, '.', '_' and '-'"
            )
        return value

    @model_validator(mode="after")
    def _check_runner(self) -> Module:
        """The runner must have what it runs, and docker arguments stay within the allow-list."""
        issues: list[tuple[Loc, str]] = []
        if self.runner == "docker" and not self.docker_tag.strip():
            issues.append((("docker_tag",), "the docker runner needs an image in docker_tag"))
        if self.runner == "local" and not self.command:
            issues.append((("command",), "the local runner needs a command to run"))
        for key in self.docker_arguments:
            if key not in DOCKER_ARGUMENT_ALLOW_LIST:
                issues.append(
                    (
                        ("docker_arguments", key),
                        "not an allowed docker argument; only resource and runtime arguments "
                        "may be set (see the configuration reference)",
                    )
                )
        raise_if_any(issues)
        return self
