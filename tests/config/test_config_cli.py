"""`mercury import-mercure` and `mercury config check`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from mercury.cli import config_cmd, import_cmd
from mercury.config import load_config
from tests.config.support import FULL, MERCURE

Invoke = Callable[..., Result]


@pytest.fixture
def run() -> Invoke:
    """Invoke our two command modules on their own app (other commands are not needed)."""
    app = typer.Typer()
    config_cmd.register(app)
    import_cmd.register(app)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})

    return invoke


def test_import_writes_the_file_and_lists_what_was_left(run: Invoke, tmp_path: Path) -> None:
    out = tmp_path / "etc" / "mercury.yaml"
    result = run("import-mercure", str(MERCURE / "hospital_mercure.json"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "mercure settings not carried over" in result.stdout
    assert "modules.stroke_ai.constraints" in result.stdout
    assert "targets.archive_rsync" in result.stdout
    assert "c2VjcmV0LWJvb2trZWVwZXIta2V5" not in result.stdout  # bookkeeper key masked
    assert (
        f"Imported 12 targets, 10 rules, 3 modules into {out}; 24 fields not carried over."
        in result.stdout
    )
    config = load_config(out)
    assert next(iter(config.rules)) == "ct_stroke"
    assert config.storage.spool == Path("/data/mercure/spool")


def test_import_with_data_folder(
    run: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(
        "import-mercure", str(MERCURE / "default_mercure.json"), "-o", "out.yaml", "--data", "data"
    )
    assert result.exit_code == 0, result.output
    assert "Imported 0 targets, 0 rules, 0 modules into out.yaml" in result.stdout
    config = load_config(tmp_path / "out.yaml")
    assert config.storage.spool == tmp_path / "data" / "spool"
    assert config.storage.database == f"sqlite:///{tmp_path / 'data' / 'mercury.db'}"


def test_import_refuses_to_overwrite_without_force(run: Invoke, tmp_path: Path) -> None:
    out = tmp_path / "mercury.yaml"
    out.write_text("appliance_name: keep-me\n")
    source = str(MERCURE / "default_mercure.json")
    refused = run("import-mercure", source, "--out", str(out))
    assert refused.exit_code == 1
    assert f"{out} already exists; pass --force to overwrite it" in refused.stderr
    assert out.read_text() == "appliance_name: keep-me\n"
    forced = run("import-mercure", source, "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert load_config(out).appliance_name == "master"


def test_import_of_broken_mercure_json(run: Invoke, tmp_path: Path) -> None:
    source = tmp_path / "mercure.json"
    source.write_text('{"targets": {"pacs": {"ip": "h", "port": "x", "aet_target": "P"}}}')
    out = tmp_path / "mercury.yaml"
    result = run("import-mercure", str(source), "--out", str(out))
    assert result.exit_code == 1
    assert f"error: cannot import {source}" in result.stderr
    assert (
        "targets.pacs.port: must be a whole number (got 'x') (line 1, column 42)" in result.stderr
    )
    assert "Fix mercure.json" in result.stderr
    assert not out.exists()


def test_import_of_missing_file(run: Invoke, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = run("import-mercure", str(missing), "--out", str(tmp_path / "o.yaml"))
    assert result.exit_code == 1
    assert f"{missing}: file not found" in result.stderr


def test_import_requires_out(run: Invoke) -> None:
    result = run("import-mercure", str(MERCURE / "default_mercure.json"))
    assert result.exit_code == 2
    assert "--out" in result.output


def test_check_ok(run: Invoke) -> None:
    result = run("config", "check", "--config", str(FULL))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"configuration OK: {FULL}"
    assert "  receiver: port 11113, MERCURY, ROUTER" in lines
    assert "  rules: 3" in lines
    assert (
        "  targets: 9 (dicom: 1, dicomtls: 1, dicomweb: 1, dummy: 1, folder: 1, rsync: 1, s3: 1, "
        "sftp: 1, xnat: 1)"
    ) in lines
    assert any(line.startswith("warning: targets.mirror: rsync targets") for line in lines)


def test_check_reads_the_environment(run: Invoke) -> None:
    result = run("config", "check", env={"MERCURY_CONFIG": str(FULL)})
    assert result.exit_code == 0, result.output


def test_check_reports_every_error(run: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "mercury.yaml"
    path.write_text("receiver: {port: 0}\nrules:\n  r: {target: ghost}\n")
    result = run("config", "check", "-c", str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}: 2 problems",
        "  receiver.port: must be at least 1 (got 0) (line 1, column 18)",
        "  rules.r.target: unknown target 'ghost'; no targets are defined (line 3, column 15)",
        "Fix the keys above (see docs/configuration.md) and run `mercury config check` again.",
    ]
    assert "configuration OK" not in result.stdout


def test_check_missing_file_says_how_to_fix(run: Invoke, tmp_path: Path) -> None:
    result = run("config", "check", "-c", str(tmp_path / "none.yaml"))
    assert result.exit_code == 1
    assert "file not found" in result.stderr
    assert "Pass --config FILE (or set MERCURY_CONFIG)" in result.stderr


def test_check_syntax_error(run: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "mercury.yaml"
    path.write_text("receiver: [\n")
    result = run("config", "check", "-c", str(path))
    assert result.exit_code == 1
    assert "not valid YAML" in result.stderr
    assert "Fix the file at the position shown" in result.stderr


@pytest.mark.parametrize(
    "command", [["import-mercure", "--help"], ["config", "--help"], ["config", "check", "--help"]]
)
def test_help(run: Invoke, command: list[str]) -> None:
    result = run(*command)
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_installed_command(tmp_path: Path) -> None:
    mercury = shutil.which("mercury", path=str(Path(sys.executable).parent))
    assert mercury is not None
    out = tmp_path / "mercury.yaml"
    imported = subprocess.run(
        [
            mercury,
            "import-mercure",
            str(MERCURE / "research_mercure.json"),
            "--out",
            str(out),
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    checked = subprocess.run(
        [mercury, "config", "check", "--config", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"configuration OK: {out}")
