"""End to end: storescu -> `mercury serve` -> a dummy target; with a one-second retention
the cleaner service removes the delivered series and journals it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from mercury.store.models import EventRow, SeriesRow
from tests.conftest import MercuryProcess, write_config
from tests.helpers import free_port, make_small_images, storescu, wait_for


def _index(tmp_path: Path, query: Any) -> list[Any]:
    engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        engine.dispose()


def test_a_delivered_series_is_cleaned_and_journaled(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(
        config.read_text()
        + """
timings: {cleaner_scan_interval: 1}
retention: {success: 1}
targets:
  nowhere: {target_type: dummy}
rules:
  all:
    rule: "True"
    target: nowhere
    series_complete_on: [association_end]
""",
        encoding="utf-8",
    )
    mercury = MercuryProcess(config, port)
    mercury.start()
    try:
        files = make_small_images(tmp_path / "img", 4, per_series=4)
        sent = storescu(files, port)
        assert sent.returncode == 0, sent.stderr
        spool = tmp_path / "spool" / "data"
        assert len(list(spool.rglob("*.dcm"))) == 4

        cleaned = wait_for(
            lambda: _index(tmp_path, select(EventRow).where(EventRow.kind == "series.cleaned")),
            60,
            "the series to be cleaned",
        )
    finally:
        mercury.stop()
    [event] = cleaned
    assert event.stage == "clean"
    assert event.details["reason"] == "retention"
    assert event.details["outcome"] == "success"
    assert event.details["files"] == 4
    assert list(spool.rglob("*.dcm")) == []
    [state] = _index(tmp_path, select(SeriesRow.state))
    assert tuple(state) == ("cleaned",)
    assert "ready cleaner: success kept 1 s" in mercury.log.read_text()
