"""End to end: storescu -> mercury serve -> router -> jobs, with real timings."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, select

from mercury.store.models import EventRow, JobInstanceRow, JobRow
from tests.conftest import MercuryProcess, write_config
from tests.helpers import free_port, make_small_images, storescu, wait_for

RULES = """
targets:
  pacs: {target_type: dummy}
rules:
  everything:
    rule: "tags.Modality != ''"
    target: pacs
    series_complete_on: [association_end]
"""


def test_association_end_routes_each_series(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + RULES)
    mercury = MercuryProcess(config, port)
    mercury.start()
    try:
        files = make_small_images(tmp_path / "img", 10, per_series=5)
        for series in (files[:5], files[5:]):  # one association per series
            result = storescu(series, port)
            assert result.returncode == 0, result.stderr
        engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")

        def routed() -> list[JobRow]:
            with engine.connect() as conn:
                return list(conn.execute(select(JobRow)))

        jobs = wait_for(lambda: len(routed()) == 2 and routed(), 30, "two dispatch jobs")
        with engine.connect() as conn:
            for job in jobs:
                linked = conn.execute(
                    select(JobInstanceRow).where(JobInstanceRow.job_id == job.id)
                ).all()
                assert len(linked) == 5
            reasons = [
                e.details["reason"]
                for e in conn.execute(select(EventRow).where(EventRow.kind == "series.completed"))
            ]
        engine.dispose()
        assert {job.target for job in jobs} == {"pacs"}
        assert reasons == ["association_end", "association_end"]
    finally:
        mercury.stop()
