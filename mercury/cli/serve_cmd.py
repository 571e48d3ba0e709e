"""`mercury serve`: run the services."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from mercury.cli.common import CONFIG_OPTION, console, load_or_exit, print_error


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    config: Path = CONFIG_OPTION,
    only: list[str] = typer.Option(
        [],
        "--only",
        help="Run only this service (repeatable), such as receiver, router, processor, "
        "dispatcher or web. Default: all of them.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run mercury: every service in one process, or only the ones named with --only."""
    from mercury.serve import Service
    from mercury.serve import serve as run
    from mercury.store.db import DatabaseError

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = load_or_exit(config)

    def ready(services: list[Service]) -> None:
        for service in services:
            console.print(f"[green]ready[/] {service.describe()}", highlight=False, soft_wrap=True)
        console.print(f"mercury is running with {config}; press Ctrl+C to stop.")

    try:
        asyncio.run(run(cfg, only, on_ready=ready, config_path=config))
    except (ValueError, DatabaseError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    except OSError as exc:
        print_error(
            f"cannot start: {exc}. Is another program using port {cfg.receiver.port} (DICOM) "
            f"or {cfg.web.port} (web)? Change receiver.port or web.port in {config}."
        )
        raise typer.Exit(2) from exc
