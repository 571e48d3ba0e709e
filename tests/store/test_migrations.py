"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL,
and upgrade an index written by the first release."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from mercury.store.db import MIGRATIONS, make_engine, upgrade
from mercury.store.models import Base


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_from_the_first_schema_keeps_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO series (series_uid, study_uid, modality, series_description, "
            "series_number, tags, instance_count, duplicate_count, bytes, first_received_at, "
            "last_received_at) VALUES ('1.2', '1.3', 'CT', '', '', '{}', 5, 0, 10, "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT state, route_round, instance_count FROM series").one()
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert tuple(row) == ("receiving", 0, 5)
    assert {"jobs", "job_instances", "decisions"} <= tables
