"""`mercury import-mercure`: turn mercure's mercure.json into a mercury configuration file.

It converts what it can, writes the file, and lists every mercure field it did not carry
over with the reason, so switching is a checklist rather than a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mercury.config.errors import ConfigError
from mercury.config.mercure_import import ImportResult, UnmappedField, import_mercure_file
from mercury.config.save import save_config

_MAX_VALUE = 60

HELP = (
    "Convert mercure's mercure.json into a mercury configuration file.\n\n"
    "Targets, rules, modules, timings and receiver settings are carried over; every field "
    "that is not is listed with the reason. Check the result with `mercury config check`."
)


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    if isinstance(value, str) and not value:
        text = '""'
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _unmapped_table(unmapped: list[UnmappedField]) -> Table:
    table = Table(title="mercure settings not carried over", title_justify="left")
    table.add_column("Field", overflow="fold")
    table.add_column("Value", overflow="fold")
    table.add_column("Why", overflow="fold")
    for field in unmapped:
        table.add_row(field.path, _shown(field.value), field.reason)
    return table


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _summary(result: ImportResult, out: Path) -> str:
    config = result.config
    counts = ", ".join(
        (
            _plural(len(config.targets), "target"),
            _plural(len(config.rules), "rule"),
            _plural(len(config.modules), "module"),
        )
    )
    return (
        f"Imported {counts} into {out}; {_plural(len(result.unmapped), 'field')} not carried over."
    )


def import_mercure_command(
    mercure_json: Annotated[
        Path,
        typer.Argument(
            help="mercure's configuration file, usually /opt/mercure/config/mercure.json.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="mercury configuration file to write (YAML).", show_default=False
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Folder for mercury's data: the spool goes to DATA/spool and the database to "
            "DATA/mercury.db. Default: next to mercure's incoming folder.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Convert mercure's mercure.json into a mercury configuration file."""
    if out.exists() and not force:
        typer.echo(
            f"error: {out} already exists; pass --force to overwrite it, or choose another --out",
            err=True,
        )
        raise typer.Exit(1)
    try:
        result = import_mercure_file(mercure_json, data_dir=data.absolute() if data else None)
    except ConfigError as error:
        typer.echo(f"error: cannot import {mercure_json}\n{error.report()}", err=True)
        typer.echo("Fix mercure.json (or a copy of it) and run the import again.", err=True)
        raise typer.Exit(1) from None
    try:
        save_config(result.config, out)
    except OSError as error:
        typer.echo(f"error: cannot write {out}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None
    console = Console(highlight=False)
    if result.unmapped:
        console.print(_unmapped_table(result.unmapped))
    console.print(_summary(result, out), markup=False)
    console.print(f"Next: mercury config check --config {out}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `mercury` command."""
    app.command("import-mercure", help=HELP)(import_mercure_command)
