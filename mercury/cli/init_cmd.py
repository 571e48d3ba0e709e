"""`mercury init`: a working demo configuration and its data folders."""

from __future__ import annotations

from pathlib import Path

import typer

from mercury.cli.common import console, err_console

DEMO_CONFIG = """\
# mercury demo configuration. Reference: docs/configuration.md
appliance_name: mercury-demo

receiver:
  host: 0.0.0.0
  port: {port}
  # Called AE titles we answer to (an empty list accepts any).
  ae_titles: [MERCURY]
  # Leave empty to accept every caller, or list {{ae_title, address}} entries.
  allowed_callers: []
  accept_compressed: true

storage:
  spool: spool                    # image files, relative to this file
  database: sqlite:///mercury.db  # the embedded index; postgresql://... to scale out
  reserve_mb: 512                 # refuse new images below this much free disk

timings:
  series_complete_trigger: 60
  study_complete_trigger: 900

targets:
  # Every complete series is copied here, one folder per job, finished by a `.complete`
  # file. Replace it with your PACS: {{target_type: dicom, ip: ..., port: ..., aet_target: ...}}
  demo_outbox:
    target_type: folder
    folder: outbox

rules:
  everything_to_outbox:
    rule: "True"
    action: route
    target: demo_outbox
    # A series is complete when its sender ends the association, or after the quiet period.
    series_complete_on: [association_end, quiet]
"""


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    directory: Path = typer.Argument(..., help="Folder for the configuration and data."),
    port: int = typer.Option(11112, "--port", "-p", min=1, max=65535, help="DICOM port."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing mercury.yaml."),
) -> None:
    """Write a working demo configuration to DIR/mercury.yaml and create its data folders."""
    from mercury.config.load import load_config
    from mercury.store.db import make_engine, upgrade
    from mercury.store.spool import Spool

    target = directory / "mercury.yaml"
    if target.exists() and not force:
        err_console.print(
            f"[red]error:[/] {target} already exists; use --force to overwrite it, "
            "or start it with [bold]mercury serve --config "
            f"{target}[/]"
        )
        raise typer.Exit(1)
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(DEMO_CONFIG.format(port=port), encoding="utf-8")
    config = load_config(target)
    Spool(config.storage.spool).prepare()
    (directory / "outbox").mkdir(exist_ok=True)
    engine = make_engine(config.storage.database)
    upgrade(engine)
    engine.dispose()
    console.print(f"[green]wrote[/] {target}")
    console.print(f"spool: {config.storage.spool}\nindex: {config.storage.database}")
    console.print(f"start it with: [bold]mercury serve --config {target}[/]")
