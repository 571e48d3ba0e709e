"""The configuration cycle: read (secrets masked), validate, apply (the file on disk really
changes, atomically; an invalid one changes nothing), history, diff, restore."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from mercury.store.models import EventRow
from mercury.store.web_models import ConfigVersionRow
from mercury.web.app import create_app
from tests.web.conftest import TestClient
from tests.web.support import Account, sqlite_only

NEW_RULE = """\
  mr2:
    rule: "tags.Modality == 'MR'"
    action: route
    target: pacs
"""
SECRET_TARGET = """\
  web:
    target_type: dicomweb
    url: https://pacs.example.org/dicom-web
    access_token: s3cr3t-t0ken
"""


def apply(client: TestClient, admin: Account, text: str, comment: str = "") -> Any:
    return client.post(
        "/api/config", json={"text": text, "comment": comment}, headers=admin.headers
    )


def versions(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(ConfigVersionRow)) or 0)


def test_the_file_as_found_is_version_1(
    client: TestClient, viewer: Account, config_path: Path, engine: Engine
) -> None:
    page = client.get("/api/config/versions", headers=viewer.headers).json()
    assert page["total"] == 1
    [first] = page["items"]
    assert (first["version"], first["author"], first["source"]) == (1, "file", "file")
    current = client.get("/api/config", headers=viewer.headers).json()
    assert current["version"] == 1
    assert current["path"] == str(config_path)
    assert set(current["config"]["rules"]) == {"ct", "mr_study"}
    create_app(config_path, engine=engine)  # another start with the same file: no new version
    assert versions(engine) == 1


def test_secrets_are_masked(
    client: TestClient, admin: Account, viewer: Account, config_path: Path, db_url: str
) -> None:
    text = config_path.read_text().replace("targets:\n", "targets:\n" + SECRET_TARGET)
    assert apply(client, admin, text).status_code == 200
    shown = client.get("/api/config", headers=viewer.headers)
    assert "s3cr3t-t0ken" not in shown.text
    assert shown.json()["config"]["targets"]["web"]["access_token"] == "**********"
    if "@" in db_url:  # PostgreSQL with a password in the URL
        assert "postgres:mercury@" not in shown.text
        assert ":***@" in shown.json()["config"]["storage"]["database"]
    # the versions hold the file as written: admins only
    assert client.get("/api/config/versions/2", headers=viewer.headers).status_code == 403
    assert "s3cr3t-t0ken" in client.get("/api/config/versions/2", headers=admin.headers).text


def test_validate(client: TestClient, viewer: Account, config_path: Path) -> None:
    good = config_path.read_text() + NEW_RULE
    answer = client.post("/api/config/validate", json={"text": good}, headers=viewer.headers)
    assert answer.json() == {
        "valid": True,
        "errors": [],
        "restart_required": [],
        "reloads": ["router", "processor", "dispatcher", "cleaner", "notifier"],
    }
    bad = config_path.read_text() + NEW_RULE.replace("target: pacs", "target: nowhere")
    bad = bad.replace("port: 11112", "port: 70000")
    answer = client.post("/api/config/validate", json={"text": bad}, headers=viewer.headers)
    body = answer.json()
    assert answer.status_code == 200
    assert body["valid"] is False
    by_location = {error["location"]: error for error in body["errors"]}
    assert set(by_location) == {"receiver.port", "rules.mr2.target"}
    assert by_location["receiver.port"]["line"] == 3
    assert (
        by_location["rules.mr2.target"]["line"] == bad.splitlines().index("    target: nowhere") + 1
    )
    assert "nowhere" in by_location["rules.mr2.target"]["message"]
    syntax = client.post(
        "/api/config/validate",
        content="rules: [unclosed",
        headers={**viewer.headers, "Content-Type": "application/yaml"},
    ).json()
    assert syntax["valid"] is False
    assert "not valid YAML" in syntax["errors"][0]["message"]
    assert syntax["errors"][0]["line"] == 1
    port = config_path.read_text().replace("port: 11112", "port: 11113")
    moved = client.post("/api/config/validate", json={"text": port}, headers=viewer.headers)
    assert [note["section"] for note in moved.json()["restart_required"]] == ["receiver"]
    assert moved.json()["reloads"] == []


def test_apply_history_diff_restore(
    client: TestClient, admin: Account, config_path: Path, engine: Engine
) -> None:
    original = config_path.read_text()
    answer = apply(client, admin, original + NEW_RULE, "route MR to the PACS as well")
    assert answer.status_code == 200, answer.text
    applied = answer.json()
    assert applied["version"] == 2
    assert applied["changed"] is True
    assert applied["sections"] == ["rules"]
    assert applied["reloads"] == ["router", "processor", "dispatcher", "cleaner", "notifier"]
    assert config_path.read_text() == original + NEW_RULE
    assert list(config_path.parent.glob(".mercury.yaml.*")) == []  # no temp file left
    current = client.get("/api/config", headers=admin.headers).json()
    assert "mr2" in current["config"]["rules"]
    assert current["version"] == 2
    history = client.get("/api/config/versions", headers=admin.headers).json()
    assert [(v["version"], v["author"]) for v in history["items"]] == [(2, "ada"), (1, "file")]
    assert history["items"][0]["comment"] == "route MR to the PACS as well"
    diff = client.get("/api/config/versions/2/diff", headers=admin.headers).json()
    assert diff["against"] == 1
    assert diff["diff"].startswith("--- version 1\n+++ version 2\n")
    assert "+  mr2:\n" in diff["diff"]
    assert diff["diff"].count("\n+") == NEW_RULE.count("\n") + 1
    same = apply(client, admin, original + NEW_RULE)
    assert same.json() == {**same.json(), "version": 2, "changed": False}
    restored = client.post(
        "/api/config/versions/1/restore", json={"comment": "undo"}, headers=admin.headers
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["version"] == 3
    assert config_path.read_text() == original
    version = client.get("/api/config/versions/3", headers=admin.headers).json()
    assert (version["source"], version["restored_from"], version["comment"]) == (
        "restore",
        1,
        "undo",
    )
    assert version["text"] == original
    back = client.get("/api/config/versions/3/diff?against=2", headers=admin.headers).json()
    assert "-  mr2:\n" in back["diff"]
    empty = client.get("/api/config/versions/1/diff", headers=admin.headers).json()
    assert empty["against"] == 0
    with Session(engine) as session:
        changes = list(
            session.scalars(
                select(EventRow).where(EventRow.kind == "config.changed").order_by(EventRow.id)
            )
        )
    assert [(e.stage, e.details["user"], e.details["version"]) for e in changes] == [
        ("web", "ada", 2),
        ("web", "ada", 3),
    ]
    assert changes[1].details["restored_from"] == 1
    assert client.get("/api/config/versions/9", headers=admin.headers).status_code == 404
    assert client.post("/api/config/versions/9/restore", headers=admin.headers).status_code == 404


def test_invalid_apply_changes_nothing(
    client: TestClient, admin: Account, config_path: Path, engine: Engine
) -> None:
    before = config_path.read_bytes()
    stat = config_path.stat()
    broken = before.decode() + NEW_RULE.replace("action: route", "action: teleport")
    answer = apply(client, admin, broken)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"] == "urn:mercury:problem:invalid-configuration"
    [error] = problem["errors"]
    assert error["parameter"] == "rules.mr2.action"
    assert error["line"] == broken.splitlines().index("    action: teleport") + 1
    assert config_path.read_bytes() == before
    assert config_path.stat().st_mtime_ns == stat.st_mtime_ns
    assert versions(engine) == 1
    with Session(engine) as session:
        assert (
            session.scalars(select(EventRow).where(EventRow.kind == "config.changed")).all() == []
        )


def test_restart_notes(client: TestClient, admin: Account, config_path: Path) -> None:
    text = config_path.read_text().replace("port: 11112", "port: 11113")
    text = text.replace("web:\n", "web:\n  port: 8099\n")
    applied = apply(client, admin, text).json()
    assert {note["section"] for note in applied["restart_required"]} == {"receiver", "web"}
    assert applied["reloads"] == []
    assert set(applied["sections"]) == {"receiver", "web"}


def test_a_hand_edit_is_recorded_before_the_next_version(
    client: TestClient, admin: Account, config_path: Path
) -> None:
    edited = config_path.read_text().replace(
        "series_complete_trigger: 60", "series_complete_trigger: 30"
    )
    config_path.write_text(edited)
    answer = apply(client, admin, edited + NEW_RULE)
    assert answer.json()["version"] == 3
    history = client.get("/api/config/versions", headers=admin.headers).json()["items"]
    assert [(v["version"], v["source"]) for v in history] == [(3, "api"), (2, "file"), (1, "file")]
    diff = client.get("/api/config/versions/2/diff", headers=admin.headers).json()["diff"]
    assert "+  series_complete_trigger: 30" in diff


@sqlite_only
def test_body_formats(client: TestClient, admin: Account, config_path: Path) -> None:
    text = config_path.read_text() + NEW_RULE
    raw = client.post(
        "/api/config?comment=raw%20yaml",
        content=text.encode(),
        headers={**admin.headers, "Content-Type": "application/yaml; charset=utf-8"},
    )
    assert raw.status_code == 200, raw.text
    history = client.get("/api/config/versions", headers=admin.headers).json()["items"]
    assert history[0]["comment"] == "raw yaml"
    form = client.post(
        "/api/config", content=b"a=b", headers={**admin.headers, "Content-Type": "text/html"}
    )
    assert form.status_code == 415
    not_json = client.post(
        "/api/config",
        content=b"{text:",
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert not_json.json()["errors"][0]["parameter"] == "body"
    missing = client.post("/api/config", json={"comment": "no text"}, headers=admin.headers)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["parameter"] == "text"
    latin = client.post(
        "/api/config",
        content="rules: {}\n# caf\xe9\n".encode("latin-1"),
        headers={**admin.headers, "Content-Type": "text/plain"},
    )
    assert latin.status_code == 422
    nul = client.post("/api/config/validate", json={"text": "a: 1\x00"}, headers=admin.headers)
    assert nul.status_code == 422
    assert nul.json()["errors"][0]["parameter"] == "text"


@sqlite_only
def test_a_json_configuration_file(tmp_path: Path, db_url: str, app: FastAPI) -> None:
    path = tmp_path / "json" / "mercury.json"
    path.parent.mkdir()
    data = {"storage": {"database": db_url, "spool": str(tmp_path / "spool")}}
    path.write_text(json.dumps(data))
    json_app = create_app(path, engine=app.state.mercury.engine)
    client = TestClient(json_app)
    from tests.web.support import add_user

    admin = add_user(app.state.mercury.engine, "jason", "admin")
    yaml_text = "storage:\n  database: x\n"
    answer = client.post("/api/config/validate", json={"text": yaml_text}, headers=admin.headers)
    assert answer.json()["valid"] is False
    assert "not valid JSON" in answer.json()["errors"][0]["message"]
    data["appliance_name"] = "json box"
    applied = apply(client, admin, json.dumps(data, indent=2))
    assert applied.status_code == 200
    assert json.loads(path.read_text())["appliance_name"] == "json box"


@sqlite_only
def test_a_file_that_cannot_be_written_records_nothing(
    client: TestClient,
    admin: Account,
    config_path: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(*_args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mercury.web.configfile.atomic_write_text", full)
    before = config_path.read_text()
    answer = apply(client, admin, before + NEW_RULE)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert "No space left on device" in answer.json()["detail"]
    assert config_path.read_text() == before
    assert versions(engine) == 1
    with Session(engine) as session:
        assert (
            session.scalars(select(EventRow).where(EventRow.kind == "config.changed")).all() == []
        )
