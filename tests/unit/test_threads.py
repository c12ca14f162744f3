"""Native thread names, as `top -H` and the benchmark's per-thread CPU accounting see them."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from finrtc.threads import (
    NATIVE_NAME_BYTES,
    background_thread_initializer,
    lower_thread_priority,
    name_native_thread,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread names")


def native_name_of(run: threading.Thread) -> str:
    names: list[str] = []
    done = threading.Event()

    def body() -> None:
        run.run()
        names.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())
        done.set()

    thread = threading.Thread(target=body, name=run.name)
    thread.start()
    thread.join(10)
    assert done.is_set()
    return names[0]


def test_a_thread_gets_its_python_name_truncated_to_the_kernel_limit() -> None:
    worker = threading.Thread(target=name_native_thread, name="finrtc-media_3")
    assert native_name_of(worker) == "finrtc-media_3"
    long_named = threading.Thread(target=lambda: name_native_thread("finrtc-archive-writer-1"))
    assert native_name_of(long_named) == "finrtc-archive-writer-1"[:NATIVE_NAME_BYTES]


def test_without_the_call_the_thread_keeps_the_process_name() -> None:
    process_name = Path("/proc/self/comm").read_text().strip()
    assert native_name_of(threading.Thread(target=lambda: None, name="finrtc-media_9")) == process_name


def niceness_of(thread_id: int) -> int:
    # On Linux a thread id names that thread alone.
    return os.getpriority(os.PRIO_PROCESS, thread_id)


def test_background_threads_run_at_lower_priority_and_their_children_inherit_it() -> None:
    seen: dict[str, int] = {}

    def child() -> None:
        seen["child"] = niceness_of(threading.get_native_id())

    def background() -> None:
        background_thread_initializer("finrtc-bg-test", nice=7)
        seen["self"] = niceness_of(threading.get_native_id())
        lower_thread_priority(3)  # never raises the priority back
        seen["after_lower_request"] = niceness_of(threading.get_native_id())
        inner = threading.Thread(target=child)
        inner.start()
        inner.join(10)

    base = niceness_of(threading.get_native_id())
    thread = threading.Thread(target=background)
    thread.start()
    thread.join(10)
    expected = max(base, 7)
    assert seen == {"self": expected, "after_lower_request": expected, "child": expected}
    # Only that thread: the caller keeps its priority.
    assert niceness_of(threading.get_native_id()) == base
