"""Building blocks shared by every configuration model.

They live apart from the models so targets, rules and modules can each have their own
module without importing one another.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    StringConstraints,
    ValidationInfo,
)

NAME_PATTERN = r"^[0-9a-zA-Z_-]+$"
"""Names of targets, rules and modules: mercure's alphabet, safe in URLs and file names."""

AE_TITLE_PATTERN = r"^[\x20-\x5b\x5d-\x7e]{1,16}$"  # default character repertoire, no backslash

HH_MM_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"
"""A time of day, 00:00 to 23:59."""

BASE_DIR = "mercury.base_dir"
"""Validation-context key: the folder that relative paths are resolved against."""

REVEAL_SECRETS = "mercury.reveal_secrets"
"""Serialization-context key: write secrets in clear text (only when saving the file)."""

SKIP_REFERENCES = "mercury.skip_references"
"""Validation-context key: the caller checks cross-references itself (to report them all)."""


class Section(BaseModel):
    """Base for every configuration section: unknown keys are errors, not silently ignored.

    Input values are kept out of ``str(ValidationError)`` so a wrong-typed password never
    reaches a log line.
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        hide_input_in_errors=True,
        ser_json_inf_nan="constants",  # a module setting of .inf must not be saved as null
    )


def _context_value(info: ValidationInfo | SerializationInfo, key: str) -> Any:
    context = info.context
    if isinstance(context, dict):
        return context.get(key)
    return None


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = _context_value(info, BASE_DIR)
    if isinstance(base, Path) and not value.is_absolute():
        return base / value
    return value


def _serialize_secret(value: SecretStr, info: SerializationInfo) -> str:
    if _context_value(info, REVEAL_SECRETS):
        return value.get_secret_value()
    return str(value)


def _compact_number(value: float) -> int | float:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_ae_title(value: str) -> str:
    if not re.match(AE_TITLE_PATTERN, value) or not value.strip():
        raise ValueError(f"{value!r} is not a valid AE title (1-16 characters, no backslash)")
    return value


def _check_optional_ae_title(value: str) -> str:
    return _check_ae_title(value) if value else value


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A target, rule or module name."""

LocalPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path on this machine; relative paths are resolved against the configuration file's folder."""

Secret = Annotated[SecretStr, PlainSerializer(_serialize_secret, when_used="json")]
"""A password, token or key: masked in repr and JSON output, written out only when saving."""

Seconds = Annotated[float, PlainSerializer(_compact_number, when_used="json")]
"""A duration in seconds; whole numbers are written without a trailing ``.0``."""

AETitle = Annotated[str, AfterValidator(_check_ae_title)]
"""A DICOM application entity title."""

OptionalAETitle = Annotated[str, AfterValidator(_check_optional_ae_title)]
"""An AE title, or the empty string for 'use the default'."""
