"""The `mercury` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from mercury import __version__

app = typer.Typer(
    name="mercury",
    help="mercury: a DICOM orchestrator for AI in clinical imaging workflows.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mercury {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """mercury: receive, route, process and dispatch DICOM."""


def _register() -> None:
    from mercury.cli import (
        clean_cmd,
        config_cmd,
        import_cmd,
        init_cmd,
        jobs_cmd,
        rules_cmd,
        send_cmd,
        serve_cmd,
        status_cmd,
        target_cmd,
        users_cmd,
    )

    for module in (
        init_cmd,
        serve_cmd,
        import_cmd,
        config_cmd,
        rules_cmd,
        send_cmd,
        status_cmd,
        target_cmd,
        jobs_cmd,
        clean_cmd,
        users_cmd,
    ):
        module.register(app)


_register()


def main() -> None:
    app()
