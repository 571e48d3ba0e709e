"""The processor as a service of `mercury serve`: ticks on a timer in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mercury.process.processor import Processor
from mercury.runtime import Runtime
from mercury.threads import in_thread

log = logging.getLogger("mercury.process")

MAX_TICK_INTERVAL = 0.2


class ProcessorService:
    name = "processor"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.processor = Processor(runtime.engine, runtime.config, runtime.spool)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def describe(self) -> str:
        return self.processor.describe()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        self.processor.wakeup = wake
        self._task = asyncio.create_task(self._loop(), name="mercury-processor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.processor.close)

    async def _loop(self) -> None:
        interval = min(self.runtime.config.timings.dispatcher_scan_interval, MAX_TICK_INTERVAL)
        while True:
            self._wake.clear()
            try:
                await in_thread(self.processor.tick)
            except Exception:
                log.exception("processing tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
