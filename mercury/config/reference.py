"""The configuration reference (docs/configuration.md), generated from the models.

Generating it keeps the documentation from drifting: a test fails when the file differs
from what the models say. Regenerate with::

    python -m mercury.config.reference > docs/configuration.md
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from mercury.config.base import HH_MM_PATTERN, NAME_PATTERN
from mercury.config.models import MercuryConfig, Section
from mercury.config.modules import DOCKER_ARGUMENT_ALLOW_LIST, Module, VolumeMount
from mercury.config.rules import Rule
from mercury.config.targets import TARGET_MODELS, TargetBase

REGENERATE = "python -m mercury.config.reference > docs/configuration.md"

INTRO = f"""\
# Configuration reference

<!-- Generated from the models in mercury/config. Do not edit by hand; run
     `{REGENERATE}` -->

mercury reads one configuration file, written in YAML (a file ending in `.json` is read
as JSON). Check it with `mercury config check --config FILE`: every problem is reported
with its key path and line, for example
`rules.ct_rule.target: unknown target 'pacs2' (line 40, column 13)`.

Coming from mercure? `mercury import-mercure mercure.json --out mercury.yaml` writes this
file from mercure's configuration; see [mercure-import.md](mercure-import.md).

## How the file is read

- **Strict keys.** A key mercury does not know is an error, as is a key given twice;
  nothing is silently ignored.
- **Plain values.** Only `true` and `false` are booleans and only `null` (or `~`) is
  null: `22:00`, `yes`, `no`, `on` and `off` are text. Quote text that looks like a
  number (`port: "104"` is accepted where a number is expected).
- **Relative paths** (every key of type *path*, and the file of a `sqlite:///` database
  URL) are relative to the folder holding the configuration file, not to the current
  directory. `~` means the mercury user's home folder.
- **Names** of targets, modules and rules use only letters, digits, `_` and `-`.
- **Rules run in file order.** Every enabled rule whose expression is true fires; a
  `discard` rule that fires discards the series and stops; `stop_after: true` stops after
  that rule; a `fallback` rule is evaluated only when nothing else fired; when no rule
  fires the series is discarded.
- **One image or every image.** Like mercure, a rule judges a series by its first image
  (`evaluate_on: first_instance`). With `evaluate_on: every_instance` the rule is also
  evaluated for each later image whose tag values differ from those already seen, and it
  fires when any of them matches (for series that mix, say, several image types).
- **Targets need `target_type`.** mercure treats a missing type as `dicom`; mercury's
  file requires it so a misspelt key never turns a target into a DICOM node by accident.
  The importer adds it for you.
- **Secrets** (passwords, tokens, keys) are masked in logs, error messages and the web
  interface, but stored in clear text in this file. mercury creates the file readable by
  its owner only; keep it that way.
- **Saving.** When mercury writes this file (web interface, importer) it replaces it
  atomically, leaves out keys that have their default value, and does not keep comments.
"""


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


_SIMPLE: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "text",
    Path: "path",
    SecretStr: "secret text",
    Any: "any",
    type(None): "null",
}


def _is_name(annotation: Any) -> bool:
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(getattr(item, "pattern", None) == NAME_PATTERN for item in annotation.__metadata__)


def _model_label(model: type[BaseModel]) -> str:
    if issubclass(model, Section) and model in _SECTIONS:
        return "section"
    if issubclass(model, TargetBase):
        return "target (see below)"
    return f"{_MODEL_LABELS.get(model, 'mapping')} (see below)"


def describe_type(annotation: Any) -> str:
    """A reader's name for a type: ``dict[str, int]`` -> ``mapping of text to integer``."""
    if _is_name(annotation):
        return "name"
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{arg}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        members = [_unwrap(arg) for arg in args if arg is not type(None)]
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            text = _model_label(members[0])
        else:
            text = " or ".join(describe_type(member) for member in members)
        return f"{text} or null" if type(None) in args else text
    if origin is dict:
        if _unwrap(args[1]) is Any:
            return "mapping"
        return f"mapping of {describe_type(args[0])} to {describe_type(args[1])}"
    if origin is list:
        return f"list of {describe_type(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_label(annotation)
    return _SIMPLE.get(annotation, getattr(annotation, "__name__", str(annotation)))


