"""The router as a service of `mercury serve`: scans on a timer in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mercury.route.router import Router
from mercury.route.ruleset import RuleSet
from mercury.runtime import Runtime
from mercury.threads import in_thread

log = logging.getLogger("mercury.route")

# Association-end completion should answer in well under a second even when mercure's
# router_scan_interval (1 s) is configured.
MAX_SCAN_INTERVAL = 0.25


class RouterService:
    name = "router"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.rules = RuleSet.from_config(runtime.config)
        self.router = Router(runtime.engine, self.rules)
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        count = len(self.rules.specs)
        return f"router with {count} rule{'s' if count != 1 else ''}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="mercury-router")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        interval = min(self.runtime.config.timings.router_scan_interval, MAX_SCAN_INTERVAL)
        while True:
            try:
                await in_thread(self.router.scan)
            except Exception:
                log.exception("routing scan failed; retrying")
            await asyncio.sleep(interval)
