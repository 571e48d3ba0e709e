"""`mercury clean` as users run it: --dry-run shows and removes nothing, a run removes what
is due and says so, --emergency never touches pending data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from mercury.store.db import make_engine, upgrade
from mercury.store.models import utcnow
from tests.clean.support import World, config_data
from tests.cli.test_cli import run as run_process
from tests.route.support import Clock

DONE, WAITING = "1.2.7.1", "1.2.7.2"


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
def installed(tmp_path: Path) -> tuple[World, Path]:
    """An index and spool where one series finished a day ago and one waits to be sent."""
    database = f"sqlite:///{tmp_path / 'index.db'}"
    engine = make_engine(database)
    upgrade(engine)
    clock = Clock()
    clock.now = utcnow() - timedelta(days=1)
    world = World(engine, clock, tmp_path / "spool")
    world.receive(DONE, 3)
    world.receive(WAITING, 2)
    world.route()
    world.finish(DONE)
    world.close()
    engine.dispose()
    config = tmp_path / "mercury.yaml"
    config.write_text(json.dumps(config_data(tmp_path / "spool", database)), encoding="utf-8")
    return world, config


def test_dry_run_then_clean(installed: tuple[World, Path]) -> None:
    world, config = installed
    shown = run("clean", "--config", str(config), "--dry-run", "--json")
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)
    assert plan["dry_run"] is True
    assert [(s["series_uid"], s["outcome"], s["reason"]) for s in plan["series"]] == [
        (DONE, "success", "retention")
    ]
    assert len(world.files(DONE)) == 3

    table = run("clean", "--config", str(config), "--dry-run")
    assert table.returncode == 0, table.stderr
    assert "Would remove 1 series, 3 images" in table.stdout

    done = run_process("clean", "--config", str(config))  # as a user runs it
    assert done.returncode == 0, done.stderr
    assert "Removed 1 series, 3 images" in done.stdout
    assert world.files(DONE) == []
    assert len(world.files(WAITING)) == 2
    assert [e.series_uid for e in world.events("series.cleaned")] == [DONE]

    again = run("clean", "--config", str(config), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cleaned"] == []


def test_emergency_never_removes_pending_data(installed: tuple[World, Path]) -> None:
    world, config = installed
    done = run("clean", "--config", str(config), "--emergency", "--below", "0", "--json")
    report = json.loads(done.stdout)
    assert [c["series_uid"] for c in report["cleaned"]] == [DONE]
    assert report["cleaned"][0]["reason"] == "emergency"
    assert report["emergency"]["relieved"] is False
    assert done.returncode == 1  # the disk is still above 0 %: only pending data is left
    assert "never removed" in done.stderr
    assert len(world.files(WAITING)) == 2


def test_a_missing_configuration_is_explained(tmp_path: Path) -> None:
    result = run("clean", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "not found" in " ".join(result.stderr.split())
