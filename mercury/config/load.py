"""Loading the configuration file, reporting every problem at once.

A broken configuration must never half-start the service: :func:`load_config` either
returns a complete, cross-checked :class:`MercuryConfig` or raises :class:`ConfigError`
listing every problem with its key path and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mercury.config.base import BASE_DIR, SKIP_REFERENCES
from mercury.config.errors import (
    ConfigError,
    ConfigIssue,
    in_file_order,
    issues_from_validation_error,
    located,
)
from mercury.config.models import MercuryConfig
from mercury.config.references import reference_issues
from mercury.config.yaml_io import LineIndex, load_yaml

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "config_from_data",
    "load_config",
    "parse_document",
    "read_document",
    "read_text",
]


class _DuplicateKey(ValueError):
    """A JSON object holds the same key twice."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _yaml_issue(error: yaml.YAMLError) -> ConfigIssue:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "syntax error"
        if mark is not None:
            return ConfigIssue("", f"not valid YAML: {problem}", mark.line + 1, mark.column + 1)
        return ConfigIssue("", f"not valid YAML: {problem}")
    return ConfigIssue("", f"not valid YAML: {error}")


def _parse_json(text: str, source: str) -> tuple[Any, LineIndex]:
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as error:
        issue = ConfigIssue("", f"not valid JSON: {error.msg}", error.lineno, error.colno)
        raise ConfigError(source, [issue]) from None
    except _DuplicateKey as error:
        position = _duplicate_position(text)
        line, column = position if position else (None, None)
        message = f"not valid JSON: the key {error.args[0]!r} appears twice in one object"
        raise ConfigError(source, [ConfigIssue("", message, line, column)]) from None
    try:
        _, lines = load_yaml(text)  # JSON is YAML: reuse its positions for error messages
    except yaml.YAMLError:
        lines = LineIndex()
    return data, lines


def _duplicate_position(text: str) -> tuple[int, int] | None:
    try:
        load_yaml(text)
    except yaml.MarkedYAMLError as error:
        if error.problem_mark is not None:
            return error.problem_mark.line + 1, error.problem_mark.column + 1
    except yaml.YAMLError:
        return None
    return None


def parse_document(text: str, *, source: str, as_json: bool = False) -> tuple[Any, LineIndex]:
    """Parse YAML (or JSON, with JSON's own error messages) and index its key positions."""
    if as_json:
        return _parse_json(text, source)
    try:
        return load_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, [_yaml_issue(error)]) from None


def read_text(path: Path) -> str:
    """The file's text, or a :class:`ConfigError` saying plainly why it cannot be read."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, [ConfigIssue("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(source, [ConfigIssue("", "is a folder, not a file")]) from None
    except OSError as error:
        raise ConfigError(source, [ConfigIssue("", f"cannot read it: {error.strerror}")]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        message = f"not UTF-8 text (invalid byte at offset {error.start}); save it as UTF-8"
        raise ConfigError(source, [ConfigIssue("", message)]) from None


def read_document(path: Path) -> tuple[Any, LineIndex]:
    """Read and parse a configuration file; a ``.json`` file is parsed as JSON."""
    as_json = path.suffix.lower() == ".json"
    return parse_document(read_text(path), source=str(path), as_json=as_json)


def _top_level_issue(data: Any) -> ConfigIssue | None:
    if data is None:
        return ConfigIssue("", "the file is empty; write at least `{}` for all defaults")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({data!r})"
        return ConfigIssue("", f"the top level must be a mapping of settings, not {kind}")
    return None


def config_from_data(
    data: Any,
    *,
    source: str,
    base_dir: Path | None = None,
    lines: LineIndex | None = None,
) -> MercuryConfig:
    """Validate parsed data into a :class:`MercuryConfig`, or raise with every problem.

    Relative paths are resolved against ``base_dir`` (the configuration file's folder).
    """
    problem = _top_level_issue(data)
    if problem is not None:
        raise ConfigError(source, [problem])
    context: dict[str, Any] = {SKIP_REFERENCES: True}
    if base_dir is not None:
        context[BASE_DIR] = base_dir
    issues: list[ConfigIssue] = []
    config: MercuryConfig | None = None
    try:
        config = MercuryConfig.model_validate(data, context=context)
    except ValidationError as error:
        issues.extend(issues_from_validation_error(error, data, root=MercuryConfig, lines=lines))
    issues.extend(located(loc, message, lines=lines) for loc, message in reference_issues(data))
    if issues or config is None:
        raise ConfigError(source, in_file_order(issues))
    return config


def load_config(path: Path) -> MercuryConfig:
    """Load, validate and cross-check the configuration file at ``path``.

    Raises :class:`ConfigError` naming the file, each key path and what is wrong.
    """
    data, lines = read_document(path)
    return config_from_data(data, source=str(path), base_dir=path.absolute().parent, lines=lines)
