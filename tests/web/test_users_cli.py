"""`mercury users` and `mercury tokens`: the first admin from the command line, and the
token it prints working against the REST API."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mercury.cli import app as cli
from mercury.store.models import EventRow
from mercury.web.app import create_app
from tests.web.conftest import TestClient
from tests.web.support import PASSWORD, sqlite_only

runner = CliRunner()


def mercury(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(cli, list(args), input=stdin)
    return result.exit_code, result.output


@sqlite_only
def test_first_admin_and_a_token(config_path: Path) -> None:
    config = str(config_path)
    code, _ = mercury(
        "users",
        "add",
        "root",
        "--role",
        "admin",
        "--config",
        config,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 0
    code, out = mercury(
        "users", "add", "root", "--config", config, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 1
    assert "exists already" in out
    code, out = mercury(
        "users", "add", "bad name", "--config", config, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 2
    code, out = mercury(
        "users",
        "add",
        "eve",
        "--role",
        "boss",
        "--config",
        config,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 2
    assert "unknown role" in out
    code, out = mercury(
        "users", "add", "eve", "--config", config, "--password-stdin", stdin="short\n"
    )
    assert code == 2
    assert "at least 8" in out
    code, out = mercury(
        "users", "add", "eve", "--config", config, stdin="a long password\na long password\n"
    )
    assert code == 0, out  # prompted twice
    code, out = mercury("users", "list", "--config", config, "--json")
    assert [(u["name"], u["role"]) for u in json.loads(out)] == [
        ("eve", "viewer"),
        ("root", "admin"),
    ]

    code, out = mercury(
        "tokens", "create", "--user", "root", "--config", config, "-d", "monitoring"
    )
    assert code == 0
    token = out.splitlines()[0]
    assert token.startswith("mercury_")
    app = create_app(config_path)
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/me", headers=headers).json()["role"] == "admin"
    code, out = mercury("tokens", "list", "--config", config, "--json")
    [listed] = json.loads(out)
    assert token not in out
    code, out = mercury("tokens", "revoke", listed["id"], "--config", config)
    assert code == 0
    assert client.get("/api/me", headers=headers).status_code == 401
    assert mercury("tokens", "revoke", "0" * 16, "--config", config)[0] == 2
    assert mercury("tokens", "create", "--user", "ghost", "--config", config)[0] == 1

    code, _ = mercury(
        "users",
        "passwd",
        "root",
        "--config",
        config,
        "--password-stdin",
        stdin="brand new password\n",
    )
    assert code == 0
    login = client.post("/api/login", json={"name": "root", "password": "brand new password"})
    assert login.status_code == 200
    assert (
        mercury("users", "passwd", "ghost", "--config", config, "--password-stdin", stdin=PASSWORD)[
            0
        ]
        == 1
    )
    engine = app.state.mercury.engine
    with Session(engine) as session:
        kinds = list(session.scalars(select(EventRow.kind).where(EventRow.stage == "web")))
        created = session.scalars(select(EventRow).where(EventRow.kind == "user.created")).first()
    engine.dispose()
    assert kinds.count("user.created") == 2
    assert {"token.created", "token.revoked", "user.updated", "user.login"} <= set(kinds)
    assert created is not None
    assert created.details["user"].startswith("cli:")
