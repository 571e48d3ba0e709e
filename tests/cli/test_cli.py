"""The `mercury` command as users run it: init, serve, send, status, and help everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

from mercury.cli import app
from tests.conftest import MercuryProcess
from tests.helpers import free_port, make_small_images, port_open, wait_for

EXE = shutil.which("mercury", path=str(Path(sys.executable).parent)) or "mercury"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def all_commands() -> list[list[str]]:
    """Every command path of the CLI, groups included."""
    paths: list[list[str]] = [[]]
    root = typer.main.get_command(app)

    def walk(command: object, prefix: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                paths.append([*prefix, name])
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "mercury")
def test_every_command_has_help(path: list[str]) -> None:
    result = run(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert "--help" in result.stdout


def test_the_foundation_commands_exist() -> None:
    commands = {" ".join(p) for p in all_commands()}
    assert {"init", "serve", "import-mercure", "config check", "send", "status"} <= commands


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[MercuryProcess]:
    """`mercury init` then `mercury serve` on its demo configuration, as the README says."""
    port = free_port()
    web_port = free_port()
    result = run("init", str(tmp_path / "demo"), "--port", str(port), "--web-port", str(web_port))
    assert result.returncode == 0, result.stderr
    config = tmp_path / "demo" / "mercury.yaml"
    assert config.exists()
    process = MercuryProcess(config, port)
    process.start()
    yield process
    process.stop()


def test_init_serve_send_status(demo: MercuryProcess, tmp_path: Path) -> None:
    files = make_small_images(tmp_path / "images", 30, per_series=10)
    sent = run(
        "send", str(tmp_path / "images"), "--to", f"127.0.0.1:{demo.port}", "--aec", "MERCURY"
    )
    assert sent.returncode == 0, sent.stderr + sent.stdout

    status = run("status", "--config", str(demo.config), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["totals"]["instances"] == 30
    assert report["totals"]["series"] == 3
    import pydicom

    expected: dict[str, int] = {}
    for path in files:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
        expected[uid] = expected.get(uid, 0) + 1
    assert {s["series_uid"]: s["instances"] for s in report["series"]} == expected

    table = run("status", "--config", str(demo.config))
    assert table.returncode == 0, table.stderr
    assert "30 instances" in table.stdout
    # Rich may fold a long UID across lines; the series count and modality show plainly.
    assert "3 series" in table.stdout

    log = demo.log.read_text()
    assert f":{demo.port}" in log, "serve must say where its DICOM port is"

    # The demo routes every series to its outbox folder, one job folder per series.
    outbox = demo.config.parent / "outbox"
    done = wait_for(lambda: len(list(outbox.glob("*/.complete"))) == 3 and 3, 60, "3 jobs")
    assert done == 3
    assert len(list(outbox.glob("*/*.dcm"))) == 30


def test_serve_prints_where_it_listens(demo: MercuryProcess) -> None:
    text = demo.log.read_text()
    assert "DICOM receiver on" in text
    assert str(demo.port) in text


def test_the_demo_has_a_web_admin(demo: MercuryProcess) -> None:
    """init makes the first web user and says its password; serve says where the web is."""
    import httpx
    import yaml

    secret = demo.config.parent / "initial-admin-password"
    password = secret.read_text().strip()
    assert len(password) >= 12
    assert secret.stat().st_mode & 0o077 == 0
    web_port = yaml.safe_load(demo.config.read_text())["web"]["port"]
    log = wait_for(lambda: "web interface" in demo.log.read_text() and demo.log.read_text(), 30)
    assert f":{web_port}" in log
    base = f"http://127.0.0.1:{web_port}"
    wait_for(lambda: port_open(web_port), 30, "the web port")
    with httpx.Client(base_url=base) as client:
        answer = client.post("/api/login", json={"name": "admin", "password": password})
        assert answer.status_code == 200, answer.text
        assert client.get("/api/me").json()["role"] == "admin"
        refused = client.post("/api/login", json={"name": "admin", "password": "wrong-" + password})
        assert refused.status_code == 401


def test_init_again_keeps_the_users(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "d")).returncode == 0
    first = (tmp_path / "d" / "initial-admin-password").read_text()
    again = run("init", str(tmp_path / "d"), "--force")
    assert again.returncode == 0, again.stderr
    assert "first web user" not in again.stdout
    assert (tmp_path / "d" / "initial-admin-password").read_text() == first


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "d")).returncode == 0
    again = run("init", str(tmp_path / "d"))
    assert again.returncode != 0
    assert "--force" in again.stderr
    assert run("init", str(tmp_path / "d"), "--force").returncode == 0


def test_serve_refuses_a_bad_configuration(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("receiver:\n  port: 99999\nstorage:\n  spool: s\n")
    result = run("serve", "--config", str(config), timeout=60)
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "receiver.port" in result.stderr


def test_serve_without_a_configuration_says_how_to_make_one(tmp_path: Path) -> None:
    result = run("serve", "--config", str(tmp_path / "missing.yaml"), timeout=60)
    assert result.returncode == 2
    assert "mercury init" in result.stderr


def test_serve_only_an_unknown_service(demo: MercuryProcess) -> None:
    result = run("serve", "--config", str(demo.config), "--only", "nonsense", timeout=60)
    assert result.returncode == 2
    assert "receiver" in result.stderr  # names the services that exist


def test_serve_on_a_busy_port_says_so(demo: MercuryProcess) -> None:
    result = run("serve", "--config", str(demo.config), "--only", "receiver", timeout=60)
    assert result.returncode == 2
    assert "receiver.port" in result.stderr


def test_status_on_an_empty_index(tmp_path: Path) -> None:
    assert run("init", str(tmp_path / "d")).returncode == 0
    result = run("status", "--config", str(tmp_path / "d" / "mercury.yaml"))
    assert result.returncode == 0, result.stderr
    assert "Nothing received yet" in result.stdout
