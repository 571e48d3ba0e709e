"""Configuration versions in the index: the full text of every configuration applied, with
its author, time and comment, numbered 1, 2, 3, ... (the number only grows, which is how a
running `mercury serve` notices a new one)."""

from __future__ import annotations

import difflib
import hashlib
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from mercury.store.web_models import ConfigVersionRow

FILE_AUTHOR = "file"
"""Author of a version recorded from the file as found (first start, or a hand edit)."""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def latest(session: Session) -> ConfigVersionRow | None:
    return session.scalars(
        select(ConfigVersionRow).order_by(ConfigVersionRow.version.desc()).limit(1)
    ).first()


def latest_number(engine: Engine) -> int:
    """The newest version number, 0 when none was recorded."""
    with engine.connect() as connection:
        value = connection.execute(select(func.max(ConfigVersionRow.version))).scalar()
    return int(value or 0)


def record_version(
    session: Session,
    text: str,
    *,
    author: str,
    comment: str,
    source: str,
    now: datetime,
    restored_from: int | None = None,
) -> ConfigVersionRow:
    row = ConfigVersionRow(
        created_at=now,
        author=author,
        comment=comment,
        source=source,
        restored_from=restored_from,
        digest=digest(text),
        text=text,
    )
    session.add(row)
    session.flush()
    return row


def record_if_new(session: Session, text: str, *, now: datetime, comment: str) -> int | None:
    """Record the file's text as a version unless the newest version holds it already
    (the file as first found, or as edited by hand since); the new number or None."""
    if not text:
        return None
    newest = latest(session)
    if newest is not None and newest.digest == digest(text):
        return None
    return record_version(
        session, text, author=FILE_AUTHOR, comment=comment, source="file", now=now
    ).version


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
