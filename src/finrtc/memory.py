"""Give freed heap memory back to the operating system after bursts of closed calls.

Each peer connection allocates native memory (DTLS, SRTP, codec contexts) that is freed only
when the cycle collector reclaims the closed connection, and that glibc's malloc then keeps in
its arenas: after a burst of 200 abandoned offers an idle process stayed ~30 MB above its
baseline although nothing was referenced. Once a burst of room closes is over, a collection and
`malloc_trim` return those pages, off the event loop and at most once per MIN_TRIM_INTERVAL_S
(a full collection holds the GIL for up to a few hundred ms on a busy server).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# A trim waits until rooms stop closing for this long (their peers finish releasing memory
# asynchronously), but never longer than MAX_TRIM_WAIT_S after the first close of a burst.
TRIM_QUIET_S = 2.0
MAX_TRIM_WAIT_S = 10.0
MIN_TRIM_INTERVAL_S = 20.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


class HeapTrimmer:
    def __init__(self) -> None:
        self._pending: asyncio.TimerHandle | None = None
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        self._burst_started = 0.0
        self._last_trim = -MIN_TRIM_INTERVAL_S

    def release_soon(self) -> None:
        """Trim once this burst of closes is over (debounced, off the event loop)."""
        if _MALLOC_TRIM is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._pending is not None and self._pending_loop is loop:
            if now - self._burst_started >= MAX_TRIM_WAIT_S - TRIM_QUIET_S:
                return
            self._pending.cancel()
        else:
            # (A trim still pending on another, finished loop never runs: start anew.)
            self._burst_started = now
        self._pending_loop = loop
        delay = max(TRIM_QUIET_S, self._last_trim + MIN_TRIM_INTERVAL_S - now)
        self._pending = loop.call_later(delay, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending = None
        self._last_trim = loop.time()
        future = loop.run_in_executor(None, _trim)
        future.add_done_callback(_log_failure)


def _trim() -> None:
    # Closed peer connections sit in reference cycles (aiortc's transports and their tasks):
    # their native memory is freed only when the cycle collector runs, which an idle server may
    # not do for a long time. Collect first, then hand the freed pages back.
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("malloc_trim failed: %s", future.exception())


HEAP = HeapTrimmer()
