"""What a configuration change means for running services.

`mercury serve` restarts its router, processor, dispatcher, cleaner and notifier with a
newly applied configuration (they read the rules, targets, modules, timings, and the
dispatch, processing, retention and notification sections). The receiver, the web service
and the storage are not restarted under load: changes to them take effect when mercury is
restarted, and the apply answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from mercury.config.models import MercuryConfig

RELOADED_SERVICES = ("router", "processor", "dispatcher", "cleaner", "notifier")

# Sections that only the receiver, the web service or the process as a whole read.
_NOT_RELOADED = ("receiver", "web", "storage", "appliance_name", "appliance_color")


@dataclass(frozen=True)
class RestartNote:
    section: str
    services: tuple[str, ...]
    message: str


def restart_notes(old: MercuryConfig, new: MercuryConfig) -> list[RestartNote]:
    """Changes that take effect only when mercury (or one of its services) is restarted."""
    notes: list[RestartNote] = []
    if old.receiver != new.receiver:
        changed = _changed_fields(old.receiver, new.receiver)
        notes.append(
            RestartNote(
                "receiver",
                ("receiver",),
                f"receiver settings ({', '.join(changed)}) take effect when the receiver is "
                "restarted (restart mercury)",
            )
        )
    if old.storage != new.storage:
        changed = _changed_fields(old.storage, new.storage)
        notes.append(
            RestartNote(
                "storage",
                ("all",),
                f"storage settings ({', '.join(changed)}) take effect when every mercury "
                "process is restarted",
            )
        )
    if (old.web.host, old.web.port) != (new.web.host, new.web.port):
        notes.append(
            RestartNote(
                "web",
                ("web",),
                f"the web interface moves to {new.web.host}:{new.web.port} when the web "
                "service is restarted (restart mercury)",
            )
        )
    return notes


def needs_reload(old: MercuryConfig, new: MercuryConfig) -> bool:
    """Whether the services that read the changed sections must restart to use ``new``."""
    skip = set(_NOT_RELOADED)
    return any(
        getattr(old, name) != getattr(new, name)
        for name in MercuryConfig.model_fields
        if name not in skip
    )


def changed_sections(old: MercuryConfig, new: MercuryConfig) -> list[str]:
    return _changed_fields(old, new)


def _changed_fields(old: BaseModel, new: BaseModel) -> list[str]:
    fields = type(old).model_fields
    return [name for name in fields if getattr(old, name) != getattr(new, name)]
