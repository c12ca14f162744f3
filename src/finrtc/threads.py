"""Gives finrtc's threads their names at the operating-system level too.

Python names threads only for itself; `top -H`, `ps -L`, `perf` and `/proc/PID/task/*/comm`
would show every thread under the process name. Named native threads tell an SRE (and the
benchmark harness, which accounts CPU per thread) whether the media workers, face detection, the
archive writer or speech recognition is using the cores.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
