"""Run mercury's services in one process, or any subset of them (``--only``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
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

    return {
        "receiver": ReceiverService,
        "router": RouterService,
        "processor": ProcessorService,
        "dispatcher": DispatcherService,
        "cleaner": CleanerService,
        "notifier": NotifierService,
    }


async def serve(
    config: MercuryConfig,
    only: Sequence[str] = (),
    on_ready: Callable[[list[Service]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start the services, run until SIGTERM/SIGINT (or ``stop``), then stop them in order."""
    factories = service_factories()
    unknown = [name for name in only if name not in factories]
    if unknown:
        raise ValueError(f"unknown service {unknown[0]!r}; choose from {', '.join(factories)}")
    names = [name for name in factories if not only or name in only]
    runtime = await asyncio.to_thread(Runtime.open, config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    try:
        for name in names:
            service = factories[name](runtime)
            await service.start()
            started.append(service)
        if on_ready:
            on_ready(started)
        await stop.wait()
        log.info("stopping")
    finally:
        for service in reversed(started):
            await service.stop()
        await asyncio.to_thread(runtime.close)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
