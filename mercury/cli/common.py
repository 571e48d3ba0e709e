"""Helpers shared by the CLI commands: loading the configuration with a friendly failure."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from mercury.config.models import MercuryConfig

console = Console()
err_console = Console(stderr=True)

CONFIG_OPTION = typer.Option(
    Path("mercury.yaml"),
    "--config",
    "-c",
    help="Configuration file (YAML or JSON).",
    envvar="MERCURY_CONFIG",
)


def print_error(message: str) -> None:
    """An error line on stderr; the message is literal text (paths and DICOM values may hold
    square brackets that must not be read as markup)."""
    err_console.print(Text("error: ", style="bold red") + Text(message), highlight=False)


def load_or_exit(path: Path) -> MercuryConfig:
    """Load and validate the configuration, or print every error and exit 2."""
    from mercury.config.load import ConfigError, load_config

    if not path.exists():
        err_console.print(
            f"[red]error:[/] configuration file {path} not found. "
            "Create one with [bold]mercury init DIR[/] or pass --config FILE."
        )
        raise typer.Exit(2)
    try:
        return load_config(path)
    except ConfigError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
