"""Index tables of the notification stage: how far each journal follower has read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mercury.store.models import Base, utcnow


class JournalCursorRow(Base):
    """A follower's place in the journal: every event up to ``position`` is handled;
    ``done`` lists the events after it already acted on (those after a gap that may
    still fill: a transaction that took an id earlier but had not committed yet).
    ``revision`` changes with every write, so two followers never act on one event."""

    __tablename__ = "journal_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    done: Mapped[list[int]] = mapped_column(JSON, default=list)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
