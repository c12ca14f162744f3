"""The front listener's media workers: started, watched, restarted when they die, stopped last.

Each worker is `python -m finrtc worker`, its own interpreter (its own GIL, event loop, aiortc
stack, hook threads and recognizer processes) serving the whole API on a Unix socket in a
private folder. The supervisor polls each worker's state (rooms held, participants) for the
router; a worker that exits unexpectedly is restarted with back-off, and only its rooms are lost
(their recordings stay on disk, interrupted, for `finrtc verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from finrtc.cluster import cluster_metrics
from finrtc.cluster.worker import STATE_PATH
from finrtc.errors import FinrtcError

log = logging.getLogger(__name__)

STATE_POLL_S = 0.5
START_TIMEOUT_S = 120.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A worker that ran this long before dying is restarted without the escalating back-off.
STABLE_RUN_S = 60.0
WORKER_BASE_URL = "http://finrtc-worker"


class WorkerStartError(FinrtcError):
    """A media worker process did not start (its log above says why)."""


@dataclass
class WorkerState:
    ready: bool = False
    rooms: frozenset[str] = frozenset()
    remembered: frozenset[str] = frozenset()
    participants: int = 0


@dataclass
class Worker:
    worker_id: int
    socket_path: Path
    process: asyncio.subprocess.Process | None = None
    session: aiohttp.ClientSession | None = None
    state: WorkerState = field(default_factory=WorkerState)
    started_at: float = 0.0
    restarts: int = 0
    # Rooms placed here since the last state report, so back-to-back new rooms spread out.
    pending: dict[str, float] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def usable(self) -> bool:
        return self.alive and self.session is not None and self.state.ready

    def load(self) -> tuple[int, int, int]:
        # Participants are what costs (each is a peer connection and its tracks); a new room
        # counts as the two parties it will have.
        pending = len(self.pending)
        return (self.state.participants + 2 * pending, len(self.state.rooms) + pending, self.worker_id)


class Supervisor:
    def __init__(self, count: int, run_dir: Path, worker_argv: Sequence[str]) -> None:
        self.workers = [Worker(i, run_dir / f"worker-{i}.sock") for i in range(count)]
        self._worker_argv = list(worker_argv)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def _command(self, worker: Worker) -> list[str]:
        return [
            sys.executable, "-m", "finrtc", "worker", "--worker-id", str(worker.worker_id),
            "--socket", str(worker.socket_path), "--parent-pid", str(os.getpid()),
            *self._worker_argv,
        ]

    async def _spawn(self, worker: Worker) -> None:
        worker.socket_path.unlink(missing_ok=True)
        worker.state = WorkerState()
        worker.pending.clear()
        # stdout/stderr are the node's: every worker log line carries its "worker" field.
        worker.process = await asyncio.create_subprocess_exec(*self._command(worker))
        worker.started_at = time.monotonic()
        if worker.session is None:
            worker.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(worker.socket_path)), auto_decompress=False)
        log.info("media worker %d started (pid %d)", worker.worker_id, worker.process.pid)

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(worker) for worker in self.workers))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(worker.state.ready for worker in self.workers):
            for worker in self.workers:
                if not worker.alive:
                    code = worker.process.returncode if worker.process else None
                    raise WorkerStartError(f"media worker {worker.worker_id} exited with code {code} "
                                           "while starting")
                await self._poll(worker)
            if time.monotonic() > deadline:
                raise WorkerStartError(f"media workers not ready within {START_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(self._watch(worker)))
        self._tasks.append(asyncio.create_task(self._poll_forever()))

    async def _poll(self, worker: Worker) -> None:
        if worker.session is None or not worker.alive:
            return
        try:
            async with worker.session.get(
                WORKER_BASE_URL + STATE_PATH, timeout=aiohttp.ClientTimeout(total=2.0)
            ) as response:
                data = json.loads(await response.read())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            # Starting up (no socket yet) or too busy to answer: the last state stands.
            return
        rooms = frozenset(str(name) for name in data.get("rooms", ()))
        remembered = frozenset(str(name) for name in data.get("remembered", ()))
        worker.state = WorkerState(bool(data.get("ready")), rooms, remembered,
                                   int(data.get("participants", 0)))
        for name in [name for name in worker.pending if name in rooms or name in remembered]:
            del worker.pending[name]
        cutoff = time.monotonic() - 30.0
        for name in [name for name, at in worker.pending.items() if at < cutoff]:
            del worker.pending[name]  # placed, but never created (a refused request)
        cluster_metrics.WORKER_ROOMS.labels(media_worker=str(worker.worker_id)).set(len(rooms))
        cluster_metrics.WORKER_PARTICIPANTS.labels(media_worker=str(worker.worker_id)).set(worker.state.participants)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(worker) for worker in self.workers))
            await asyncio.sleep(STATE_POLL_S)

    async def _watch(self, worker: Worker) -> None:
        failures = 0
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            cluster_metrics.WORKER_UP.labels(media_worker=str(worker.worker_id)).set(0)
            if self._stopping:
                return
            ran_s = time.monotonic() - worker.started_at
            failures = 0 if ran_s > STABLE_RUN_S else failures + 1
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            how = f"signal {-code}" if code < 0 else f"code {code}"
            log.error("media worker %d exited (%s) after %.0f s; its %d room(s) are lost; restarting in "
                      "%.1f s", worker.worker_id, how, ran_s, len(worker.state.rooms), delay)
            # Its rooms are gone with it: the router stops sending there, and the next
            # heartbeat releases their names in the directory.
            worker.state = WorkerState()
            worker.pending.clear()
            await asyncio.sleep(delay)
            if self._stopping:
                return
            worker.restarts += 1
            cluster_metrics.WORKER_RESTARTS.labels(media_worker=str(worker.worker_id)).inc()
            try:
                await self._spawn(worker)
            except OSError as error:
                log.error("media worker %d could not be restarted: %s", worker.worker_id, error)
                continue
            cluster_metrics.WORKER_UP.labels(media_worker=str(worker.worker_id)).set(1)

    def least_loaded(self) -> Worker | None:
        usable = [worker for worker in self.workers if worker.usable]
        return min(usable, key=Worker.load) if usable else None

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM every worker (each drains its rooms, sealing recordings), wait, then kill."""
        self._stopping = True
        for worker in self.workers:
            if worker.alive and worker.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        waits = [worker.process.wait() for worker in self.workers if worker.process is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout=timeout_s)
        except TimeoutError:
            for worker in self.workers:
                if worker.alive and worker.process is not None:
                    log.error("media worker %d did not stop within %.0f s; killing it",
                              worker.worker_id, timeout_s)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            await asyncio.gather(*(w.process.wait() for w in self.workers if w.process is not None))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for worker in self.workers:
            if worker.session is not None:
                await worker.session.close()
            worker.socket_path.unlink(missing_ok=True)
