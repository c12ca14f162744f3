"""Async sinks: where hooks hand off I/O or heavy work without waiting.

A sink owns a bounded queue drained by one task on the event loop. `offer_threadsafe` never
blocks the caller: when the queue is full the item is dropped, counted, and the sink's
`on_drop` callback raises the alarm (a compliance sink treats a drop as an interruption).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from finrtc import metrics

T = TypeVar("T")
log = logging.getLogger(__name__)


class AsyncSink(Generic[T]):
    def __init__(
        self,
        name: str,
        handler: Callable[[T], Awaitable[None]],
        maxsize: int,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self._handler = handler
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._on_drop = on_drop
        self.dropped = 0
        self._drop_counter = metrics.SINK_DROPS.labels(sink=name)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.name}")

    def offer(self, item: T) -> bool:
        """From the event loop: enqueue without waiting; False (and counted) when full."""
        try:
            self._queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            self._drop_counter.inc()
            if self._on_drop is not None:
                self._on_drop(self.dropped)
            return False

    def offer_threadsafe(self, item: T) -> None:
        """From a worker thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.offer, item)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._handler(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sink %s failed to handle an item", self.name)
            finally:
                self._queue.task_done()

    async def drain(self, limit_s: float) -> bool:
        """Wait until everything queued so far is handled; False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), limit_s)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
