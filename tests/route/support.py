"""Routing test support: a settable clock, rule sets from a short configuration, and an
index written the way the receiver writes it (through the index writer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from mercury.config.load import config_from_data
from mercury.route.ruleset import RuleSet
from mercury.store.index_writer import IndexWriter, ReceivedInstance
from mercury.store.models import AssociationRow, EventRow, JobInstanceRow, JobRow

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


BASE: dict[str, Any] = {
    "receiver": {"port": 11112},
    "storage": {"spool": "/tmp/unused-spool", "database": "sqlite://"},
    "timings": {
        "series_complete_trigger": 60,
        "study_complete_trigger": 900,
        "study_forcecomplete_trigger": 5400,
    },
    "targets": {
        "pacs": {"target_type": "dicom", "ip": "127.0.0.1", "port": "104", "aet_target": "PACS"},
        "archive": {"target_type": "dummy"},
    },
    "modules": {"blur": {"docker_tag": "example/blur:1"}},
}


def ruleset(rules: dict[str, Any], **timings: Any) -> RuleSet:
    data = {**BASE, "rules": rules, "timings": {**BASE["timings"], **timings}}
    return RuleSet.from_config(config_from_data(data, source="test.yaml"))


class Index:
    """Writes instances the way the receiver does (through the index writer)."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.writer = IndexWriter(engine)
        self.writer.start()
        self.count = 0

    def association(self, assoc_id: str, closed: str | None = None) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                insert(AssociationRow),
                [
                    {
                        "id": assoc_id,
                        "receiver_id": "test",
                        "calling_ae": "SCU",
                        "called_ae": "MERCURY",
                        "peer_host": "127.0.0.1",
                        "peer_port": 1,
                        "started_at": self.clock(),
                        "ended_at": self.clock() if closed else None,
                        "close_reason": closed,
                        "instances": 0,
                        "bytes": 0,
                        "failures": 0,
                    }
                ],
            )

    def close_association(self, assoc_id: str, how: str = "released") -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(AssociationRow, assoc_id)
            assert row is not None
            row.ended_at = self.clock()
            row.close_reason = how

    def add(
        self,
        series: str,
        n: int = 1,
        *,
        study: str = "1.2.9",
        assoc: str = "a1",
        expected: int | None = None,
        **tags: str,
    ) -> list[str]:
        uids = []
        for _ in range(n):
            self.count += 1
            uid = f"{series}.{self.count}"
            uids.append(uid)
            self.writer.add_instance(
                ReceivedInstance(
                    sop_instance_uid=uid,
                    series_uid=series,
                    study_uid=study,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    transfer_syntax="1.2.840.10008.1.2.1",
                    path=f"x/{uid}.dcm",
                    size=10,
                    calling_ae="SCU",
                    called_ae="MERCURY",
                    peer_host="127.0.0.1",
                    association_id=assoc,
                    received_at=self.clock(),
                    tags={"Modality": "CT", "SeriesDescription": "Axial", **tags},
                    expected_count=expected,
                )
            ).result(10)
        return uids

    def close(self) -> None:
        self.writer.stop()


def jobs(engine: Engine) -> list[JobRow]:
    with Session(engine) as session:
        return list(session.scalars(select(JobRow).order_by(JobRow.created_at, JobRow.id)))


def job_uids(engine: Engine, job_id: str) -> set[str]:
    with Session(engine) as session:
        return set(
            session.scalars(
                select(JobInstanceRow.sop_instance_uid).where(JobInstanceRow.job_id == job_id)
            )
        )


def events(engine: Engine, kind: str) -> list[EventRow]:
    with Session(engine) as session:
        return list(session.scalars(select(EventRow).where(EventRow.kind == kind)))
