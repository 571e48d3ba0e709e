"""Writing the configuration file.

The file is replaced atomically (temporary file, fsync, rename, fsync of the folder) so a
crash or full disk leaves either the old file or the new one, never half of one. Keys
come out in the models' order and rules in their evaluation order; values equal to their
default are left out unless asked for, so the file shows what was chosen.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from mercury.config.base import REVEAL_SECRETS
from mercury.config.models import MercuryConfig
from mercury.config.yaml_io import dump_yaml

HEADER = (
    "# mercury configuration. Every key is described in docs/configuration.md.\n"
    "# This file holds passwords and keys: keep it readable by the mercury user only.\n"
)


def config_to_data(config: MercuryConfig, *, include_defaults: bool = False) -> dict[str, Any]:
    """Plain data for the file, secrets in clear text."""
    return config.model_dump(
        mode="json", context={REVEAL_SECRETS: True}, exclude_defaults=not include_defaults
    )


def dump_config(config: MercuryConfig, *, include_defaults: bool = False) -> str:
    """The configuration as YAML text, as :func:`save_config` writes it."""
    data = config_to_data(config, include_defaults=include_defaults)
    return HEADER + ("{}\n" if not data else dump_yaml(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, whole.

    A new file is created readable by its owner only; an existing file keeps its mode.
    """
    path = path.absolute()
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (not possible on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_config(config: MercuryConfig, path: Path, *, include_defaults: bool = False) -> None:
    """Write ``config`` to ``path`` atomically, secrets included, comments not preserved."""
    atomic_write_text(path, dump_config(config, include_defaults=include_defaults))
