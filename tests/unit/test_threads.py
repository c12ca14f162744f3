"""Native thread names, as `top -H` and the benchmark's per-thread CPU accounting see them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from finrtc.threads import NATIVE_NAME_BYTES, name_native_thread

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
