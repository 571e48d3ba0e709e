"""`mercury config ...`: check the configuration file before a service trips over it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from mercury.config.errors import ConfigError
from mercury.config.load import load_config
from mercury.config.models import MercuryConfig, mask_password
from mercury.config.targets import UNSUPPORTED_TARGET_TYPES

config_app = typer.Typer(
    name="config",
    help="Check the configuration file.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="MERCURY_CONFIG",
        help="Configuration file (YAML, or JSON if it ends in .json).",
    ),
]


def _summary(config: MercuryConfig) -> list[str]:
    receiver = config.receiver
    titles = ", ".join(receiver.ae_titles) if receiver.ae_titles else "any AE title"
    types = Counter(target.target_type for target in config.targets.values())
    by_type = ", ".join(f"{kind}: {count}" for kind, count in sorted(types.items()))
    disabled = sum(rule.disabled for rule in config.rules.values())
    return [
        f"  appliance: {config.appliance_name}",
        f"  receiver: port {receiver.port}, {titles}",
        f"  targets: {len(config.targets)}" + (f" ({by_type})" if by_type else ""),
        f"  modules: {len(config.modules)}",
        f"  rules: {len(config.rules)}" + (f" ({disabled} disabled)" if disabled else ""),
        f"  spool: {config.storage.spool}",
        f"  database: {mask_password(config.storage.database)}",
    ]


def _warnings(config: MercuryConfig) -> list[str]:
    notes: list[str] = []
    for name, target in config.targets.items():
        if target.target_type in UNSUPPORTED_TARGET_TYPES:
            notes.append(
                f"targets.{name}: {target.target_type} targets are not yet supported by "
                "mercury's dispatcher; its jobs wait until it is"
            )
    if not any(not rule.disabled for rule in config.rules.values()):
        notes.append("rules: no enabled rule, so every received series is discarded")
    return notes


def _hint(error: ConfigError, path: Path) -> str:
    """What to do next, depending on what kind of problem was found."""
    if not path.exists():
        return (
            "Pass --config FILE (or set MERCURY_CONFIG), or create a configuration with "
            "`mercury init DIR` or `mercury import-mercure`."
        )
    if any(issue.location for issue in error.issues):
        return (
            "Fix the keys above (see docs/configuration.md) and run `mercury config check` again."
        )
    return "Fix the file at the position shown and run `mercury config check` again."


CHECK_HELP = (
    "Validate the configuration file and report every problem with its location.\n\n"
    "Prints 'configuration OK' and a summary, or every error; exits with status 1 on errors."
)


@config_app.command("check", help=CHECK_HELP)
def check(config: ConfigOption = Path("mercury.yaml")) -> None:
    """Validate the configuration file (see CHECK_HELP)."""
    try:
        loaded = load_config(config)
    except ConfigError as error:
        typer.echo(error.report(), err=True)
        typer.echo(_hint(error, config), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"configuration OK: {config}")
    for line in _summary(loaded):
        typer.echo(line)
    for note in _warnings(loaded):
        typer.echo(f"warning: {note}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `mercury` command."""
    app.add_typer(config_app, name="config")
