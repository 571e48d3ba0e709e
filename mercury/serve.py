"""Run mercury's services in one process, or any subset of them (``--only``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from mercury.config.models import MercuryConfig
from mercury.runtime import Runtime

log = logging.getLogger("mercury")


class Service(Protocol):
    name: str

    def describe(self) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def service_factories() -> dict[str, Callable[[Runtime], Service]]:
    """Every service mercury can run, in start order."""
    from mercury.clean.service import CleanerService
    from mercury.dispatch.service import DispatcherService
    from mercury.notify.service import NotifierService
    from mercury.process.service import ProcessorService
    from mercury.receive.service import ReceiverService
    from mercury.route.service import RouterService
    from mercury.web.service import WebService

    return {
        "receiver": ReceiverService,
        "router": RouterService,
        "processor": ProcessorService,
        "dispatcher": DispatcherService,
        "cleaner": CleanerService,
        "notifier": NotifierService,
        "web": WebService,
    }


async def serve(
    config: MercuryConfig,
    only: Sequence[str] = (),
    on_ready: Callable[[list[Service]], None] | None = None,
    stop: asyncio.Event | None = None,
    config_path: Path | None = None,
) -> None:
    """Start the services, run until SIGTERM/SIGINT (or ``stop``), then stop them in order.

    With ``config_path``, a configuration applied through the web layer (a new version in
    the index) restarts the services that read it (see mercury.web.changes)."""
    factories = service_factories()
    unknown = [name for name in only if name not in factories]
    if unknown:
        raise ValueError(f"unknown service {unknown[0]!r}; choose from {', '.join(factories)}")
    names = [name for name in factories if not only or name in only]
    runtime = await asyncio.to_thread(Runtime.open, config)
    runtime.config_path = config_path
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    watcher: asyncio.Task[None] | None = None
    try:
        for name in names:
            service = factories[name](runtime)
            await service.start()
            started.append(service)
            runtime.services[name] = "running"
        if config_path is not None:
            watcher = asyncio.create_task(watch_config(runtime, started, factories, config_path))
        if on_ready:
            on_ready(started)
        await stop.wait()
        log.info("stopping")
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for service in reversed(started):
            await service.stop()
            runtime.services[service.name] = "stopped"
        await asyncio.to_thread(runtime.close)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


CONFIG_POLL_INTERVAL = 1.0


async def watch_config(
    runtime: Runtime,
    started: list[Service],
    factories: dict[str, Callable[[Runtime], Service]],
    path: Path,
    interval: float = CONFIG_POLL_INTERVAL,
) -> None:
    """Poll the index for a new configuration version; when it changes what the background
    services read, load the file and restart those of them in ``started`` (the receiver and
    the web service keep running; see mercury.web.changes)."""
    from mercury.config.load import ConfigError, load_config
    from mercury.web.changes import RELOADED_SERVICES, needs_reload
    from mercury.web.versions import latest_number

    if not any(service.name in RELOADED_SERVICES for service in started):
        return
    seen = await asyncio.to_thread(latest_number, runtime.engine)
    while True:
        await asyncio.sleep(interval)
        try:
            newest = await asyncio.to_thread(latest_number, runtime.engine)
            if newest == seen:
                continue
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            seen = newest
            log.error(
                "configuration version %d does not load; keeping the running one: %s", newest, exc
            )
            continue
        except Exception:
            log.exception("cannot check for a new configuration version; retrying")
            continue
        seen = newest
        if not needs_reload(runtime.config, config):
            continue
        runtime = dataclasses.replace(runtime, config=config)
        names = [s.name for s in started if s.name in RELOADED_SERVICES]
        for index in reversed(range(len(started))):
            if started[index].name in names:
                runtime.services[started[index].name] = "restarting"
                await started.pop(index).stop()
        for name in names:
            try:
                service = factories[name](runtime)
                await service.start()
            except Exception:
                log.exception("%s cannot start with configuration version %d", name, newest)
                runtime.services[name] = "failed"
                continue
            started.append(service)
            runtime.services[name] = "running"
        log.info("configuration version %d in use: restarted %s", newest, ", ".join(names))
        await asyncio.to_thread(_journal_reload, runtime, newest, names)


def _journal_reload(runtime: Runtime, version: int, names: list[str]) -> None:
    from sqlalchemy.orm import Session

    from mercury.store.journal import record

    with Session(runtime.engine) as session, session.begin():
        record(
            session,
            stage="serve",
            kind="config.reloaded",
            message=f"configuration version {version} in use: restarted {', '.join(names)}",
            details={"version": version, "services": names},
        )
