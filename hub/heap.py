"""Keeps CPython's cycle collector off the gateway's long-lived objects.

Each open stream holds some ninety objects the collector tracks (uvicorn's
protocol and request cycle, the stream's coroutines, its buffers), and they
live as long as the stream. CPython 3.11 collects everything it tracks, all at
once, whenever its long-lived objects have grown by a quarter: with 10,000
streams that pause lasts about half a second, and it comes again and again
while streams open, holding every event back meanwhile.

So once a second the objects that survived so far are frozen (`gc.freeze`):
the collector leaves them alone, and young garbage is still collected as
usual. Every closed connection, a stream's or a publish's, leaves a few
objects in reference cycles (uvicorn's protocol and its request cycle refer
to each other); those that were frozen are reclaimed by one full collection
once as many connections have closed as are open, so the garbage never
outgrows the live heap.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("hub.heap")

FREEZE_SECONDS = 1.0
LEAST_CLOSED = 1000
"""Connections that must close before a full collection is worth its pause."""


class FrozenHeap:
    """An async context manager: freezes survivors every second while it is open."""

    def __init__(self, open_connections: Callable[[], int], closed: Callable[[], int]) -> None:
        self._open = open_connections
        self._closed = closed
        self._closed_at_collection = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FrozenHeap:
        gc.collect()
        gc.freeze()
        self._task = asyncio.create_task(self._keep(), name="frozen heap")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
        gc.unfreeze()

    def step(self) -> None:
        """Reclaim the frozen garbage if it is due, then freeze what survived."""
        closed = self._closed() - self._closed_at_collection
        if closed >= max(LEAST_CLOSED, self._open()):
            started = time.perf_counter()
            gc.unfreeze()
            collected = gc.collect()
            self._closed_at_collection += closed
            log.info(
                "collected %d objects left by %d closed connections in %.0f ms",
                collected,
                closed,
                (time.perf_counter() - started) * 1000,
                extra={"event": "heap_collected"},
            )
        gc.freeze()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(FREEZE_SECONDS)
            self.step()
