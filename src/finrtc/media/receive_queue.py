"""A bounded hand-over of decoded frames from aiortc's decoder thread to the track.

aiortc's decoder thread passes every decoded frame to the event loop with
`run_coroutine_threadsafe(queue.put(frame))` into an unbounded `asyncio.Queue`. When the server
is overloaded the event loop falls behind, and every pending hand-over holds a decoded picture
(460 KB at 640x480): measured, an overloaded server grew to 1.5 GB and 4.5 s of latency instead
of dropping frames. Here `put` stores the frame at once, in the decoder thread, in a short
buffer that drops its oldest entry when full; the coroutine aiortc schedules only wakes the
reader. Memory and added latency stay bounded whatever the event loop's lag, and the drops are
counted (`finrtc_frames_dropped_total`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver

# Decoded frames waiting for the pipeline's reader. Video: about 130 ms (460 KB a frame at 480p);
# a late picture is worth less than a current one. Audio: 5 s (4 KB a frame), so a stall of the
# event loop never cuts speech out of the record; only real overload does, and is counted.
VIDEO_CAPACITY = 4
AUDIO_CAPACITY = 250


class LatestFramesQueue:
    """The subset of `asyncio.Queue` aiortc uses (`put` from its decoder thread, `get` in
    `RemoteStreamTrack.recv`), bounded, keeping the newest frames."""

    def __init__(self, capacity: int, on_drop: Callable[[], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._on_drop = on_drop
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self.dropped = 0

    def _store(self, item: Any) -> None:
        dropped = False
        with self._lock:
            # The end-of-stream marker (None) is never dropped and nothing queues after it.
            if item is not None and len(self._items) >= self._capacity and self._items[0] is not None:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
        if dropped and self._on_drop is not None:
            self._on_drop()

    def put(self, item: Any) -> Any:
        """Store now (any thread); the returned coroutine, run on the loop, wakes the reader."""
        self._store(item)
        return self._wake()

    def put_nowait(self, item: Any) -> None:
        """Loop-side store."""
        self._store(item)
        self._ready.set()

    async def _wake(self) -> None:
        self._ready.set()

    async def get(self) -> Any:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                # Cleared under the lock: a frame stored after this point schedules a wake-up
                # that runs after the clear, so it cannot be missed.
                self._ready.clear()
            await self._ready.wait()

    def qsize(self) -> int:
        with self._lock:
            return len(self._items)

    def empty(self) -> bool:
        return self.qsize() == 0


def install(
    receiver: RTCRtpReceiver, kind: str, on_drop: Callable[[], None] | None = None
) -> LatestFramesQueue:
    """Bound a receiver's decoded-frame queue; call before the receiver starts (first media)."""
    capacity = VIDEO_CAPACITY if kind == "video" else AUDIO_CAPACITY
    bounded = LatestFramesQueue(capacity, on_drop)
    # aiortc hands this attribute to its decoder thread when the receiver starts; there is no
    # public way to choose it.
    receiver.track._queue = bounded  # type: ignore[attr-defined]
    return bounded
