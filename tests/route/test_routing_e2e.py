"""End to end: storescu -> mercury serve -> router -> jobs, with real timings."""

from __future__ import annotations

from pathlib import Path

import pydicom
from sqlalchemy import create_engine, select

from mercury.store.models import DecisionRow, EventRow, JobInstanceRow, JobRow
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


EVERY_INSTANCE = """
targets:
  pacs: {target_type: dummy}
  archive: {target_type: dummy}
rules:
  contrast_any_image:
    rule: "'CONTRAST' in tags.ImageComments"
    evaluate_on: every_instance
    target: pacs
    series_complete_on: [association_end]
  contrast_first_image:
    rule: "'CONTRAST' in tags.ImageComments"
    target: archive
    series_complete_on: [association_end]
"""


def test_every_instance_fires_on_the_third_image(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + EVERY_INSTANCE)
    files = make_small_images(tmp_path / "img", 5, per_series=5)
    third = pydicom.dcmread(files[2])
    third.ImageComments = "CONTRAST PHASE"
    third.save_as(files[2])
    mercury = MercuryProcess(config, port)
    mercury.start()
    try:
        result = storescu(files, port)
        assert result.returncode == 0, result.stderr
        engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")

        def decisions() -> list[DecisionRow]:
            with engine.connect() as conn:
                return list(conn.execute(select(DecisionRow)))

        [decision] = wait_for(decisions, 30, "the routing decision")
        with engine.connect() as conn:
            [job] = conn.execute(select(JobRow)).all()
            linked = conn.execute(
                select(JobInstanceRow).where(JobInstanceRow.job_id == job.id)
            ).all()
        engine.dispose()
        assert decision.triggered == ["contrast_any_image"]
        assert (job.target, len(linked)) == ("pacs", 5)
        matched = decision.details["rules"]["contrast_any_image"]["variant"]
        assert matched["sop_instance_uid"] == str(third.SOPInstanceUID)
        assert matched["values"] == {"ImageComments": "CONTRAST PHASE"}
        assert decision.details["rules"]["contrast_first_image"]["fired"] is False
    finally:
        mercury.stop()
