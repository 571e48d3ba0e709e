"""The configuration file the web layer reads and writes.

The file is the source of truth: the current configuration is reloaded whenever the file
changes on disk (another web process applied a version, or someone edited it by hand). A
hand edit that does not load leaves the last good configuration in use and is reported.
Submitted text is checked exactly as `mercury config check` checks the file: YAML (or JSON
when the file is ``.json``), every problem with its key path and line.
"""

from __future__ import annotations

import threading
from pathlib import Path

from mercury.config.errors import ConfigError, ConfigIssue
from mercury.config.load import config_from_data, load_config, parse_document, read_text
from mercury.config.models import MercuryConfig
from mercury.config.save import atomic_write_text

MAX_TEXT = 2 * 2**20
"""Largest configuration text accepted (bytes)."""

Signature = tuple[int, int, int]


class ConfigFile:
    def __init__(self, path: Path, config: MercuryConfig | None = None) -> None:
        self.path = path.absolute()
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._config = config if config is not None else load_config(self.path)
        self.error: str | None = None

    @property
    def as_json(self) -> bool:
        return self.path.suffix.lower() == ".json"

    def _stat(self) -> Signature | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def current(self) -> MercuryConfig:
        """The configuration in the file now (reloaded when the file changed)."""
        signature = self._stat()
        with self._lock:
            if signature == self._signature:
                return self._config
            self._signature = signature
            try:
                self._config = load_config(self.path)
                self.error = None
            except ConfigError as exc:
                self.error = exc.report()
            return self._config

    def read(self) -> str:
        """The file's text ("" when it cannot be read)."""
        try:
            return read_text(self.path)
        except ConfigError:
            return ""

    def check(self, text: str) -> tuple[MercuryConfig | None, list[ConfigIssue]]:
        """Validate ``text`` as this file's content: the configuration, or every problem."""
        if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT:
            return None, [ConfigIssue("", f"larger than {MAX_TEXT // 2**20} MiB")]
        if "\x00" in text:
            return None, [ConfigIssue("", "contains a NUL character")]
        source = self.path.name
        try:
            data, lines = parse_document(text, source=source, as_json=self.as_json)
            config = config_from_data(data, source=source, base_dir=self.path.parent, lines=lines)
        except ConfigError as exc:
            return None, exc.issues
        return config, []

    def write(self, text: str, config: MercuryConfig) -> None:
        """Replace the file atomically and use ``config`` (validated from ``text``)."""
        with self._lock:
            atomic_write_text(self.path, text)
            self._signature = self._stat()
            self._config = config
            self.error = None
