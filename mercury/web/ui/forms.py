"""Editors generated from the configuration's own models: one input per field of a rule,
target or module, with the field's description as help, and the submitted form turned
back into the entry as the file holds it (validated by the same model).

Secrets are never sent to the browser: a password input left empty keeps the value in
the file.
"""

from __future__ import annotations

import json
import shlex
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from starlette.datastructures import FormData

from mercury.config.base import REVEAL_SECRETS

Kind = Literal[
    "text",
    "textarea",
    "code",
    "number",
    "bool",
    "select",
    "choices",
    "list",
    "command",
    "json",
    "secret",
    "multi",
]

LONG_TEXT = frozenset(
    {
        "study_trigger_series",
        "notification_payload",
        "notification_payload_body",
        "notification_email_body",
        "comment",
    }
)
CODE = frozenset({"rule"})


@dataclass
class FieldSpec:
    """How one field of a model is edited."""

    name: str
    kind: Kind
    label: str
    help: str
    required: bool
    nullable: bool
    choices: list[str] = field(default_factory=list)
    integer: bool = False
    default: Any = None


@dataclass
class FieldValue:
    """A field with what the form shows: the value, and the problem with it if any."""

    spec: FieldSpec
    value: Any
    problem: str | None = None
    is_set: bool = False  # secrets: whether the file holds one

    @property
    def name(self) -> str:
        return self.spec.name


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        if len(args) == 1:
            return args[0], nullable
        return annotation, nullable
    return annotation, False


LABELS = {
    "ip": "Host or IP address",
    "aet_target": "Called AE title",
    "aet_source": "Calling AE title",
    "pass_sender_aet": "Pass the sender's AE title",
    "pass_receiver_aet": "Pass the receiver's AE title",
    "url": "URL",
    "ca_cert": "CA certificate",
    "ca_bundle": "CA bundle",
    "tls_key": "TLS key",
    "tls_cert": "TLS certificate",
    "qido_url_prefix": "QIDO-RS prefix",
    "wado_url_prefix": "WADO-RS prefix",
    "stow_url_prefix": "STOW-RS prefix",
    "http_user": "HTTP user",
    "http_password": "HTTP password",
    "max_request_mb": "Largest request (MiB)",
    "endpoint_url": "Endpoint URL",
    "access_key_id": "Access key ID",
    "rule": "Selection expression",
    "gpus": "GPUs",
    "docker_tag": "Docker image",
}


def _label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    text = name.replace("_", " ")
    return text[:1].upper() + text[1:]


def field_spec(
    name: str, info: FieldInfo, choices: Mapping[str, Sequence[str]] | None = None
) -> FieldSpec:
    annotation, nullable = _strip_none(info.annotation)
    origin = get_origin(annotation)
    help_text = info.description or ""
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    spec = FieldSpec(
        name=name,
        kind="text",
        label=_label(name),
        help=help_text,
        required=info.is_required(),
        nullable=nullable,
        default=default,
    )
    if choices and name in choices:
        spec.kind = "choices" if origin is list else "select"
        spec.choices = list(choices[name])
    elif annotation is bool:
        spec.kind = "bool"
    elif annotation in (int, float):
        spec.kind = "number"
        spec.integer = annotation is int
    elif origin is Literal:
        spec.kind = "select"
        spec.choices = [str(a) for a in get_args(annotation)]
    elif annotation is SecretStr:
        spec.kind = "secret"
    elif origin is list and get_args(annotation) and get_origin(get_args(annotation)[0]) is Literal:
        spec.kind = "multi"
        spec.choices = [str(a) for a in get_args(get_args(annotation)[0])]
    elif name == "command":
        spec.kind = "command"
    elif origin is list and get_args(annotation) == (str,):
        spec.kind = "list"
    elif annotation in (str, Path):
        spec.kind = "code" if name in CODE else ("textarea" if name in LONG_TEXT else "text")
    else:
        spec.kind = "json"
    return spec


