"""The index writer on SQLite and a real PostgreSQL: rows, counts, duplicates, journal."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mercury.store.db import make_engine, upgrade
from mercury.store.index_writer import IndexWriter, ReceivedInstance
from mercury.store.journal import record
from mercury.store.models import AssociationRow, EventRow, InstanceRow, SeriesRow, StudyRow


def _instance(
    sop: str,
    series: str = "1.2.3.1",
    study: str = "1.2.3",
    size: int = 100,
    assoc: str = "a" * 32,
    description: str = "Axial",
) -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=sop,
        series_uid=series,
        study_uid=study,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        path=f"data/{study}/{series}/{sop}.dcm",
        size=size,
        calling_ae="CT1",
        called_ae="MERCURY",
        peer_host="127.0.0.1",
        association_id=assoc,
        received_at=datetime.now(UTC),
        tags={"Modality": "CT", "SeriesDescription": description, "PatientID": "P1"},
    )


@pytest.fixture
def writer(db_url: str) -> object:
    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)  # idempotent
    w = IndexWriter(engine)
    w.start()
    w.run(
        lambda s: s.add(
            AssociationRow(
                id="a" * 32,
                receiver_id="r",
                calling_ae="CT1",
                called_ae="MERCURY",
                peer_host="127.0.0.1",
                peer_port=1,
                started_at=datetime.now(UTC),
                instances=0,
                bytes=0,
                failures=0,
            )
        )
    ).result()
    yield w, engine
    w.stop()
    engine.dispose()


def test_rows_and_counts(writer: tuple[IndexWriter, object]) -> None:
    w, engine = writer
    futures = [w.add_instance(_instance(f"1.2.3.1.{i}")) for i in range(1, 251)]
    futures.append(w.add_instance(_instance("1.2.3.2.1", series="1.2.3.2", description="Sag")))
    outcomes = [f.result(timeout=30) for f in futures]
    assert not any(o.duplicate for o in outcomes)
    assert outcomes[0].new_series
    with engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.execute(select(func.count()).select_from(InstanceRow)).scalar_one() == 251
        series = {r.series_uid: r for r in conn.execute(select(SeriesRow))}
        assert series["1.2.3.1"].instance_count == 250
        assert series["1.2.3.1"].bytes == 25000
        assert series["1.2.3.1"].tags["SeriesDescription"] == "Axial"
        assert series["1.2.3.2"].modality == "CT"
        study = conn.execute(select(StudyRow)).one()
        assert (study.series_count, study.instance_count, study.patient_id) == (2, 251, "P1")
        assoc = conn.execute(select(AssociationRow)).one()
        assert (assoc.instances, assoc.bytes) == (251, 25100)
        kinds = conn.execute(select(EventRow.kind)).scalars().all()
        assert kinds.count("series.received") == 2


def test_duplicate_is_counted_and_journaled_never_dropped(
    writer: tuple[IndexWriter, object],
) -> None:
    w, engine = writer
    assert not w.add_instance(_instance("1.2.3.1.1", size=100)).result(30).duplicate
    again = w.add_instance(_instance("1.2.3.1.1", size=120)).result(30)
    assert again.duplicate
    # and twice inside one batch
    both = [
        w.add_instance(_instance("1.2.3.1.9", size=5)),
        w.add_instance(_instance("1.2.3.1.9", size=6)),
    ]
    assert [f.result(30).duplicate for f in both] == [False, True]
    with engine.connect() as conn:  # type: ignore[attr-defined]
        row = conn.execute(
            select(InstanceRow).where(InstanceRow.sop_instance_uid == "1.2.3.1.1")
        ).one()
        assert (row.size, row.duplicate_count) == (120, 1)  # newest bytes kept, duplicate counted
        series = conn.execute(select(SeriesRow)).one()
        assert (series.instance_count, series.duplicate_count) == (2, 2)
        events = conn.execute(select(EventRow).where(EventRow.kind == "instance.duplicate")).all()
        assert len(events) == 2
        assert events[0].severity == "warning"


def test_one_bad_item_does_not_fail_its_batch(writer: tuple[IndexWriter, object]) -> None:
    w, engine = writer

    def broken(session: object) -> None:
        raise RuntimeError("boom")

    good = [w.add_instance(_instance(f"1.2.3.1.{i}")) for i in range(1, 20)]
    bad = w.run(broken)
    more = [w.add_instance(_instance(f"1.2.3.1.{i}")) for i in range(20, 40)]
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(30)
    assert all(not f.result(30).duplicate for f in good + more)
    with engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.execute(select(func.count()).select_from(InstanceRow)).scalar_one() == 39


def test_journal_record(writer: tuple[IndexWriter, object]) -> None:
    w, engine = writer
    w.run(
        lambda s: record(
            s, stage="receive", kind="test.kind", message="<b>hello</b>", details={"x": 1}
        )
    ).result(30)
    with engine.connect() as conn:  # type: ignore[attr-defined]
        event = conn.execute(select(EventRow).where(EventRow.kind == "test.kind")).one()
        assert event.message == "<b>hello</b>"
        assert event.details == {"x": 1}


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
