"""`mercury target`: test a target's connection, see circuit states, hold and release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from mercury.cli.common import CONFIG_OPTION, console, load_or_exit, print_error
from mercury.config.models import MercuryConfig

target_app = typer.Typer(
    help="Dispatch targets: test the connection, show their state, hold and release them.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(target_app, name="target")


def _known(cfg: MercuryConfig, name: str) -> None:
    if name not in cfg.targets:
        known = ", ".join(sorted(cfg.targets)) or "none are configured"
        print_error(f"no target named {name!r} in the configuration (targets: {known})")
        raise typer.Exit(2)


@target_app.command("test")
def probe_target(
    name: str = typer.Argument(..., help="Target name as in the configuration."),
    config: Path = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
) -> None:
    """Test the connection: C-ECHO for DICOM, an HTTP probe for DICOMweb, a write probe
    for folders, S3 and SFTP. Exits 0 when the target answered, 1 when not."""
    from mercury.dispatch.base import SenderContext
    from mercury.dispatch.registry import UnsupportedTarget, create_sender

    cfg = load_or_exit(config)
    _known(cfg, name)
    titles = cfg.receiver.ae_titles
    context = SenderContext(
        default_ae_title=titles[0] if titles else "MERCURY",
        work_folder=cfg.storage.spool / "work",
        extra={"commitment_port": cfg.dispatch.storage_commitment_port},
    )
    try:
        sender = create_sender(name, cfg.targets[name], context)
        description = sender.describe()
        with console.status(f"testing {description} ..."):
            result = sender.probe()
        ok, message, details = result.ok, result.message, result.details
    except UnsupportedTarget as exc:
        ok, message, details, description = False, str(exc), {}, name
    except Exception as exc:
        ok, message, details, description = False, f"cannot build the sender: {exc}", {}, name
    if as_json:
        payload = {"target": name, "ok": ok, "message": message, "details": details}
        typer.echo(json.dumps({**payload, "description": description}, default=str))
    else:
        verdict = Text("OK  ", style="bold green") if ok else Text("FAIL  ", style="bold red")
        console.print(verdict + Text(f"{description}: {message}"), highlight=False)
    raise typer.Exit(0 if ok else 1)


@target_app.command("list")
def list_targets(
    config: Path = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every target with its type, circuit state (up or down) and hold."""
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index
    from mercury.store.target_state import all_states

    cfg = load_or_exit(config)
    with open_index(cfg) as engine, Session(engine) as session:
        states = all_states(session)
        rows: list[dict[str, Any]] = []
        for name, target in cfg.targets.items():
            state = states.get(name)
            rows.append(
                {
                    "name": name,
                    "type": target.target_type,
                    "circuit": state.circuit if state else "closed",
                    "consecutive_failures": state.consecutive_failures if state else 0,
                    "held": bool(state and state.held),
                    "held_by": state.held_by if state else "",
                    "held_reason": state.held_reason if state else "",
                    "last_error": state.last_error if state else None,
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("No targets configured.")
        return
    table = Table("Target", "Type", "State", "Failures", "Note")
    for row in rows:
        label, note = _state_label(row)
        table.add_row(
            Text(row["name"]), row["type"], label, str(row["consecutive_failures"]), Text(note)
        )
    console.print(table)


def _state_label(row: dict[str, Any]) -> tuple[Text, str]:
    if row["held"]:
        return Text("held", style="yellow"), f"by {row['held_by']}: {row['held_reason']}".rstrip(
            ": "
        )
    if row["circuit"] == "open":
        return Text("down", style="red"), str(row["last_error"] or "")
    return Text("up", style="green"), ""


@target_app.command("hold")
def hold_target(
    name: str = typer.Argument(..., help="Target name as in the configuration."),
    config: Path = CONFIG_OPTION,
    reason: str = typer.Option("", "--reason", "-r", help="Why, for the journal and the UI."),
) -> None:
    """Stop sending to a target (PACS maintenance, say). Its jobs wait, keeping their
    retries, until `mercury target release`."""
    _set_hold(name, config, hold=True, reason=reason)


@target_app.command("release")
def release_target(
    name: str = typer.Argument(..., help="Target name as in the configuration."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Resume sending to a held target; its waiting jobs are sent."""
    _set_hold(name, config, hold=False, reason="")


def _set_hold(name: str, config: Path, *, hold: bool, reason: str) -> None:
    from sqlalchemy.orm import Session

    from mercury.cli.index_access import open_index, operator_name
    from mercury.store import target_state
    from mercury.store.models import utcnow

    cfg = load_or_exit(config)
    _known(cfg, name)
    with open_index(cfg) as engine, Session(engine) as session, session.begin():
        if hold:
            changed = target_state.hold(
                session, name, now=utcnow(), by=operator_name(), reason=reason
            )
        else:
            changed = target_state.release(session, name, now=utcnow(), by=operator_name())
    word = "held" if hold else "released"
    if changed:
        console.print(Text(f"Target {name} {word}."))
    else:
        console.print(Text(f"Target {name} was already {'held' if hold else 'not held'}."))
