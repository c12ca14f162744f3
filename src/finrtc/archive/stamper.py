"""Asks a Time-Stamp Authority for a token over every sealed record, without ever holding media.

One `TimestampService` per server owns a thread with its own event loop, one aiohttp session and
one bounded queue; each recorded session gets a `SessionStamps`, the recorder's seal observer.
The archive writer thread only hands `(record name, digest)` over (`call_soon_threadsafe`), so a
slow or dead TSA never reaches media or the server's event loop.

A request that fails (connection refused, timeout, an answer that does not check against the
configured TSA certificate) is retried with exponential back-off until it succeeds; meanwhile
newer records wait in the queue and are stamped late, in order, when the TSA is back. The first
failure marks the session: a `timestamping_degraded` alert (sealed into the chain by the next
record, and a room event when the session belongs to a room), then `timestamping_restored` with
the number of late stamps. The final record says whether stamping was degraded and which
records still had no token. On close a session waits `close_wait_s` for its stamps, then gives up
on the rest (verify reports them missing).

Tokens are stored beside the records (`timestamps/<record>.tst`, write-once, retention-locked)
through the archive storage, so local folders and S3 Object Lock both hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from finrtc.archive import archive_metrics, layout
from finrtc.archive.settings import TimestampingConfig
from finrtc.archive.storage import Storage
from finrtc.archive.timestamping import (
    TimestampError,
    build_request,
    check_token,
    load_tsa_certificates,
    new_nonce,
    token_from_response,
    token_name,
)
from finrtc.errors import ArchiveError, ConfigError
from finrtc.threads import name_native_thread

log = logging.getLogger(__name__)

# notify(event_type, data, severity): how a session's stamping trouble is made visible.
Notify = Callable[[str, dict[str, Any], str], None]
FIRST_RETRY_S = 0.25
_ABANDONED = "no token before the session's close wait ended"
# Recent per-token costs kept for diagnostics and the benchmark.
COST_SAMPLES = 8192


@dataclass
class _Job:
    stamps: SessionStamps
    name: str
    digest: str
    queued: float = field(default_factory=time.monotonic)
    attempts: int = 0
    # Sealed while the TSA was failing: its token can only come late.
    in_outage: bool = False


@dataclass
class StampCost:
    """One successful token: wall time of the round trip, stamper-thread CPU, attempts."""

    name: str
    wall_s: float
    cpu_s: float
    attempts: int
    waited_s: float


class TimestampService:
    def __init__(self, config: TimestampingConfig, trusted: list[x509.Certificate]) -> None:
        if not config.enabled or not config.url:
            raise ConfigError("archive.timestamping is not enabled")
        self.config = config
        self.url = config.url
        self.trusted = trusted
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.costs: deque[StampCost] = deque(maxlen=COST_SAMPLES)
        self.failed_attempts = 0

    @classmethod
    def from_config(cls, config: TimestampingConfig, resolve: Callable[[str], Path]
                    ) -> TimestampService:
        if not config.ca_file:
            raise ConfigError("archive.timestamping.ca_file is not set")
        try:
            trusted = load_tsa_certificates(resolve(config.ca_file))
        except ArchiveError as error:
            raise ConfigError(f"archive.timestamping.ca_file: {error}") from None
        return cls(config, trusted)

    # ------------------------------------------------------------------------ lifetime

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="finrtc-timestamps", daemon=True)
        self._thread.start()
        self._ready.wait()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the stamper thread (sessions should be closed first; what is left is lost)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._stopping = True
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake)
        thread.join(timeout_s)
        self._thread = None

    def _wake(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _run(self) -> None:
        name_native_thread("finrtc-tsa")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._queue = asyncio.Queue(maxsize=self.config.queue_records)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            self._task = asyncio.current_task()
            self._ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._work(http)
        # Whatever is still queued will never be stamped.
        assert self._queue is not None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            job.stamps.abandon(job)

    # ------------------------------------------------------------------------ sessions

    def session(self, storage: Storage, prefix: str, *, notify: Notify,
                retain_until: dt.datetime | None = None) -> SessionStamps:
        return SessionStamps(self, storage, prefix, notify, retain_until)

    def submit(self, job: _Job) -> None:
        """From any thread: queue a record for stamping (never blocks)."""
        loop = self._loop
        if loop is None or self._stopping:
            job.stamps.drop(job, "the timestamp service is not running")
            return
        try:
            loop.call_soon_threadsafe(self._offer, job)
        except RuntimeError:
            job.stamps.drop(job, "the timestamp service has stopped")

    def _offer(self, job: _Job) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            job.stamps.drop(job, f"stamp queue full ({self.config.queue_records} records)")

    # ------------------------------------------------------------------------ worker

    async def _work(self, http: aiohttp.ClientSession) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            delay = FIRST_RETRY_S
            while not job.stamps.abandoned:
                started = time.perf_counter()
                cpu = time.thread_time()
                job.attempts += 1
                try:
                    token = await self._request(http, job)
                    await asyncio.to_thread(job.stamps.store, job.name, token)
                except (aiohttp.ClientError, TimeoutError, OSError, TimestampError) as error:
                    self.failed_attempts += 1
                    archive_metrics.TIMESTAMPS.labels(outcome="failed").inc()
                    job.stamps.failed(job, _reason(error))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.config.retry_max_s)
                    continue
                except ArchiveError as error:
                    # Storage refused the token: keep retrying (disk full passes), visibly.
                    job.stamps.failed(job, f"token not stored: {error}")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.config.retry_max_s)
                    continue
                except Exception as error:
                    # A bug must not end stamping for every session: this record stays
                    # visible as failing, the others go on.
                    log.exception("time-stamping %s of %s failed", job.name, job.stamps.prefix)
                    job.stamps.failed(job, _reason(error))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.config.retry_max_s)
                    continue
                wall = time.perf_counter() - started
                archive_metrics.TIMESTAMP_SECONDS.observe(wall)
                self.costs.append(StampCost(job.name, wall, time.thread_time() - cpu,
                                            job.attempts, time.monotonic() - job.queued))
                job.stamps.stamped(job)
                break

    async def _request(self, http: aiohttp.ClientSession, job: _Job) -> bytes:
        digest = bytes.fromhex(job.digest)
        nonce = new_nonce()
        query = build_request(digest, self.config.policy_oid, nonce)
        async with http.post(self.url, data=query,
                             headers={"Content-Type": "application/timestamp-query"}) as response:
            body = await response.read()
            if response.status != 200:
                raise TimestampError("tsa_http_error",
                                     f"the TSA answered HTTP {response.status}")
        token = token_from_response(body, digest, nonce, self.config.policy_oid)
        # A token that would not verify later is no token: check it against the configured cert.
        check_token(token, digest, self.trusted, self.config.policy_oid)
        return token


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, TimestampError) else text


class SessionStamps:
    """The seal observer of one recorded session (thread-safe)."""

    def __init__(self, service: TimestampService, storage: Storage, prefix: str, notify: Notify,
                 retain_until: dt.datetime | None) -> None:
        self.service = service
        self.storage = storage
        self.prefix = prefix
        self.notify = notify
        self.retain_until = retain_until
        self.config = service.config
        self._lock = threading.Lock()
        self._pending: dict[str, _Job] = {}
        self._idle = threading.Event()
        self._idle.set()
        self.stamped_names: list[str] = []
        self.late: dict[str, int] = {}
        self.missing: dict[str, str] = {}
        self.degraded = False
        self._outage_started: float | None = None
        self.outages = 0
        self.abandoned = False

    # --------------------------------------------------------------- recorder side (cheap)

    def extra_fields(self, record_type: str) -> dict[str, Any]:
        if record_type == "manifest":
            return {"timestamping": {
                "tsa": self.config.url, "policy_oid": self.config.policy_oid,
                "mode": self.config.mode,
                "every_n": self.config.every_n if self.config.mode == "every_n" else 1,
            }}
        if record_type == "final":
            with self._lock:
                return {"timestamping": {
                    "degraded": self.degraded or bool(self.missing),
                    "outages": self.outages,
                    "stamped_late": sorted(self.late),
                    "pending_at_final": sorted(set(self._pending) | set(self.missing)),
                }}
        return {}

    def wants(self, name: str) -> bool:
        if self.config.mode == "every_segment" or not name.startswith(layout.RECORDS_DIR + "/"):
            return True
        index = int(name[len(layout.RECORDS_DIR) + 1 : -len(".json")])
        return index % self.config.every_n == self.config.every_n - 1

    def sealed(self, name: str, digest: str) -> None:
        if self.abandoned or not self.wants(name):
            return
        job = _Job(self, name, digest)
        with self._lock:
            job.in_outage = self._outage_started is not None
            self._pending[name] = job
            self._idle.clear()
        archive_metrics.TIMESTAMPS_PENDING.inc()
        self.service.submit(job)

    # --------------------------------------------------------------- stamper thread side

    def store(self, name: str, token: bytes) -> None:
        key = layout.join(self.prefix, token_name(name))
        try:
            self.storage.put(key, token, retain_until=self.retain_until)
        except ArchiveError:
            # Written by an earlier attempt whose answer was lost: the stored token stands.
            if not self.storage.exists(key):
                raise

    def _settle(self, job: _Job) -> bool:
        with self._lock:
            if self._pending.pop(job.name, None) is None:
                return False
            if not self._pending:
                self._idle.set()
        archive_metrics.TIMESTAMPS_PENDING.dec()
        return True

    def stamped(self, job: _Job) -> None:
        if not self._settle(job):
            return
        late = job.attempts > 1 or job.in_outage
        archive_metrics.TIMESTAMPS.labels(outcome="stamped_late" if late else "stamped").inc()
        restored = None
        with self._lock:
            self.stamped_names.append(job.name)
            if late:
                self.late[job.name] = job.attempts
            if self._outage_started is not None:
                restored = time.monotonic() - self._outage_started
                self._outage_started = None
        if restored is not None:
            with self._lock:
                waiting = len(self._pending)
            log.warning("TSA reachable again for %s after %.1fs", self.prefix, restored)
            self.notify("timestamping_restored",
                        {"tsa": self.config.url, "outage_s": round(restored, 3),
                         "late_records": len(self.late), "waiting": waiting}, "warning")

    def failed(self, job: _Job, reason: str) -> None:
        first = False
        with self._lock:
            if self._outage_started is None:
                self._outage_started = time.monotonic()
                self.outages += 1
                self.degraded = True
                first = True
                # Everything already waiting is stamped late too.
                for waiting in self._pending.values():
                    waiting.in_outage = True
        if first:
            log.error("time-stamping of %s degraded: %s", self.prefix, reason)
            self.notify("timestamping_degraded",
                        {"tsa": self.config.url, "record": job.name, "reason": reason}, "alert")

    def drop(self, job: _Job, reason: str) -> None:
        if not self._settle(job):
            return
        archive_metrics.TIMESTAMPS.labels(outcome="dropped").inc()
        with self._lock:
            first = all(why == _ABANDONED for why in self.missing.values())
            self.missing[job.name] = reason
            self.degraded = True
        if first:  # one alert per session, not one per record (the final record lists them)
            self.notify("timestamping_degraded",
                        {"tsa": self.config.url, "record": job.name, "reason": reason},
                        "alert")

    def abandon(self, job: _Job) -> None:
        if self._settle(job):
            archive_metrics.TIMESTAMPS.labels(outcome="abandoned").inc()
            with self._lock:
                self.missing[job.name] = _ABANDONED

    # --------------------------------------------------------------- close

    @property
    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)

    def wait_sync(self, timeout_s: float | None = None) -> list[str]:
        """Wait (bounded) for this session's stamps; returns the records left without one."""
        self._idle.wait(self.config.close_wait_s if timeout_s is None else timeout_s)
        with self._lock:
            left = list(self._pending.values())
            self.abandoned = bool(left)
        for job in left:
            self.abandon(job)
        if left:
            log.error("%s: %d record(s) left without a time-stamp token: %s", self.prefix,
                      len(left), ", ".join(job.name for job in left))
        return [job.name for job in left]

    async def wait(self, timeout_s: float | None = None) -> list[str]:
        return await asyncio.to_thread(self.wait_sync, timeout_s)


def recorder_notify(recorder: Any) -> Notify:
    """Notify by sealing the event into the recorder's next record (no room around it)."""

    def notify(event_type: str, data: dict[str, Any], severity: str) -> None:
        at = recorder.last_sealed_media_time
        recorder.record_event(event_type, data, at if at is not None else 0.0, severity)

    return notify


def attach(service: TimestampService, recorder: Any, notify: Notify | None = None
           ) -> SessionStamps:
    """Make `service` stamp every record of `recorder` (before `recorder.start()`)."""
    retain_until = dt.datetime.now(dt.UTC) + dt.timedelta(days=int(recorder.retention_days))
    stamps = service.session(recorder.storage, recorder.prefix,
                             notify=notify or recorder_notify(recorder), retain_until=retain_until)
    recorder.seal_observer = stamps
    return stamps
