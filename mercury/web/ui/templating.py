"""The Jinja2 environment of the web interface: autoescaping everywhere, strict undefined
names, and the filters the templates use to show times, sizes and durations.

Every value that comes from DICOM (patient names, descriptions, tags) or from users is
escaped by Jinja; no template marks such text safe.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

from mercury.web.timeutil import aware

TEMPLATES_DIR = Path(__file__).parent / "templates"

STATE_TONES = {
    # series and studies
    "receiving": "blue",
    "routed": "green",
    "discarded": "grey",
    "cleaning": "grey",
    "cleaned": "grey",
    # jobs
    "queued": "blue",
    "running": "amber",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "grey",
    "cancelling": "amber",
    # timeline stages
    "done": "green",
    "pending": "blue",
    "skipped": "grey",
    # deliveries
    "success": "green",
    "warning": "amber",
    "failure": "red",
    # targets and services
    "up": "green",
    "down": "red",
    "held": "amber",
    "probing": "amber",
    "running_service": "green",
    "stopped": "red",
    # journal severities
    "info": "grey",
    "error": "red",
    # module runs
    "ok": "green",
    "timeout": "red",
    "crashed": "red",
}


def tone(state: str | None) -> str:
    """The colour of a status pill: green, amber, red, blue or grey."""
    return STATE_TONES.get(state or "", "grey")


def local_time(value: datetime | None, seconds: bool = True) -> str:
    """A stored (UTC) time in the host's time zone, as mercury's CLI shows it."""
    if value is None:
        return "—"
    shown = aware(value).astimezone()
    return shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def iso(value: datetime | None) -> str:
    return "" if value is None else aware(value).isoformat()


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in words: "just now", "4 min ago", "3 h ago", "2 days ago"."""
    if value is None:
        return "—"
    moment = now or datetime.now(UTC)
    seconds = (moment - aware(value)).total_seconds()
    if seconds < 0:
        return "in " + duration(-seconds)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def duration(seconds: float | None) -> str:
    """A duration for people: 0.25 s, 12 s, 3 min 4 s, 2 h 5 min."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s".replace(".00 s", " s")
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 86400 * 2:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if rest // 60 else f"{hours} h"
    return f"{seconds / 86400:.1f} days"


def size(value: int | float | None) -> str:
    """Bytes for people (binary units)."""
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def short_uid(value: str | None, keep: int = 10) -> str:
    """The end of a long UID (where UIDs differ); the whole UID goes in a title."""
    if not value:
        return "—"
    return value if len(value) <= keep + 1 else "…" + value[-keep:]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {words or word + 's'}"


def query_string(request: Any, offset: int) -> str:
    """The page's query string with another offset (the pager's links)."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "offset"]
    return urlencode([*params, ("offset", str(offset))])


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        tone=tone,
        local_time=local_time,
        iso=iso,
        ago=ago,
        duration=duration,
        size=size,
        short_uid=short_uid,
        pretty_json=pretty_json,
    )
    env.globals.update(plural=plural, query_string=query_string)
    return env


environment = make_environment()
