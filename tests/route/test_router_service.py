"""A stopped router service waits for its scan in flight, so a configuration reload never
runs two routers at once (they would route one series twice)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from mercury.config.load import load_config
from mercury.route.service import RouterService
from mercury.runtime import Runtime
from mercury.threads import in_thread
from tests.conftest import write_config
from tests.helpers import free_port


def test_a_cancelled_wait_lets_the_thread_finish_first() -> None:
    release = threading.Event()
    finished = threading.Event()

    def work() -> None:
        release.wait(30)
        finished.set()

    async def scenario() -> None:
        task = asyncio.create_task(in_thread(work))
        await asyncio.sleep(0)  # let the thread start
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done(), "the cancelled task ended while its thread still ran"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()

    asyncio.run(scenario())


def test_stopping_the_router_waits_for_its_scan(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, free_port()))
    runtime = Runtime.open(config)
    running = threading.Semaphore(1)
    in_scan = threading.Event()
    release = threading.Event()
    overlaps: list[str] = []

    def scan() -> None:
        # Stands in for Router.scan: a real scan is too short to be caught in flight.
        if not running.acquire(blocking=False):
            overlaps.append("two scans at once")
            return
        try:
            in_scan.set()
            release.wait(30)
        finally:
            running.release()

    async def scenario() -> None:
        old = RouterService(runtime)
        old.router.scan = scan  # type: ignore[method-assign]
        await old.start()
        assert await asyncio.to_thread(in_scan.wait, 30)
        stopping = asyncio.create_task(old.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done(), "stop() returned while the scan was still running"
        release.set()
        await stopping
        new = RouterService(runtime)
        new.router.scan = scan  # type: ignore[method-assign]
        in_scan.clear()
        release.clear()
        await new.start()
        assert await asyncio.to_thread(in_scan.wait, 30)
        release.set()
        await new.stop()

    try:
        asyncio.run(scenario())
    finally:
        runtime.close()
    assert overlaps == []
