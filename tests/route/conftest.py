"""Routing fixtures: an upgraded index on each database, a settable clock, an index writer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from mercury.store.db import make_engine, upgrade
from tests.route.support import Clock, Index


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def index(engine: Engine, clock: Clock) -> Iterator[Index]:
    index = Index(engine, clock)
    index.association("a1")
    yield index
    index.close()
