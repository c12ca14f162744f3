"""Recognizer worker processes: a crashed worker is reported and replaced."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from finrtc.compliance.recognizer import builtin_model
from finrtc.compliance.workers import RecognizerPool
from finrtc.metrics import REGISTRY


@contextmanager
def running_pool(**options: Any) -> Iterator[RecognizerPool]:
    """A started pool of one spotting-only worker (options override), closed afterwards."""
    pool = RecognizerPool(builtin_model(), **{"workers": 1, "transcribe": "off", **options})
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


def test_crashed_worker_is_reported_and_restarted() -> None:
    with running_pool(queue_seconds=2) as pool:
        failures: list[str] = []
        reported = threading.Event()

        def on_failure(reason: str) -> None:
            failures.append(reason)
            reported.set()

        handle = pool.open_stream("room/t1", ["my name is"], lambda result: None,
                                  on_failure=on_failure)
        assert handle.feed(np.zeros(1600, dtype=np.int16).tobytes(), 0.0)
        worker = pool._workers[0].process
        before = REGISTRY.get_sample_value("finrtc_compliance_worker_restarts_total") or 0.0
        os.kill(worker.pid, signal.SIGKILL)  # the worker process this test started
        assert reported.wait(10.0)
        assert "exited" in failures[0]
        after = REGISTRY.get_sample_value("finrtc_compliance_worker_restarts_total") or 0.0
        assert after == before + 1
        deadline = time.monotonic() + 10.0
        while not (pool._workers[0].process is not worker
                   and pool._workers[0].process.is_alive()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The stream was reopened on the new worker and still closes cleanly.
        assert handle.feed(np.zeros(1600, dtype=np.int16).tobytes(), 1.0)
        handle.close()
        assert handle.wait_closed(20.0)


def test_closed_and_broken_streams_never_stall_the_worker() -> None:
    import dataclasses

    model = builtin_model()
    with running_pool(queue_seconds=2) as pool:
        closed = pool.open_stream("room/a", ["my name is"], lambda result: None)
        assert closed.feed(np.zeros(1600, dtype=np.int16).tobytes(), 0.0)
        closed.close()
        assert closed.wait_closed(20.0)
        # A track that outlives its session: feeding is refused at once, nothing is queued.
        started = time.perf_counter()
        assert not closed.feed(np.zeros(1600, dtype=np.int16).tobytes(), 0.1)
        assert time.perf_counter() - started < 0.01

        failures: list[str] = []
        broken_model = dataclasses.replace(model, acoustic_model="/nonexistent/acoustic")
        broken = pool.open_stream("room/b", ["my name is"], lambda result: None,
                                  on_failure=failures.append, model=broken_model)
        for index in range(5):
            broken.feed(np.zeros(1600, dtype=np.int16).tobytes(), index * 0.1)
        # A healthy stream opened afterwards is served promptly.
        results: list[object] = []
        healthy = pool.open_stream("room/c", ["my name is"], results.append)
        healthy.feed(np.zeros(1600, dtype=np.int16).tobytes(), 0.0)
        started = time.perf_counter()
        healthy.close()
        assert healthy.wait_closed(20.0)
        assert time.perf_counter() - started < 8.0
        assert failures and "could not start" in failures[0]


def test_workers_run_at_the_configured_lower_priority() -> None:
    with running_pool(queue_seconds=2, nice=6) as pool:
        handle = pool.open_stream("room/t1", ["my name is"], lambda result: None)
        # The stream's first block is processed once the worker runs its loop (after setup).
        assert handle.feed(np.zeros(1600, dtype=np.int16).tobytes(), 0.0)
        handle.flush()
        assert handle.wait_flushed(30.0)
        expected = max(6, os.getpriority(os.PRIO_PROCESS, 0))
        assert os.getpriority(os.PRIO_PROCESS, pool._workers[0].process.pid) == expected


def test_queue_room_is_counted_per_track() -> None:
    # 1 s of audio per track may wait; one worker serves both tracks.
    with running_pool(queue_seconds=1.0) as pool:
        dropped: dict[str, float] = {"busy": 0.0, "quiet": 0.0}

        def counter(name: str) -> Callable[[float], None]:
            def count(seconds: float) -> None:
                dropped[name] += seconds

            return count

        block = np.zeros(1600, dtype=np.int16).tobytes()
        busy = pool.open_stream("room/busy", ["my name is"], lambda result: None,
                                on_drop=counter("busy"), slowdown=1.0)
        quiet = pool.open_stream("room/quiet", ["my name is"], lambda result: None,
                                 on_drop=counter("quiet"))
        # The busy track floods the worker with 5 s of audio at once: its surplus is dropped...
        accepted = sum(busy.feed(block, index * 0.1) for index in range(50))
        assert 10 <= accepted <= 15 and dropped["busy"] == pytest.approx((50 - accepted) * 0.1)
        # ...while the other track still has its own room, although the worker is behind.
        assert all(quiet.feed(block, index * 0.1) for index in range(8))
        assert dropped["quiet"] == 0.0
        quiet.flush()
        assert quiet.wait_flushed(30.0)
