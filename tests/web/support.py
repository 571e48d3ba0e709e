"""Web test support: a configuration file, an index filled the way mercury fills it
(the index writer, the router, the dispatch records), users with tokens, a settable clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mercury.config.load import load_config
from mercury.dispatch.base import InstanceResult
from mercury.dispatch.outcome import TargetAttempt
from mercury.dispatch.records import write_attempt, write_deliveries
from mercury.route.router import Router
from mercury.route.ruleset import RuleSet
from mercury.store.index_writer import IndexWriter, ReceivedInstance
from mercury.store.jobs import Claimer, finish_job
from mercury.store.models import JobRow, utcnow
from mercury.web import accounts

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def config_text(folder: Path, database: str, extra_rules: str = "") -> str:
    return f"""\
# mercury test configuration
receiver:
  port: 11112
storage:
  spool: {folder / "spool"}
  database: {database}
  reserve_mb: 0
timings:
  series_complete_trigger: 60
web:
  login_attempts: 3
  login_pause: 300
targets:
  pacs:
    target_type: folder
    folder: {folder / "out-pacs"}
  archive:
    target_type: folder
    folder: {folder / "out-archive"}
rules:
  ct:
    rule: "tags.Modality == 'CT'"
    action: route
    target: pacs
  mr_study:
    rule: "tags.Modality == 'MR'"
    action: route
    target: archive
    action_trigger: study
{extra_rules}"""


def write_config(folder: Path, database: str) -> Path:
    (folder / "spool").mkdir(parents=True, exist_ok=True)
    path = folder / "mercury.yaml"
    path.write_text(config_text(folder, database), encoding="utf-8")
    return path


STUDY_1 = "1.2.826.0.1.1"
STUDY_2 = "1.2.826.0.1.2"
CT_A = "1.2.826.0.1.1.1"
MR = "1.2.826.0.1.1.2"
OT = "1.2.826.0.1.2.1"
CT_B = "1.2.826.0.1.2.2"


@dataclass
class Data:
    """What :func:`populate` put into the index."""

    failed_job: str = ""
    queued_job: str = ""
    instances: dict[str, list[str]] = field(default_factory=dict)


def receive(
    writer: IndexWriter, series: str, study: str, count: int, at: datetime, **tags: str
) -> list[str]:
    uids = []
    for index in range(count):
        uid = f"{series}.{index + 1}"
        uids.append(uid)
        writer.add_instance(
            ReceivedInstance(
                sop_instance_uid=uid,
                series_uid=series,
                study_uid=study,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax="1.2.840.10008.1.2.1",
                path=f"data/{study}/{series}/{uid}.dcm",
                size=1000,
                calling_ae="MODALITY",
                called_ae="MERCURY",
                peer_host="127.0.0.1",
                association_id="a1",
                received_at=at + timedelta(seconds=index),
                tags={"SeriesDescription": f"series {series}", **tags},
            )
        ).result(10)
    return uids


def populate(engine: Engine, config_path: Path, start: datetime | None = None) -> Data:
    """Two studies: study 1 with a CT series (its dispatch job failed once) and an MR
    series waiting for its study rule; study 2 with a discarded OT series and a CT series
    whose job is queued."""
    start = start or utcnow() - timedelta(minutes=20)
    data = Data()
    writer = IndexWriter(engine)
    writer.start()
    try:
        patient_1 = {"PatientID": "MRN1", "PatientName": "Doe^Jane", "AccessionNumber": "ACC1"}
        patient_2 = {"PatientID": "MRN2", "PatientName": "Roe^Rick", "AccessionNumber": "ACC2"}
        data.instances[CT_A] = receive(writer, CT_A, STUDY_1, 3, start, Modality="CT", **patient_1)
        data.instances[MR] = receive(writer, MR, STUDY_1, 2, start, Modality="MR", **patient_1)
        data.instances[OT] = receive(writer, OT, STUDY_2, 2, start, Modality="OT", **patient_2)
    finally:
        writer.stop()
    rules = RuleSet.from_config(load_config(config_path))
    Router(engine, rules, clock=lambda: start + timedelta(seconds=70)).scan()
    with Session(engine) as session, session.begin():
        [job] = Claimer("dispatch", "test-dispatcher").claim(
            session, now=start + timedelta(seconds=80), offpeak_open=False
        )
        data.failed_job = job.id
        began = start + timedelta(seconds=80)
        write_attempt(
            session,
            job.id,
            1,
            "test-dispatcher",
            began,
            began + timedelta(seconds=2),
            TargetAttempt("pacs", "rejected", sent=2, failed=1, error="disk full at the PACS"),
        )
        results = [InstanceResult(uid, "sent") for uid in data.instances[CT_A][:2]]
        results.append(
            InstanceResult(data.instances[CT_A][2], "failed", 0xA700, "out of resources")
        )
        write_deliveries(session, job.id, "pacs", 1, results, [], began + timedelta(seconds=2))
        finish_job(
            session,
            job.id,
            "test-dispatcher",
            now=began + timedelta(seconds=2),
            state="failed",
            error="pacs: disk full at the PACS",
        )
    writer = IndexWriter(engine)
    writer.start()
    try:
        later = start + timedelta(minutes=5)
        data.instances[CT_B] = receive(writer, CT_B, STUDY_2, 1, later, Modality="CT", **patient_2)
    finally:
        writer.stop()
    Router(engine, rules, clock=lambda: later + timedelta(seconds=70)).scan()
    with Session(engine) as session:
        data.queued_job = session.scalars(select(JobRow.id).where(JobRow.series_uid == CT_B)).one()
    return data


@dataclass
class Account:
    name: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def add_user(engine: Engine, name: str, role: str, **fields: Any) -> Account:
    with Session(engine) as session, session.begin():
        accounts.create_user(session, name, PASSWORD, role, now=utcnow(), **fields)
        token = accounts.create_token(session, name, now=utcnow(), created_by="test").token
    return Account(name, role, token)


sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
"""For tests of logic that no database query of its own depends on."""
