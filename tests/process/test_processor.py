"""The processor's guard-rails against a real index (SQLite and PostgreSQL) with real local
modules: a module's max_parallel, GPU admission (only free indices, only those visible),
the global worker limit, and cancel of a queued and of a running job."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from mercury.config.load import config_from_data
from mercury.process.processor import Processor
from mercury.store.db import make_engine, upgrade
from mercury.store.jobs import JobSpec, create_jobs, request_cancel
from mercury.store.models import InstanceRow, JobRow, SeriesRow, utcnow
from mercury.store.spool import Spool
from tests.helpers import make_small_images, wait_for

# Writes its environment where the test can read it, then works "forever".
WORKER = (
    "import json, os, pathlib, time; "
    "pathlib.Path(os.environ['MERCURE_OUT_DIR'], 'env.json').write_text("
    "json.dumps(dict(os.environ))); time.sleep(600)"
)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


class Bench:
    def __init__(self, engine: Engine, tmp: Path) -> None:
        self.engine = engine
        self.tmp = tmp
        self.spool = Spool(tmp / "spool")
        self.spool.prepare()
        self.processors: list[Processor] = []
        self.uids: list[str] = []
        self.series = self.study = ""

    def config(self, **processing: Any) -> Any:
        worker = {"runner": "local", "command": ["python", "-c", WORKER], "timeout": 600}
        data = {
            "storage": {"spool": str(self.spool.root), "database": "sqlite://"},
            "processing": {"workers": 4, **processing},
            "modules": {
                "single": {**worker, "max_parallel": 1},
                "gpu": {**worker, "gpus": 1},
                "plain": worker,
            },
            "rules": {
                name: {"rule": "True", "action": "process", "processing_module": name}
                for name in ("single", "gpu", "plain")
            },
        }
        return config_from_data(data, source="test.yaml")

    def store(self) -> None:
        files = make_small_images(self.tmp / "img", 2, per_series=2, size=16)
        rows = []
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            relative = self.spool.relative_path(
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
            )
            self.spool.absolute(relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.spool.absolute(relative))
            self.series, self.study = str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
            rows.append(
                {
                    "sop_instance_uid": str(ds.SOPInstanceUID),
                    "series_uid": self.series,
                    "study_uid": self.study,
                    "sop_class_uid": str(ds.SOPClassUID),
                    "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
                    "path": relative,
                    "size": 1,
                    "calling_ae": "M",
                    "called_ae": "MERCURY",
                    "peer_host": "127.0.0.1",
                    "association_id": "a",
                    "received_at": utcnow(),
                }
            )
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            session.execute(insert(InstanceRow), rows)
            session.add(
                SeriesRow(
                    series_uid=self.series,
                    study_uid=self.study,
                    tags={"Modality": "OT", "SeriesInstanceUID": self.series},
                    first_received_at=now,
                    last_received_at=now,
                )
            )
        self.uids = [row["sop_instance_uid"] for row in rows]

    def job(self, module: str) -> str:
        spec = JobSpec(
            kind="process",
            rule=module,
            scope="series",
            study_uid=self.study,
            series_uid=self.series,
            instances=self.uids,
            modules=(module,),
            settings={"steps": [{}]},
        )
        with Session(self.engine) as session, session.begin():
            return create_jobs(session, [spec], now=utcnow(), decision_id=None)[0]

    def processor(self, config: Any) -> Processor:
        processor = Processor(self.engine, config, self.spool, owner="p1")
        self.processors.append(processor)
        return processor

    def state(self, job_id: str) -> str:
        with Session(self.engine) as session:
            return str(session.scalars(select(JobRow.state).where(JobRow.id == job_id)).one())

    def cancel(self, job_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            request_cancel(session, job_id, now=utcnow(), by="test")

    def env(self, processor: Processor, job_id: str) -> dict[str, str]:
        found = list((processor.work_root / job_id).glob("*/step-0/out/env.json"))
        return json.loads(found[0].read_text()) if found else {}


@pytest.fixture
def bench(engine: Engine, tmp_path: Path) -> Iterator[Bench]:
    bench = Bench(engine, tmp_path)
    bench.store()
    yield bench
    for processor in bench.processors:
        processor.close(grace=10)


def test_module_max_parallel_holds_the_second_run(bench: Bench) -> None:
    first, second = bench.job("single"), bench.job("single")
    processor = bench.processor(bench.config())
    assert processor.tick() == 1  # the module allows one run at a time
    running = wait_for(
        lambda: next((j for j in (first, second) if bench.env(processor, j)), None),
        30,
        "the first run to start",
    )
    waiting = second if running == first else first
    assert bench.state(waiting) == "queued"
    assert processor.tick() == 0
    bench.cancel(running)
    processor.tick()  # sees the cancel request
    wait_for(lambda: bench.state(running) == "cancelled", 30, "the cancel")
    wait_for(lambda: processor.tick() == 1 or bench.state(waiting) == "running", 30, "claim")
    wait_for(lambda: bench.env(processor, waiting), 30, "the second run")


def test_gpu_admission_gives_only_a_free_gpu(bench: Bench) -> None:
    first, second = bench.job("gpu"), bench.job("gpu")
    plain = bench.job("plain")
    processor = bench.processor(bench.config(gpus=["3"]))
    assert processor.tick() == 2  # one GPU job and the plain one; the other GPU job waits
    gpu_job = wait_for(
        lambda: next((j for j in (first, second) if bench.env(processor, j)), None),
        30,
        "a GPU run",
    )
    other = second if gpu_job == first else first
    assert bench.env(processor, gpu_job)["CUDA_VISIBLE_DEVICES"] == "3"
    wait_for(lambda: bench.env(processor, plain), 30, "the plain run")
    assert bench.env(processor, plain)["CUDA_VISIBLE_DEVICES"] == ""
    assert bench.state(other) == "queued"
    bench.cancel(gpu_job)
    processor.tick()
    wait_for(lambda: bench.state(gpu_job) == "cancelled", 30, "the cancel")
    wait_for(lambda: processor.tick() == 1 or bench.state(other) == "running", 30, "claim")
    env = wait_for(lambda: bench.env(processor, other), 30, "the second GPU run")
    assert env["CUDA_VISIBLE_DEVICES"] == "3"


def test_worker_limit_and_cancel_of_a_queued_job(bench: Bench) -> None:
    jobs = [bench.job("plain") for _ in range(3)]
    processor = bench.processor(bench.config(workers=2))
    assert processor.tick() == 2
    queued = next(j for j in jobs if bench.state(j) == "queued")
    bench.cancel(queued)
    assert bench.state(queued) == "cancelled"
    assert processor.tick() == 0
