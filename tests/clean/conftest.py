"""Cleaner fixtures: an upgraded index on each database, a settable clock, a world of
stored series on a spool in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mercury.store.db import make_engine, upgrade
from tests.clean.support import World
from tests.route.support import Clock


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
def world(engine: Engine, clock: Clock, tmp_path: Path) -> Iterator[World]:
    world = World(engine, clock, tmp_path / "spool")
    yield world
    world.close()
