"""The notifier as a service of `mercury serve`: follows the journal (reception and
error notifications) and delivers notify jobs, on a timer in worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mercury.notify.follower import JournalFollower
from mercury.notify.notifier import Notifier
from mercury.route.ruleset import RuleSet
from mercury.runtime import Runtime
from mercury.threads import in_thread

log = logging.getLogger("mercury.notify")

TICK_INTERVAL = 0.25


class NotifierService:
    name = "notifier"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.follower = JournalFollower(runtime.engine, RuleSet.from_config(runtime.config))
        self.notifier = Notifier(runtime.engine, runtime.config)
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return self.notifier.describe()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="mercury-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.notifier.close)

    async def _loop(self) -> None:
        while True:
            try:
                await in_thread(self.follower.poll)
            except Exception:
                log.exception("following the journal failed; retrying")
            try:
                await in_thread(self.notifier.tick)
            except Exception:
                log.exception("notify tick failed; retrying")
            await asyncio.sleep(TICK_INTERVAL)
