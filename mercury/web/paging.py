"""Pages of a query: newest first, by limit and offset or by a keyset cursor (a page
fetched by cursor does not shift when new rows arrive), with the total count."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from mercury.web.params import Page, cursor_int, cursor_text, cursor_time, encode_cursor
from mercury.web.timeutil import aware

AnyRow = Row[*tuple[Any, ...]]
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class Result:
    rows: Sequence[AnyRow]
    total: int
    next_cursor: str | None


def newest_first(
    session: Session,
    query: AnySelect,
    page: Page,
    *,
    time: InstrumentedAttribute[datetime] | None,
    key: InstrumentedAttribute[Any],
    position: Callable[[AnyRow], tuple[datetime | None, Any]],
) -> Result:
    """Rows ordered by (time, key) descending; ``position`` gives a row's (time, key)."""
    total = int(
        session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    )
    if page.cursor is not None:
        query = query.where(_after(page.cursor, time, key))
    order = [time.desc(), key.desc()] if time is not None else [key.desc()]
    query = query.order_by(*order).limit(page.limit + 1)
    if page.cursor is None and page.offset:
        query = query.offset(page.offset)
    rows = session.execute(query).all()
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    next_cursor = None
    if more and rows:
        moment, last_key = position(rows[-1])
        values: list[Any] = (
            [last_key] if time is None else [aware(moment) if moment else None, last_key]
        )
        next_cursor = encode_cursor(values)
    return Result(rows, total, next_cursor)


def _after(
    cursor: list[Any],
    time: InstrumentedAttribute[datetime] | None,
    key: InstrumentedAttribute[Any],
) -> Any:
    if time is None:
        return key < cursor_int(cursor, 0)
    moment = cursor_time(cursor, 0)
    last = cursor_text(cursor, 1)
    return or_(time < moment, and_(time == moment, key < last))
