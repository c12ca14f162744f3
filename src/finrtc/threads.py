"""Gives finrtc's threads their names, and background work its priority, at the OS level.

Python names threads only for itself; `top -H`, `ps -L`, `perf` and `/proc/PID/task/*/comm`
would show every thread under the process name. Named native threads tell an SRE (and the
benchmark harness, which accounts CPU per thread) whether the media workers, face detection, the
archive writer or speech recognition is using the cores.

Work that may lag - speech recognition, face detection - runs at a lower scheduling priority
than the media path: when the cores are busy, the kernel gives them to the threads that carry
frames, and the background work catches up from its bounded queue (or drops with an alert)
instead of adding latency to every call on the server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

_PR_SET_NAME = 15
# The kernel keeps 15 bytes of a thread name.
NATIVE_NAME_BYTES = 15
_libc: ctypes.CDLL | None = None


def name_native_thread(name: str | None = None) -> None:
    """Set the calling thread's OS name (default: its Python name). Best effort, Linux only."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    text = (name if name is not None else threading.current_thread().name).encode(errors="replace")
    # A failure only costs the label; never the thread.
    _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text[:NATIVE_NAME_BYTES]), 0, 0, 0)


# Niceness of background threads (0 is the media path; 19 the lowest priority).
BACKGROUND_NICE = 10


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> None:
    """Raise the calling thread's niceness to `nice` (never lowers it; no privilege needed).

    On Linux niceness is per thread, and threads started afterwards by this one inherit it.
    """
    if not sys.platform.startswith("linux") or nice <= 0:
        return
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, thread_id, min(nice, 19))
    except OSError:
        # A sandbox may forbid it: background work then competes at normal priority.
        pass


def background_thread_initializer(name: str | None = None, nice: int = BACKGROUND_NICE) -> None:
    """For executors of background work: the OS name plus the lower priority."""
    name_native_thread(name)
    lower_thread_priority(nice)
