"""Configuration errors that say where and what, in plain words.

pydantic's raw errors carry internal labels in their locations (union tags, type names)
and developer wording; :func:`issues_from_validation_error` turns them into one
:class:`ConfigIssue` per problem, located by key path (``receiver.port``) and, when the
file's layout is known, by line and column.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mercury.config.base import HH_MM_PATTERN
from mercury.config.issues import Loc, LocatedIssues
from mercury.config.targets import TARGET_TYPES
from mercury.config.yaml_io import LineIndex

_SECRET_KEY = re.compile(r"pass|token|secret|api_key|apikey|credential", re.IGNORECASE)
_MAX_SHOWN = 60


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where it is (key path, and line when known) and what is wrong."""

    location: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.line is not None:
            text += f" (line {self.line}, column {self.column})"
        return text


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found in it."""

    def __init__(self, source: str | Path, issues: Sequence[ConfigIssue]) -> None:
        self.source = str(source)
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__(self.report())

    def report(self) -> str:
        """The file name, then one line per problem."""
        if len(self.issues) == 1:
            return f"{self.source}: {self.issues[0]}"
        lines = [f"{self.source}: {len(self.issues)} problems"]
        lines.extend(f"  {issue}" for issue in self.issues)
        return "\n".join(lines)


def in_file_order(issues: Sequence[ConfigIssue]) -> list[ConfigIssue]:
    """Issues sorted by position (stable); those without a line come last."""
    return sorted(issues, key=lambda i: (i.line is None, i.line or 0, i.column or 0))


def format_location(loc: Loc) -> str:
    """``("rules", "ct", "target")`` -> ``rules.ct.target``; list indexes as ``[0]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _clean_loc(loc: Sequence[str | int], data: Any) -> Loc:
    """Drop pydantic's internal labels (union tags, type names) by walking the input data."""
    cleaned: list[str | int] = []
    node = data
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            cleaned.append(part)
            node = node[part]
        elif last:
            cleaned.append(part)
        # else: a label such as 'dicom' or 'function-after[...]' that is not in the file
    return tuple(cleaned)


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _descend(annotation: Any, part: str | int) -> Any:
    """The annotation one step down ``part``; None when the walk leaves the models."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [_unwrap(arg) for arg in typing.get_args(annotation)]
        models = [member for member in members if _is_model(member)]
        for model in models:
            if _tag_of(model) == part:
                return model  # a discriminated union's tag label: consumed here
        if not models:
            return None
        annotation = models[0]  # an optional model
    if _is_model(annotation):
        field = annotation.model_fields.get(str(part))
        return None if field is None else field.annotation
    if typing.get_origin(annotation) in (dict, list):
        return typing.get_args(annotation)[-1]
    return None


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that holds the keys at ``loc`` (pydantic's raw location, tags included)."""
    annotation: Any = root
    for part in loc:
        annotation = _descend(annotation, part)
        if annotation is None:
            return None
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        return typing.cast(type[BaseModel], annotation)
    return None


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("target_type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if args else None


def _shown(value: Any, loc: Loc) -> str:
    """A short rendering of the offending value, never of a secret."""
    if any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc):
        return ""
    if isinstance(value, bool | int | float) or value is None:
        return f" (got {value!r})"
    if isinstance(value, str) and len(value) <= _MAX_SHOWN:
        return f" (got {value!r})"
    if isinstance(value, list):
        return " (got a list)"
    if isinstance(value, dict):
        return " (got a mapping)"
    return ""


def _plain(error: ErrorDetails, loc: Loc, root: type[BaseModel], raw_loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        message = "unknown key"
        model = _model_at(root, raw_loc[:-1])
        if model is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
            if close:
                return f"{message}; did you mean {close[0]!r}?"
        return f"{message} (check its spelling and indentation)"
    if kind == "union_tag_not_found":
        return f"target_type is missing; set it to one of: {', '.join(TARGET_TYPES)}"
    if kind == "union_tag_invalid":
        return f"unknown target type {ctx.get('tag')!r}; expected one of: {', '.join(TARGET_TYPES)}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == HH_MM_PATTERN:
        return "must be a time of day as HH:MM, 00:00 to 23:59" + _shown(error.get("input"), loc)
    wording = _WORDING.get(kind)
    if wording is not None:
        message = wording.format(**{key: _ctx_text(value) for key, value in ctx.items()})
    else:
        message = str(error["msg"])
        message = message[:1].lower() + message[1:]
    return message + _shown(error.get("input"), loc)


_WORDING = {
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text (quote it if it looks like a number or true/false)",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "list_type": "must be a list",
    "literal_error": "must be one of: {expected}",
    "string_pattern_mismatch": "does not have the expected form {pattern}",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
}


def _ctx_text(value: Any) -> str:
    """Context values as users write them: 'a', 'b' or 'c' -> a, b, c; 0.0 -> 0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return re.sub(r"'([^']*)'", r"\1", text).replace(" or ", ", ")


def issues_from_validation_error(
    error: ValidationError,
    data: Any,
    *,
    root: type[BaseModel],
    lines: LineIndex | None = None,
    rename: Callable[[Loc], Loc] | None = None,
) -> list[ConfigIssue]:
    """One located, plain-worded issue per problem in ``error``.

    ``data`` is the validated input (to tell keys from pydantic's labels), ``lines`` maps
    key paths to positions, and ``rename`` translates our key paths into the input's own
    (for the mercure importer).
    """
    found: list[tuple[Loc, str, bool]] = []
    for item in error.errors(include_url=False):
        raw_loc: Loc = tuple(item["loc"])
        loc = _clean_loc(raw_loc, data)
        ctx_error = item.get("ctx", {}).get("error")
        if item["type"] == "value_error" and isinstance(ctx_error, LocatedIssues):
            found.extend(((*loc, *sub), message, False) for sub, message in ctx_error.issues)
        elif loc and loc[-1] == "[key]":
            name = loc[-2] if len(loc) > 1 else ""
            message = f"{name!r} is not a valid name: use only letters, digits, '_' and '-'"
            found.append((loc[:-1], message, True))
        elif item["type"] in ("union_tag_not_found", "union_tag_invalid"):
            found.append(((*loc, "target_type"), _plain(item, loc, root, raw_loc), False))
        else:
            at_key = item["type"] == "extra_forbidden"
            found.append((loc, _plain(item, loc, root, raw_loc), at_key))
    return [
        located(loc, message, lines=lines, rename=rename, at_key=key) for loc, message, key in found
    ]


def located(
    loc: Loc,
    message: str,
    *,
    lines: LineIndex | None = None,
    rename: Callable[[Loc], Loc] | None = None,
    at_key: bool = False,
) -> ConfigIssue:
    """A :class:`ConfigIssue` for ``loc``, with the line and column when they are known."""
    if rename is not None:
        loc = rename(loc)
    position = lines.find(loc, key=at_key) if lines is not None else None
    line, column = position if position is not None else (None, None)
    return ConfigIssue(format_location(loc), message, line, column)
