"""The index writer records each distinct tag set of a series once (SQLite and PostgreSQL):
per-image tags do not count, a restarted writer does not duplicate, a failed batch does
not leave variants the index does not have, and a series has a bounded number of them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mercury.store import index_writer
from mercury.store.db import make_engine, upgrade
from mercury.store.index_writer import IndexWriter, ReceivedInstance, variant_digest
from mercury.store.models import EventRow, SeriesVariantRow

SERIES = "1.2.3.1"


def instance(n: int, series: str = SERIES, **tags: str) -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=f"{series}.{n}",
        series_uid=series,
        study_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        path=f"data/{series}.{n}.dcm",
        size=10,
        calling_ae="CT1",
        called_ae="MERCURY",
        peer_host="127.0.0.1",
        association_id="a" * 32,
        received_at=datetime.now(UTC),
        tags={
            "Modality": "CT",
            "SeriesDescription": "Axial",
            "SOPInstanceUID": f"{series}.{n}",
            "InstanceNumber": str(n),
            "AcquisitionTime": f"1200{n:02d}",
            **tags,
        },
    )


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def writer(engine: Engine) -> Iterator[IndexWriter]:
    w = IndexWriter(engine)
    w.start()
    yield w
    w.stop()


def variants(engine: Engine, series: str = SERIES) -> list[SeriesVariantRow]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(SeriesVariantRow)
                .where(SeriesVariantRow.series_uid == series)
                .order_by(SeriesVariantRow.received_at)
            )
        )


def test_digest_ignores_per_image_tags_only() -> None:
    a = instance(1).tags
    assert variant_digest(a) == variant_digest(instance(2).tags)
    assert variant_digest(a) != variant_digest({**a, "ImageComments": ""})
    assert variant_digest(a) != variant_digest({**a, "SeriesDescription": "Axial "})
    # Names, lengths and values are all hashed: moving text between values changes it.
    assert variant_digest({"A": "xy", "B": ""}) != variant_digest({"A": "x", "B": "y"})
    assert variant_digest({"A": "x", "B": "y"}) == variant_digest({"B": "y", "A": "x"})


def test_each_distinct_tag_set_once(engine: Engine, writer: IndexWriter) -> None:
    for n in range(1, 7):
        extra = {"ImageComments": "CONTRAST"} if n in (3, 5) else {}
        writer.add_instance(instance(n, **extra)).result(30)
    writer.add_instance(instance(7, series="1.2.3.2")).result(30)
    rows = variants(engine)
    assert [r.sop_instance_uid for r in rows] == [f"{SERIES}.1", f"{SERIES}.3"]
    assert rows[1].tags["ImageComments"] == "CONTRAST"
    assert rows[0].tags["InstanceNumber"] == "1"  # the first image's values are kept
    assert len(variants(engine, "1.2.3.2")) == 1


def test_a_restarted_writer_does_not_duplicate(engine: Engine, writer: IndexWriter) -> None:
    writer.add_instance(instance(1)).result(30)
    writer.stop()
    again = IndexWriter(engine)  # nothing known in memory: the insert is a no-op
    again.start()
    try:
        again.add_instance(instance(2)).result(30)
        again.add_instance(instance(3, ImageComments="x")).result(30)
    finally:
        again.stop()
    assert [r.sop_instance_uid for r in variants(engine)] == [f"{SERIES}.1", f"{SERIES}.3"]


def test_a_failed_batch_leaves_nothing_remembered(engine: Engine, writer: IndexWriter) -> None:
    gate = threading.Event()
    held = writer.run(lambda session: gate.wait(30))  # the writer is busy with this batch
    first = writer.add_instance(instance(1, ImageComments="x"))

    def broken(session: object) -> None:
        raise RuntimeError("boom")

    bad = writer.run(broken)  # queued in the same batch as the instance
    gate.set()
    held.result(30)
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(30)
    first.result(30)  # committed alone after the batch failed
    assert [r.sop_instance_uid for r in variants(engine)] == [f"{SERIES}.1"]


def test_variants_per_series_are_bounded(
    engine: Engine, writer: IndexWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_writer, "MAX_VARIANTS_PER_SERIES", 3)
    for n in range(1, 7):
        writer.add_instance(instance(n, SliceLocation=str(n))).result(30)
    assert len(variants(engine)) == 3
    with Session(engine) as session:
        [limited] = session.scalars(
            select(EventRow).where(EventRow.kind == "series.variants_limited")
        )
    assert limited.series_uid == SERIES
