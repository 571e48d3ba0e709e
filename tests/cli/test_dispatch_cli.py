"""`mercury target test|list|hold|release` and `mercury jobs list|show|retry` as users run
them, against a real index and real folder targets."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from mercury.config.load import load_config
from mercury.dispatch.dispatcher import Dispatcher
from mercury.store.db import make_engine, upgrade
from mercury.store.jobs import JobSpec, create_jobs
from mercury.store.models import InstanceRow, utcnow
from mercury.store.spool import Spool
from tests.cli.test_cli import run as run_process
from tests.helpers import make_small_images, wait_for

CONFIG = """
receiver: {{port: 11112}}
storage: {{spool: spool, database: "sqlite:///index.db"}}
dispatch:
  retry: {{max_retries: 0}}
targets:
  out: {{target_type: folder, folder: "{outbox}"}}
  nowhere: {{target_type: folder, folder: "{tmp}/not-mounted"}}
  dummy: {{target_type: dummy}}
  later: {{target_type: xnat, project_id: p, host: "https://x", user: u, password: p}}
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str) -> Result:
    """The command in this process (a new process per call costs seconds of imports)."""
    from typer.testing import CliRunner

    from mercury.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mercury.yaml"
    path.write_text(CONFIG.format(outbox=tmp_path / "outbox", tmp=tmp_path))
    return path


def test_target_test_verdicts(config: Path, tmp_path: Path) -> None:
    ok = run_process("target", "test", "dummy", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    missing = run("target", "test", "out", "--config", str(config), "--json")
    assert missing.returncode == 1
    verdict = json.loads(missing.stdout)
    assert verdict["ok"] is False
    assert "does not exist" in verdict["message"]
    (tmp_path / "outbox").mkdir()
    assert run("target", "test", "out", "--config", str(config)).returncode == 0
    unsupported = run("target", "test", "later", "--config", str(config))
    assert unsupported.returncode == 1
    assert "not supported" in " ".join(unsupported.stdout.split())
    unknown = run("target", "test", "pacs", "--config", str(config))
    assert unknown.returncode == 2
    assert "no target named 'pacs'" in " ".join(unknown.stderr.split())


def test_hold_release_and_list(config: Path) -> None:
    held = run("target", "hold", "out", "--reason", "PACS upgrade", "--config", str(config))
    assert held.returncode == 0, held.stderr
    assert "held" in held.stdout
    again = run("target", "hold", "out", "--config", str(config))
    assert "already held" in again.stdout
    states = json.loads(run("target", "list", "--config", str(config), "--json").stdout)
    out = next(s for s in states if s["name"] == "out")
    assert (out["held"], out["held_reason"]) == (True, "PACS upgrade")
    table = run("target", "list", "--config", str(config))
    assert "held" in table.stdout
    released = run("target", "release", "out", "--config", str(config))
    assert released.returncode == 0
    states = json.loads(run("target", "list", "--config", str(config), "--json").stdout)
    assert next(s for s in states if s["name"] == "out")["held"] is False


def _failed_job(config_path: Path, tmp_path: Path) -> str:
    """A dispatch job to a folder that is not there, with no retries: it fails."""
    config = load_config(config_path)
    engine = make_engine(config.storage.database)
    upgrade(engine)
    spool = Spool(config.storage.spool)
    spool.prepare()
    uids = []
    for path in make_small_images(tmp_path / "images", 2, per_series=2, size=16):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        relative = spool.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        spool.absolute(relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, spool.absolute(relative))
        uids.append(str(ds.SOPInstanceUID))
        with Session(engine) as session, session.begin():
            session.execute(
                insert(InstanceRow),
                [
                    {
                        "sop_instance_uid": str(ds.SOPInstanceUID),
                        "series_uid": str(ds.SeriesInstanceUID),
                        "study_uid": str(ds.StudyInstanceUID),
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
                ],
            )
    spec = JobSpec(
        kind="dispatch",
        rule="r",
        scope="series",
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        instances=uids,
        target="out",
    )
    with Session(engine) as session, session.begin():
        job_id = create_jobs(session, [spec], now=utcnow(), decision_id=None)[0]
    dispatcher = Dispatcher(engine, config, spool)
    dispatcher.tick()
    wait_for(lambda: not dispatcher.busy(), 30, "the send to finish")
    dispatcher.close()
    engine.dispose()
    return job_id


def _deliver_pending(config_path: Path) -> None:
    config = load_config(config_path)
    engine = make_engine(config.storage.database)
    dispatcher = Dispatcher(engine, config, Spool(config.storage.spool))
    assert dispatcher.tick() == 1
    wait_for(lambda: not dispatcher.busy(), 30, "the send to finish")
    dispatcher.close()
    engine.dispose()


def test_failed_jobs_are_listed_shown_and_resent(config: Path, tmp_path: Path) -> None:
    job_id = _failed_job(config, tmp_path)
    listed = json.loads(run("jobs", "list", "--failed", "--config", str(config), "--json").stdout)
    assert [job["id"] for job in listed] == [job_id]
    assert "does not exist" in listed[0]["last_error"]
    table = run("jobs", "list", "--failed", "--config", str(config))
    assert job_id[:8] in table.stdout

    shown = json.loads(run("jobs", "show", job_id[:8], "--config", str(config), "--json").stdout)
    assert shown["state"] == "failed"
    assert [a["outcome"] for a in shown["attempt_log"]] == ["unreachable"]
    assert "does not exist" in shown["attempt_log"][0]["error"]

    (tmp_path / "outbox").mkdir()
    retried = run("jobs", "retry", job_id[:8], "--config", str(config))
    assert retried.returncode == 0, retried.stderr
    busy = run("jobs", "retry", job_id, "--config", str(config))
    assert busy.returncode == 1
    assert "queued" in " ".join(busy.stderr.split())
    _deliver_pending(config)
    shown = json.loads(run("jobs", "show", job_id, "--config", str(config), "--json").stdout)
    assert shown["state"] == "succeeded"
    assert shown["deliveries"] == {"out": {"sent": 2}}
    assert (tmp_path / "outbox" / job_id / ".complete").exists()


def test_jobs_errors_are_clear(config: Path) -> None:
    unknown = run("jobs", "show", "feedbeef", "--config", str(config))
    assert unknown.returncode == 2
    assert "no job 'feedbeef'" in " ".join(unknown.stderr.split())
    bad_state = run("jobs", "list", "--state", "done", "--config", str(config))
    assert bad_state.returncode == 2
    assert "unknown state" in bad_state.stderr
    empty = run("jobs", "list", "--config", str(config))
    assert "No jobs" in empty.stdout


def test_cancel_a_queued_job(config: Path, tmp_path: Path) -> None:
    job_id = _failed_job(config, tmp_path)
    assert run("jobs", "retry", job_id, "--config", str(config)).returncode == 0
    cancelled = run("jobs", "cancel", job_id[:8], "--config", str(config))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    shown = json.loads(run("jobs", "show", job_id, "--config", str(config), "--json").stdout)
    assert shown["state"] == "cancelled"
    again = run("jobs", "cancel", job_id, "--config", str(config))
    assert again.returncode == 1
    assert "already cancelled" in " ".join(again.stderr.split())
    logs = run("jobs", "logs", job_id, "--config", str(config))
    assert "no module runs" in logs.stdout