def model_specs(
    model: type[BaseModel],
    *,
    skip: Sequence[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
) -> list[FieldSpec]:
    return [
        field_spec(name, info, choices)
        for name, info in model.model_fields.items()
        if name not in skip
    ]


# -- showing values ------------------------------------------------------------------------


def display(spec: FieldSpec, raw: Mapping[str, Any]) -> FieldValue:
    """The field as the form shows it, from the entry as the file holds it."""
    present = spec.name in raw
    value = raw.get(spec.name, spec.default)
    if spec.kind == "secret":
        return FieldValue(spec, "", is_set=bool(present and value))
    if spec.kind == "json":
        shown = "" if value in (None, {}, []) and not present else json.dumps(value, indent=2)
        return FieldValue(spec, shown)
    if spec.kind == "command":
        if isinstance(value, list):
            return FieldValue(spec, shlex.join(str(v) for v in value))
        return FieldValue(spec, "" if value is None else str(value))
    if spec.kind in ("list", "choices", "multi"):
        if value is None:
            return FieldValue(spec, [] if spec.kind != "list" else "")
        items = [value] if isinstance(value, str) else [str(v) for v in value]
        return FieldValue(spec, items if spec.kind != "list" else ", ".join(items))
    if spec.kind == "bool":
        return FieldValue(spec, bool(value))
    if value is None:
        return FieldValue(spec, "")
    if isinstance(value, float) and value.is_integer():
        return FieldValue(spec, str(int(value)))
    return FieldValue(spec, str(value))


def display_all(specs: Sequence[FieldSpec], raw: Mapping[str, Any]) -> list[FieldValue]:
    return [display(spec, raw) for spec in specs]


# -- reading a submitted form ---------------------------------------------------------------


@dataclass
class Parsed:
    """A submitted entry: the data for the file, or the problem with each field."""

    data: dict[str, Any]
    problems: dict[str, str]
    texts: dict[str, str] = field(default_factory=dict)


def _string(form: FormData, key: str) -> str | None:
    value = form.get(key)
    return value if isinstance(value, str) else None


def parse(
    specs: Sequence[FieldSpec],
    form: FormData,
    *,
    previous: Mapping[str, Any],
    prefix: str = "",
) -> Parsed:
    """Turn the form's fields into the entry's raw data (not validated yet)."""
    data: dict[str, Any] = {}
    problems: dict[str, str] = {}
    texts: dict[str, str] = {}
    for spec in specs:
        key = prefix + spec.name
        text = _string(form, key)
        if spec.kind == "bool":
            data[spec.name] = text in ("on", "true", "1", "yes")
            continue
        if spec.kind in ("choices", "multi"):
            values = [v for v in form.getlist(key) if isinstance(v, str) and v]
            if values or spec.name in previous or not spec.nullable:
                data[spec.name] = values
            continue
        if spec.kind == "secret":
            if _string(form, f"{key}__clear"):
                continue
            if text:
                data[spec.name] = text
            elif spec.name in previous:
                data[spec.name] = previous[spec.name]
            continue
        if text is None:
            continue
        text = text.replace("\r\n", "\n")
        texts[spec.name] = text
        if spec.kind == "number":
            stripped = text.strip()
            if not stripped:
                if spec.nullable and (spec.name in previous or spec.default is not None):
                    data[spec.name] = None
                continue
            try:
                number = float(stripped)
                data[spec.name] = int(number) if spec.integer and number.is_integer() else number
            except ValueError:
                problems[spec.name] = "must be a number"
        elif spec.kind == "json":
            stripped = text.strip()
            if not stripped:
                continue
            try:
                data[spec.name] = json.loads(stripped)
            except ValueError as exc:
                problems[spec.name] = f"not valid JSON: {exc}"
        elif spec.kind == "list":
            items = [part.strip() for part in text.replace("\n", ",").split(",")]
            data[spec.name] = [item for item in items if item]
        elif spec.kind == "command":
            stripped = text.strip()
            if stripped:
                try:
                    data[spec.name] = shlex.split(stripped)
                except ValueError as exc:
                    problems[spec.name] = f"cannot split it like a shell would: {exc}"
        elif spec.kind == "select":
            if text == "" and spec.nullable:
                data[spec.name] = None
            elif text:
                data[spec.name] = text
        elif text == "" and spec.nullable:
            if spec.name in previous:
                data[spec.name] = None
        else:
            data[spec.name] = text
    return Parsed(data, problems, texts)


def message(error: Mapping[str, Any]) -> str:
    text = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def validate(model: type[BaseModel], parsed: Parsed) -> dict[str, Any] | None:
    """The entry as the file should hold it (defaults left out, secrets in clear text), or
    None with the model's problems added to ``parsed.problems``."""
    if parsed.problems:
        return None
    try:
        entry = model.model_validate(parsed.data)
    except ValidationError as exc:
        for error in exc.errors(include_input=False):
            loc = [str(part) for part in error.get("loc", ())]
            name = loc[0] if loc else ""
            where = ".".join(loc[1:])
            text = message(error)
            parsed.problems.setdefault(name, f"{where}: {text}" if where else text)
        return None
    dumped: dict[str, Any] = entry.model_dump(
        mode="json", exclude_defaults=True, context={REVEAL_SECRETS: True}
    )
    return dumped


def with_problems(values: list[FieldValue], problems: Mapping[str, str]) -> list[FieldValue]:
    for value in values:
        value.problem = problems.get(value.name)
    return values


def submitted(specs: Sequence[FieldSpec], parsed: Parsed) -> list[FieldValue]:
    """The fields as submitted (to show them again next to their problems)."""
    values = display_all(specs, parsed.data)
    for value in values:
        if value.name in parsed.problems and value.name in parsed.texts:
            value.value = parsed.texts[value.name]
    return with_problems(values, parsed.problems)
