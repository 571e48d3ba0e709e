"""The cleaner as a service of `mercury serve`: one scan every timings.cleaner_scan_interval
in a worker thread. Stopping waits for the series being cleaned, not for the whole scan."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mercury.clean.cleaner import Cleaner
from mercury.runtime import Runtime

log = logging.getLogger("mercury.clean")

# Longest wait for a scan to reach a stopping point when mercury stops.
STOP_GRACE = 60.0


class CleanerService:
    name = "cleaner"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cleaner = Cleaner(runtime.engine, runtime.config, runtime.spool)
        self.interval = runtime.config.timings.cleaner_scan_interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return self.cleaner.describe()

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="mercury-cleaner")

    async def stop(self) -> None:
        self._stop.set()
        self.cleaner.stop()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE)
        if not done:
            log.warning("the cleaner did not stop within %.0f s", STOP_GRACE)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = await asyncio.to_thread(self.cleaner.scan)
            except Exception:
                log.exception("cleaner scan failed; retrying")
            else:
                if report.cleaned:
                    log.info(
                        "cleaned %d series (%d files, %d bytes)",
                        len(report.cleaned),
                        report.files,
                        report.bytes,
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
