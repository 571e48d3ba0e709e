"""Request parameters every endpoint shares: UIDs, names, free text, times and pages.

Each is checked before it reaches the index: a UID by the DICOM grammar, a name by the
configuration's alphabet, free text without control characters (PostgreSQL refuses NUL),
times converted to UTC (the index stores UTC), page cursors decoded strictly.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, StringConstraints

from mercury.web.problems import invalid

UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
NAME_PATTERN = r"^[0-9a-zA-Z_-]{1,64}$"
USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
# DICOM LO/SH/CS values as sent: no control characters, no backslash (value separator).
VALUE_PATTERN = r"^[^\x00-\x1f\x7f\\]*$"
KIND_PATTERN = r"^[a-z0-9_.]{1,48}$"
STAGE_PATTERN = r"^[a-z0-9_]{1,16}$"
JOB_ID_PATTERN = r"^[0-9a-f]{4,32}$"
TOKEN_ID_PATTERN = r"^[0-9a-f]{16}$"  # noqa: S105

MAX_LIMIT = 500
MAX_OFFSET = 1_000_000
MAX_VERSION = 2**31 - 1


def _plain_text(value: str) -> str:
    """Text for the index and the journal: tabs and newlines, no other control characters."""
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text") from None
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]
ShortText = Annotated[str, StringConstraints(max_length=500), AfterValidator(_plain_text)]
UserName = Annotated[str, StringConstraints(pattern=USER_PATTERN)]

SeriesUid = Annotated[
    str, Path(max_length=64, pattern=UID_PATTERN, description="Series Instance UID.")
]
StudyUid = Annotated[
    str, Path(max_length=64, pattern=UID_PATTERN, description="Study Instance UID.")
]
TargetName = Annotated[str, Path(pattern=NAME_PATTERN, description="Target name.")]
UserPath = Annotated[str, Path(pattern=USER_PATTERN, description="User name.")]
JobId = Annotated[
    str,
    Path(
        pattern=JOB_ID_PATTERN,
        description="Job id, or an unambiguous prefix of 4 or more characters.",
    ),
]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION, description="Version number.")]

UidQuery = Annotated[str | None, Query(max_length=64, pattern=UID_PATTERN)]
NameQuery = Annotated[str | None, Query(pattern=NAME_PATTERN)]
ValueQuery = Annotated[str | None, Query(max_length=64, pattern=VALUE_PATTERN)]
Since = Annotated[
    datetime | None,
    Query(description="ISO 8601 date-time; without an offset it is read as UTC."),
]


def utc(value: datetime | None, parameter: str) -> datetime | None:
    """The time in UTC (naive means UTC); a 422 naming ``parameter`` when out of range."""
    if value is None:
        return None
    try:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise invalid(parameter, "query", "date-time out of range") from None


@dataclass(frozen=True)
class Page:
    """limit and offset, or a cursor from the previous answer's ``next_cursor``."""

    limit: int
    offset: int
    cursor: list[Any] | None

    @property
    def uses_cursor(self) -> bool:
        return self.cursor is not None


def page(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Items to skip (not with cursor).")
    ] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=300,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="next_cursor of the previous page (keyset paging, stable while new "
            "items arrive).",
        ),
    ] = None,
) -> Page:
    if cursor is not None and offset:
        raise invalid("offset", "query", "use either offset or cursor, not both")
    return Page(limit, offset, decode_cursor(cursor) if cursor is not None else None)


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(
        [v.isoformat() if isinstance(v, datetime) else v for v in values], separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid("cursor", "query", "not a cursor this API handed out") from None
    if not isinstance(values, list) or not values:
        raise invalid("cursor", "query", "not a cursor this API handed out")
    return values


def cursor_time(values: list[Any], index: int = 0) -> datetime:
    """A time from a cursor, as UTC."""
    try:
        moment = datetime.fromisoformat(str(values[index]))
    except (IndexError, ValueError):
        raise invalid("cursor", "query", "not a cursor this API handed out") from None
    result = utc(moment, "cursor")
    assert result is not None
    return result


def cursor_text(values: list[Any], index: int) -> str:
    try:
        value = values[index]
    except IndexError:
        raise invalid("cursor", "query", "not a cursor this API handed out") from None
    if not isinstance(value, str) or len(value) > 64:
        raise invalid("cursor", "query", "not a cursor this API handed out")
    return value


def cursor_int(values: list[Any], index: int) -> int:
    try:
        value = values[index]
    except IndexError:
        raise invalid("cursor", "query", "not a cursor this API handed out") from None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise invalid("cursor", "query", "not a cursor this API handed out")
    return value
