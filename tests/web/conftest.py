"""Web fixtures: a configuration file on each database, the app with a settable clock, its
index, users of every role with API tokens, and an index filled by the real stages."""

from __future__ import annotations

import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import Engine

from mercury.store.db import make_engine, upgrade
from mercury.web import accounts
from mercury.web.app import create_app
from tests.conftest import _pg_admin
from tests.web.support import Account, Clock, Data, add_user, populate, write_config

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2, which is not installed
    from fastapi.testclient import TestClient


@pytest.fixture(autouse=True)
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 with the production cost takes ~50 ms a hash; tests hash hundreds."""
    monkeypatch.setattr(
        accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def _migrated(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "index.db"
    _migrated(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from (much faster than
    running the migrations for every test)."""
    name = f"mercury_web_template_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin()
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    _migrated(f"{pg_server.rsplit('/', 1)[0]}/{name}")
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each web test runs on both databases, each starting from a migrated copy."""
    if request.param == "sqlite":
        path = tmp_path / "index.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server = str(request.getfixturevalue("pg_server"))
    template = request.getfixturevalue("pg_template")
    name = f"mercury_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')  # type: ignore[attr-defined]
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Path:
    return write_config(tmp_path, db_url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(config_path: Path, clock: Clock) -> Iterator[FastAPI]:
    application = create_app(config_path, clock=clock)
    yield application
    application.state.mercury.engine.dispose()


@pytest.fixture
def engine(app: FastAPI) -> Engine:
    engine = app.state.mercury.engine
    assert isinstance(engine, Engine)
    return engine


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


@pytest.fixture
def admin(engine: Engine) -> Account:
    return add_user(engine, "ada", "admin")


@pytest.fixture
def operator(engine: Engine) -> Account:
    return add_user(engine, "otto", "operator")


@pytest.fixture
def viewer(engine: Engine) -> Account:
    return add_user(engine, "vera", "viewer")


@pytest.fixture
def data(engine: Engine, config_path: Path) -> Data:
    return populate(engine, config_path)
