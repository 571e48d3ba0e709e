"""Fixtures shared by the suite: databases (SQLite and a real PostgreSQL) and a running mercury."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, port_open, wait_for

PG_ADMIN_URL = os.environ.get("MERCURY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_admin() -> object:
    import psycopg

    return psycopg.connect(
        PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True
    )


@pytest.fixture(scope="session")
def pg_server() -> str:
    """A reachable PostgreSQL server; the test script installs and starts one."""
    try:
        conn = _pg_admin()
    except Exception as exc:  # pragma: no cover - environment problem, explained
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); run scripts/test.sh, "
            "which installs and starts it"
        )
    conn.close()  # type: ignore[attr-defined]
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped afterwards."""
    name = f"mercury_test_{uuid.uuid4().hex[:12]}"
    conn = _pg_admin()
    conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    base = pg_server.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.db'}"
    return str(request.getfixturevalue("pg_url"))


def write_config(
    folder: Path,
    port: int,
    database: str | None = None,
    receiver_extra: str = "",
    storage_extra: str = "",
) -> Path:
    """A configuration for a test's `mercury serve`: loopback only, and the web service on
    a free port (its default, 8080, may be taken)."""
    database = database or f"sqlite:///{folder / 'mercury.db'}"
    config = folder / "mercury.yaml"
    config.write_text(
        f"""
receiver:
  host: 127.0.0.1
  port: {port}
  ae_titles: [MERCURY, MERCURY2]
{receiver_extra}
storage:
  spool: {folder / "spool"}
  database: {database}
  reserve_mb: 0
{storage_extra}
web:
  host: 127.0.0.1
  port: {free_port()}
""",
        encoding="utf-8",
    )
    return config


class MercuryProcess:
    """`mercury serve` as a real child process, as users run it."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "mercury.log"

    def start(self, timeout: float = 60) -> None:
        exe = shutil.which("mercury", path=str(Path(sys.executable).parent)) or "mercury"
        self._logfile = self.log.open("ab")
        self.proc = subprocess.Popen(
            [exe, "serve", "--config", str(self.config)],
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: port_open(self.port) or self._died(),
            timeout,
            f"mercury to listen on {self.port}",
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"mercury exited early:\n{self.log.read_text()}")

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if hasattr(self, "_logfile"):
            self._logfile.close()


@pytest.fixture
def mercury(tmp_path: Path) -> Iterator[MercuryProcess]:
    """A running mercury receiver on a free port with SQLite."""
    port = free_port()
    process = MercuryProcess(write_config(tmp_path, port), port)
    process.start()
    try:
        yield process
    finally:
        process.stop()
