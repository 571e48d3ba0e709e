"""Cleaner test support: series stored for real (files written through the spool, rows
through the index writer, routed by the router), jobs finished at chosen times."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from mercury.clean.cleaner import Cleaner
from mercury.clean.files import DiskUsage
from mercury.config.load import config_from_data
from mercury.config.models import MercuryConfig
from mercury.route.router import Router
from mercury.route.ruleset import RuleSet
from mercury.store.index_writer import IndexWriter, ReceivedInstance
from mercury.store.jobs import JobSpec, create_jobs
from mercury.store.models import AssociationRow, EventRow, InstanceRow, JobRow, SeriesRow
from mercury.store.spool import Spool, fsync_directories
from tests.route.support import Clock

# Seconds each outcome is kept in these tests.
SUCCESS, DISCARD, ERROR, INDEX_ROWS = 100, 50, 200, 1000

RULES: dict[str, Any] = {
    "send": {
        "rule": "tags.SeriesDescription != 'Scout' and tags.SeriesDescription != 'Process'",
        "target": "pacs",
    },
    "drop": {"rule": "tags.SeriesDescription == 'Scout'", "action": "discard"},
    "blur": {
        "rule": "tags.SeriesDescription == 'Process'",
        "action": "process",
        "processing_module": "blur",
    },
}


def config_data(spool: Path, database: str = "sqlite://", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "receiver": {"port": 11112},
        "storage": {"spool": str(spool), "database": database},
        "timings": {"series_complete_trigger": 60, "emergency_clean_percentage": 90},
        "retention": {
            "success": SUCCESS,
            "discard": DISCARD,
            "error": ERROR,
            "index_rows": INDEX_ROWS,
        },
        "targets": {"pacs": {"target_type": "dummy"}},
        "modules": {"blur": {"docker_tag": "example/blur:1"}},
        "rules": RULES,
    }
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def make_config(spool: Path, **overrides: Any) -> MercuryConfig:
    return config_from_data(config_data(spool, **overrides), source="test.yaml")


class World:
    """A spool and an index with series in every state the cleaner must tell apart."""

    def __init__(self, engine: Engine, clock: Clock, spool_root: Path, **config: Any) -> None:
        self.engine = engine
        self.clock = clock
        self.config = make_config(spool_root, **config)
        self.spool = Spool(spool_root)
        self.spool.prepare()
        self.writer = IndexWriter(engine)
        self.writer.start()
        self.router = Router(engine, RuleSet.from_config(self.config), clock=clock)
        self.count = 0
        with Session(engine) as session, session.begin():
            session.execute(
                insert(AssociationRow),
                [
                    {
                        "id": "a1",
                        "receiver_id": "test",
                        "calling_ae": "SCU",
                        "called_ae": "MERCURY",
                        "peer_host": "127.0.0.1",
                        "peer_port": 1,
                        "started_at": clock(),
                        "instances": 0,
                        "bytes": 0,
                        "failures": 0,
                    }
                ],
            )

    def close(self) -> None:
        self.writer.stop()

    def cleaner(self, usage: Callable[[], DiskUsage] | None = None) -> Cleaner:
        """A cleaner on this world; the disk looks nearly empty unless ``usage`` says
        otherwise (the emergency clean has its own tests on a small real file system)."""
        return Cleaner(
            self.engine,
            self.config,
            self.spool,
            clock=self.clock,
            usage=usage or (lambda: DiskUsage(total=100, used=1, available=99)),
        )

    # -- receiving and routing --------------------------------------------------------

    def store(
        self, series: str, sop: str, *, study: str, description: str, size: int
    ) -> ReceivedInstance:
        relative = Spool.relative_path(study, series, sop)
        payload = (sop.encode() * (size // len(sop) + 1))[:size]
        _, changed = self.spool.write(relative, [payload])
        fsync_directories(changed)
        backdate(self.spool.absolute(relative), 3600)  # spool files are old when cleaned
        return ReceivedInstance(
            sop_instance_uid=sop,
            series_uid=series,
            study_uid=study,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax="1.2.840.10008.1.2.1",
            path=relative,
            size=size,
            calling_ae="SCU",
            called_ae="MERCURY",
            peer_host="127.0.0.1",
            association_id="a1",
            received_at=self.clock(),
            tags={"Modality": "CT", "SeriesDescription": description},
        )

    def receive(
        self,
        series: str,
        n: int = 3,
        *,
        study: str = "1.2.9",
        description: str = "Axial",
        size: int = 2000,
    ) -> list[str]:
        """Store ``n`` new instances of a series: real files, then their index rows."""
        uids = []
        for _ in range(n):
            self.count += 1
            sop = f"{series}.{self.count}"
            uids.append(sop)
            received = self.store(series, sop, study=study, description=description, size=size)
            self.writer.add_instance(received).result(10)
        return uids

    def resend(self, series: str, sop: str, *, study: str = "1.2.9", size: int = 2000) -> None:
        """The same SOP instance again: the file is replaced, the row marked a duplicate."""
        received = self.store(series, sop, study=study, description="Axial", size=size)
        self.writer.add_instance(received).result(10)

    def route(self) -> list[str]:
        """Let the quiet period pass and route what is complete."""
        self.clock.advance(60)
        return self.router.scan().series_routed

    def finish(self, series: str, state: str = "succeeded", kind: str | None = None) -> None:
        """Finish the series' jobs (of one kind, or all) now."""
        with Session(self.engine) as session, session.begin():
            query = update(JobRow).where(JobRow.series_uid == series)
            if kind:
                query = query.where(JobRow.kind == kind)
            session.execute(query.values(state=state, updated_at=self.clock()))

    def publish_results(self, series: str, count: int = 2) -> tuple[str, str]:
        """What the processor leaves for a succeeded processing job of the series: its run
        folder, its outputs under results/<job>/ and a dispatch job sending them. Returns
        (processing job id, dispatch job id)."""
        [process] = [j for j in self.jobs(series) if j.kind == "process"]
        run = self.spool.root / "runs" / process.id / "1" / "step-0" / "out"
        run.mkdir(parents=True)
        (run.parent.parent / "logs").mkdir()
        (run.parent.parent / "logs" / "step-0.log").write_text("ran\n")
        results = self.spool.root / "results" / process.id
        results.mkdir(parents=True)
        files = []
        for index in range(count):
            name = f"{index:05d}-9.9.{index}.dcm"
            (results / name).write_bytes(b"x" * 1000)
            files.append(
                {"path": f"results/{process.id}/{name}", "sop_instance_uid": f"9.9.{index}"}
            )
        with Session(self.engine) as session, session.begin():
            [dispatch] = create_jobs(
                session,
                [
                    JobSpec(
                        kind="dispatch",
                        rule="blur",
                        scope="series",
                        study_uid=process.study_uid,
                        series_uid=series,
                        instances=(),
                        target="pacs",
                        details={"files": files, "source_job": process.id},
                    )
                ],
                now=self.clock(),
                decision_id=process.decision_id,
            )
            session.execute(
                update(JobRow)
                .where(JobRow.id == process.id)
                .values(state="succeeded", updated_at=self.clock())
            )
        return process.id, dispatch

    # -- looking --------------------------------------------------------------------------

    def jobs(self, series: str) -> list[JobRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(JobRow).where(JobRow.series_uid == series)))

    def state(self, series: str) -> str:
        with Session(self.engine) as session:
            row = session.get(SeriesRow, series)
            assert row is not None
            return row.state

    def files(self, series: str, study: str = "1.2.9") -> list[Path]:
        folder = self.spool.data_dir / study / series
        return sorted(folder.glob("*.dcm")) if folder.is_dir() else []

    def instance_rows(self, series: str) -> int:
        with Session(self.engine) as session:
            return len(
                session.scalars(
                    select(InstanceRow.sop_instance_uid).where(InstanceRow.series_uid == series)
                ).all()
            )

    def events(self, kind: str, series: str | None = None) -> list[EventRow]:
        with Session(self.engine) as session:
            query = select(EventRow).where(EventRow.kind == kind).order_by(EventRow.id)
            if series is not None:
                query = query.where(EventRow.series_uid == series)
            return list(session.scalars(query))


def backdate(path: Path, seconds: float) -> None:
    """Make a file look older (as every spool file is, long before it is cleaned)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - int(seconds * 1e9)))
