"""`mercury init`: a working demo configuration and its data folders."""

from __future__ import annotations

import secrets
from pathlib import Path

import typer
from sqlalchemy import Engine

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

web:
  host: 0.0.0.0                   # the web interface and REST API; 127.0.0.1 keeps it local
  port: {web_port}

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


ADMIN_PASSWORD_FILE = "initial-admin-password"  # noqa: S105 (a file name)


def _first_admin(engine: Engine, directory: Path) -> str | None:
    """An admin account for a new index, so the web interface can be used at once; none when
    the index already has users (a re-initialised folder keeps its accounts)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import operator_name
    from mercury.store.models import utcnow
    from mercury.store.web_models import UserRow
    from mercury.web.accounts import create_user
    from mercury.web.audit import journal

    password = secrets.token_urlsafe(12)
    with Session(engine) as session, session.begin():
        if session.scalar(select(func.count()).select_from(UserRow)):
            return None
        create_user(session, "admin", password, "admin", now=utcnow())
        journal(
            session,
            operator_name(),
            "user.created",
            "user admin (admin) added by mercury init",
            via="cli",
            name="admin",
            role="admin",
        )
    secret = directory / ADMIN_PASSWORD_FILE
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    return password


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    directory: Path = typer.Argument(..., help="Folder for the configuration and data."),
    port: int = typer.Option(11112, "--port", "-p", min=1, max=65535, help="DICOM port."),
    web_port: int = typer.Option(
        8080, "--web-port", min=1, max=65535, help="Port of the web interface and REST API."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing mercury.yaml."),
) -> None:
    """Write a working demo configuration to DIR/mercury.yaml, create its data folders and
    the first web user (admin, with a random password printed once and kept in
    DIR/initial-admin-password until you change it)."""
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
    target.write_text(DEMO_CONFIG.format(port=port, web_port=web_port), encoding="utf-8")
    config = load_config(target)
    Spool(config.storage.spool).prepare()
    (directory / "outbox").mkdir(exist_ok=True)
    engine = make_engine(config.storage.database)
    upgrade(engine)
    password = _first_admin(engine, directory)
    engine.dispose()
    console.print(f"[green]wrote[/] {target}")
    console.print(f"spool: {config.storage.spool}\nindex: {config.storage.database}")
    console.print(f"web interface: http://<this host>:{web_port}/")
    if password is not None:
        console.print(
            f"first web user: [bold]admin[/], password [bold]{password}[/] "
            f"(also in {directory / ADMIN_PASSWORD_FILE}; change it on the Account page)",
            highlight=False,
        )
    console.print(f"start it with: [bold]mercury serve --config {target}[/]")
