"""`mercury serve` with the web service, as users run it: a configuration applied through
the REST API restarts the routing services, and the next series is routed by the new rule;
`mercury serve --only web` runs the web service alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from mercury.store.db import make_engine, upgrade
from mercury.store.models import utcnow
from mercury.web import accounts
from tests.conftest import MercuryProcess
from tests.helpers import free_port, make_ct_series, port_open, storescu, wait_for

EXE = shutil.which("mercury", path=str(Path(sys.executable).parent)) or "mercury"


def write(folder: Path, dicom_port: int, web_port: int, rules: str = "  {}\n") -> Path:
    (folder / "archive").mkdir(exist_ok=True)
    config = folder / "mercury.yaml"
    config.write_text(
        f"""\
receiver:
  host: 127.0.0.1
  port: {dicom_port}
  ae_titles: [MERCURY]
storage:
  spool: {folder / "spool"}
  database: sqlite:///{folder / "mercury.db"}
  reserve_mb: 0
web:
  port: {web_port}
targets:
  archive:
    target_type: folder
    folder: {folder / "archive"}
rules:
{rules}""",
        encoding="utf-8",
    )
    return config


def admin_token(config: Path) -> dict[str, str]:
    """The first admin and a token, as `mercury users add` / `mercury tokens create` do."""
    engine = make_engine(f"sqlite:///{config.parent / 'mercury.db'}")
    upgrade(engine)
    with Session(engine) as session, session.begin():
        accounts.create_user(session, "ada", "a long password", "admin", now=utcnow())
        token = accounts.create_token(session, "ada", now=utcnow(), created_by="test").token
    engine.dispose()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[MercuryProcess, httpx.Client, Path]]:
    dicom_port, web_port = free_port(), free_port()
    config = write(tmp_path, dicom_port, web_port)
    headers = admin_token(config)
    process = MercuryProcess(config, dicom_port)
    process.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{web_port}", headers=headers, timeout=30)
    try:
        wait_for(lambda: port_open(web_port), 30, "the web interface")
        yield process, client, config
    finally:
        client.close()
        process.stop()


def events(client: httpx.Client, kind: str) -> list[dict[str, Any]]:
    answer = client.get("/api/events", params={"kind": kind})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_applied_rule_routes_the_next_series(
    served: tuple[MercuryProcess, httpx.Client, Path], tmp_path: Path
) -> None:
    process, client, config = served
    health = client.get("/api/health").json()
    assert health["services"]["router"] == "running"
    assert health["services"]["web"] == "running"
    text = config.read_text().replace(
        "rules:\n  {}\n",
        "rules:\n"
        "  ct_archive:\n"
        "    rule: \"tags.Modality == 'CT'\"\n"
        "    action: route\n"
        "    target: archive\n"
        "    series_complete_on: [association_end]\n",
    )
    applied = client.post("/api/config", json={"text": text, "comment": "archive CT"})
    assert applied.status_code == 200, applied.text
    assert "router" in applied.json()["reloads"]
    assert config.read_text() == text
    reloaded = wait_for(lambda: events(client, "config.reloaded"), 30, "the services to restart")
    assert reloaded[0]["details"]["version"] == applied.json()["version"]
    assert "router" in reloaded[0]["details"]["services"]
    assert client.get("/api/health").json()["services"]["router"] == "running"

    files = make_ct_series(tmp_path / "images", 3, rows=32, columns=32)
    sent = storescu(files, process.port)
    assert sent.returncode == 0, sent.stderr
    archive = tmp_path / "archive"
    wait_for(
        lambda: len(list(archive.rglob("*.dcm"))) == 3,
        60,
        "the series in the archive folder",
    )
    routed = client.get("/api/series", params={"rule": "ct_archive"}).json()
    assert routed["total"] == 1
    [series] = routed["items"]
    stages = {
        s["stage"]: s["state"]
        for s in client.get(f"/api/series/{series['series_uid']}").json()["timeline"]["stages"]
    }
    wait_for(
        lambda: (
            client.get(f"/api/series/{series['series_uid']}").json()["timeline"]["stages"][-1][
                "state"
            ]
            == "done"
        ),
        30,
        "the delivery to be recorded",
    )
    assert stages["routed"] == "done"
    [change] = events(client, "config.changed")
    assert change["details"]["user"] == "ada"


def test_only_web(tmp_path: Path) -> None:
    web_port = free_port()
    config = write(tmp_path, free_port(), web_port)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [EXE, "serve", "--config", str(config), "--only", "web"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(web_port) or process.poll() is not None, 60, "the web port")
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        health = httpx.get(f"http://127.0.0.1:{web_port}/api/health", timeout=30).json()
        assert health["services"] == {"web": "running"}
        docs = httpx.get(f"http://127.0.0.1:{web_port}/api/docs", timeout=30)
        assert docs.status_code == 200
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert (
        f"ready web interface and REST API on http://127.0.0.1:{web_port} (OpenAPI at /api/docs)"
        in output
    )
    assert process.returncode == 0, output