_MODEL_LABELS: dict[type[BaseModel], str] = {Module: "module", Rule: "rule", VolumeMount: "mount"}
_SECTIONS: set[type[BaseModel]] = {
    typing.cast(type[BaseModel], _unwrap(field.annotation))
    for field in MercuryConfig.model_fields.values()
    if isinstance(_unwrap(field.annotation), type)
    and issubclass(_unwrap(field.annotation), Section)
}


def _constraints(field: FieldInfo) -> list[str]:
    texts: list[str] = []
    for item in field.metadata:
        for attribute, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                texts.append(
                    f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}"
                )
        if getattr(item, "min_length", None) == 1:
            texts.append("not empty")
        pattern = getattr(item, "pattern", None)
        if pattern == HH_MM_PATTERN:
            texts.append("HH:MM")
        elif pattern is not None:
            texts.append(f"matching `{pattern}`")
    return texts


def _inline(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    shown = _inline(value)
    return f"`{shown}`" if shown else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel], fields: Iterable[str]) -> list[str]:
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name in fields:
        field = model.model_fields[name]
        kind = ", ".join([describe_type(field.annotation), *_constraints(field)])
        description = field.description or ""
        rows.append(
            f"| `{name}` | {_cell(kind)} | {_cell(_default(field))} | {_cell(description)} |"
        )
    return rows


def _doc(model: type[BaseModel]) -> str:
    first = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0]
    return first.replace("\n", " ").replace("``", "`")


def _section(title: str, model: type[BaseModel], fields: Iterable[str] | None = None) -> list[str]:
    names = list(model.model_fields) if fields is None else list(fields)
    return [f"## {title}", "", _doc(model), "", *_table(model, names), ""]


def _subsection(title: str, model: type[BaseModel], fields: Iterable[str]) -> list[str]:
    return [f"### {title}", "", _doc(model), "", *_table(model, fields), ""]


def _nested_models(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """Models used inside a section's keys (lists or mappings of them)."""
    found: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        annotation = _unwrap(field.annotation)
        origin = typing.get_origin(annotation)
        if origin in (list, dict):
            inner = _unwrap(typing.get_args(annotation)[-1])
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                suffix = "[]" if origin is list else ".<name>"
                found.append((f"{name}{suffix}", inner))
    return found


def _top_level() -> list[str]:
    lines = _section("Top level", MercuryConfig)
    for name, field in MercuryConfig.model_fields.items():
        annotation = _unwrap(field.annotation)
        if isinstance(annotation, type) and issubclass(annotation, Section):
            lines += _section(f"`{name}`", annotation)
            for suffix, nested in _nested_models(annotation):
                lines += _subsection(f"`{name}.{suffix}`", nested, nested.model_fields)
    return lines


def _targets() -> list[str]:
    common = list(TargetBase.model_fields)
    lines = [
        "## `targets.<name>`",
        "",
        "Where results and images are sent. Each target has a `target_type` and the keys of "
        "that type; these keys are common to all types:",
        "",
        *_table(TargetBase, common),
        "",
    ]
    for target_type, model in TARGET_MODELS.items():
        own = [name for name in model.model_fields if name not in common]
        lines += [f"### `target_type: {target_type}`", "", _doc(model), ""]
        lines += [*_table(model, own), ""] if own else ["No further keys.", ""]
    return lines


def _modules() -> list[str]:
    allowed = ", ".join(f"`{name}`" for name in sorted(DOCKER_ARGUMENT_ALLOW_LIST))
    return [
        *_section("`modules.<name>`", Module),
        "Allowed `docker_arguments` (resource and runtime settings only, as in mercure): "
        f"{allowed}.",
        "",
        *_subsection(
            "`modules.<name>.additional_volumes.<host path or volume>`",
            VolumeMount,
            VolumeMount.model_fields,
        ),
    ]


def render_reference() -> str:
    """The whole of docs/configuration.md."""
    lines = [INTRO, *_top_level(), *_targets(), *_modules(), *_section("`rules.<name>`", Rule)]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_reference())
