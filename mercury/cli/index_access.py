"""Opening the index from a CLI command: migrated, and disposed of afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from mercury.config.models import MercuryConfig


@contextmanager
def open_index(config: MercuryConfig) -> Iterator[Engine]:
    from mercury.store.db import make_engine, upgrade

    engine = make_engine(config.storage.database)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def operator_name() -> str:
    """Who is acting, for the journal: the login name of the shell user."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"
