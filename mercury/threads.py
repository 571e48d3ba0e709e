"""Blocking work of the background services, in worker threads that are always waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_thread(func: Callable[[], T]) -> T:
    """Run ``func`` in a worker thread, as :func:`asyncio.to_thread` does, except that when
    the awaiting task is cancelled it still waits for ``func`` to return before the
    cancellation goes on. A thread cannot be interrupted, so a service stopped for a
    configuration reload must not leave its last scan running beside its successor's: two
    routers would route one series twice."""
    future = asyncio.get_running_loop().run_in_executor(None, func)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise
