"""Signed webhook delivery: the server tells backends what happened, without ever waiting on them.

`WebhookDispatcher.submit()` is called on the event loop (room events, hook alerts). It builds
the JSON body once, with an event id that stays the same on every retry (the receiver's
idempotency key), and puts it on each matching endpoint's bounded queue; when a queue is full
the event is dropped for that endpoint, counted and logged. A few workers per endpoint POST the
body, signed afresh per attempt (the timestamp moves, the body and id do not), and retry
timeouts, connection errors, 408, 429 and 5xx with exponential backoff and jitter. Other 4xx and
3xx answers are permanent: retrying would not change them.

A backend that is down costs each submit() one `put_nowait` per endpoint, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

from finrtc import __version__, metrics
from finrtc.errors import ConfigError
from finrtc.events import RoomEvent
from finrtc.webhooks.settings import WebhookEndpoint, WebhooksConfig
from finrtc.webhooks.signing import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_header,
)

if TYPE_CHECKING:
    from finrtc.config import LoadedConfig

log = logging.getLogger(__name__)

WEBHOOK_VERSION = 1
MIN_WEBHOOK_SECRET_BYTES = 32
# An overflowing queue is reported at most this often per endpoint (with the count since).
DROP_LOG_INTERVAL_S = 10.0
USER_AGENT = f"finrtc-webhooks/{__version__}"
MAX_RESPONSE_BYTES = 64 * 1024

DELIVERIES = Counter(
    "finrtc_webhook_deliveries_total",
    "Webhook events by final outcome per endpoint: delivered, rejected (permanent 3xx/4xx), "
    "exhausted (all attempts failed), dropped (queue full), abandoned (shutdown).",
    ["endpoint", "outcome"], registry=metrics.REGISTRY,
)
ATTEMPT_FAILURES = Counter(
    "finrtc_webhook_attempt_failures_total",
    "Failed webhook HTTP attempts by reason: timeout, connection, http_3xx, http_4xx, http_429, "
    "http_5xx.",
    ["endpoint", "reason"], registry=metrics.REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "finrtc_webhook_queue_depth", "Webhook events waiting for delivery per endpoint.",
    ["endpoint"], registry=metrics.REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "finrtc_webhook_attempt_seconds", "Duration of one webhook HTTP attempt (any outcome).",
    ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=metrics.REGISTRY,
)

OUTCOMES = ("delivered", "rejected", "exhausted", "dropped", "abandoned")
FAILURE_REASONS = ("timeout", "connection", "http_3xx", "http_4xx", "http_429", "http_5xx")
RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One event as sent: the body bytes are fixed at submit time, so retries are identical."""

    id: str
    type: str
    room: str
    body: bytes


def endpoint_name(endpoint: WebhookEndpoint, position: int) -> str:
    return endpoint.name or f"endpoint{position}"


def resolve_endpoint_secret(
    endpoint: WebhookEndpoint,
    position: int,
    default_secret: str,
    base_dir: Path | None = None,
) -> str:
    """The secret that signs for `endpoint`: inline, from a file, from the environment, or the
    API secret. Errors name the key path so `finrtc config check` can point at it."""
    where = f"webhooks.endpoints[{position}]"
    if endpoint.secret_env is not None:
        value = os.environ.get(endpoint.secret_env, "").strip()
        if not value:
            raise ConfigError(
                f"{where}.secret_env: the environment variable {endpoint.secret_env} is not set "
                "or empty"
            )
    elif endpoint.secret_file is not None:
        path = Path(endpoint.secret_file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(
                f"{where}.secret_file: cannot read {path}: {error.strerror}"
            ) from None
        if not value:
            raise ConfigError(f"{where}.secret_file: {path} is empty")
    elif endpoint.secret is not None:
        value = endpoint.secret
    else:
        return default_secret
    if len(value.encode()) < MIN_WEBHOOK_SECRET_BYTES:
        raise ConfigError(
            f"{where}: the signing secret is {len(value.encode())} bytes long; use at least "
            f"{MIN_WEBHOOK_SECRET_BYTES} random bytes (python3 -c "
            "'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return value


def encode_event(
    event_id: str,
    event_type: str,
    room: str,
    data: Mapping[str, Any],
    *,
    occurred_at: float,
    seq: int | None = None,
    severity: str | None = None,
) -> bytes:
    payload: dict[str, Any] = {
        "id": event_id,
        "type": event_type,
        "room": room,
        "time": round(occurred_at, 3),
        "seq": seq,
        "severity": severity,
        "version": WEBHOOK_VERSION,
        "data": dict(data),
    }
    # default=str: an odd value in `data` must not make the caller (the event loop) raise.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def signed_headers(
    secret: bytes, event: WebhookEvent, attempt: int, timestamp: int
) -> dict[str, str]:
    """The headers of one delivery attempt (docs/webhooks.md lists them)."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secret, timestamp, event.body),
        TIMESTAMP_HEADER: str(timestamp),
        EVENT_ID_HEADER: event.id,
        EVENT_TYPE_HEADER: event.type,
        ATTEMPT_HEADER: str(attempt),
    }


def new_event(
    event_type: str,
    room: str,
    data: Mapping[str, Any],
    *,
    occurred_at: float,
    seq: int | None = None,
    severity: str | None = None,
) -> WebhookEvent:
    event_id = f"evt_{uuid.uuid4().hex}"
    body = encode_event(
        event_id, event_type, room, data, occurred_at=occurred_at, seq=seq, severity=severity
    )
    return WebhookEvent(event_id, event_type, room, body)


class _Endpoint:
    def __init__(
        self, position: int, config: WebhookEndpoint, secret: str, queue_size: int
    ) -> None:
        self.name = endpoint_name(config, position)
        self.url = config.url
        self.secret = secret.encode()
        self.patterns = tuple(config.events)
        self.queue: asyncio.Queue[WebhookEvent] = asyncio.Queue(queue_size)
        self.workers: list[asyncio.Task[None]] = []
        self.in_flight: set[str] = set()
        self.dropped_since_log = 0
        self.last_drop_log = float("-inf")
        self.depth = QUEUE_DEPTH.labels(endpoint=self.name)
        self.timer = ATTEMPT_SECONDS.labels(endpoint=self.name)
        self.outcomes = {o: DELIVERIES.labels(endpoint=self.name, outcome=o) for o in OUTCOMES}
        self.failures = {
            r: ATTEMPT_FAILURES.labels(endpoint=self.name, reason=r) for r in FAILURE_REASONS
        }

    def wants(self, event_type: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(event_type, p) for p in self.patterns)


class _AttemptResult:
    __slots__ = ("ok", "reason", "retry", "retry_after", "status")

    def __init__(
        self,
        ok: bool,
        *,
        reason: str = "",
        retry: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.ok = ok
        self.reason = reason
        self.retry = retry
        self.status = status
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # An HTTP date: rare from backends; the backoff applies instead.
    return seconds if seconds >= 0 else None


class WebhookDispatcher:
    """Delivers signed events to the configured endpoints; see the module docstring."""

    def __init__(
        self,
        config: WebhooksConfig,
        default_secret: str,
        *,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._clock = clock
        self._jitter = jitter
        self._endpoints = [
            _Endpoint(
                position,
                endpoint,
                resolve_endpoint_secret(endpoint, position, default_secret, base_dir),
                config.queue_size,
            )
            for position, endpoint in enumerate(config.endpoints)
        ]
        self._session: aiohttp.ClientSession | None = None
        self._started = False
        self._closed = False

    @classmethod
    def from_loaded(cls, loaded: LoadedConfig) -> WebhookDispatcher:
        """The server's dispatcher: endpoint secrets resolve beside the config file, and the
        API secret signs for endpoints without their own. Raises ConfigError naming the key."""
        base_dir = loaded.source.parent if loaded.source is not None else None
        return cls(loaded.config.webhooks, loaded.api_secret, base_dir=base_dir)

    @property
    def endpoint_names(self) -> list[str]:
        return [endpoint.name for endpoint in self._endpoints]

    def start(self) -> None:
        """Start the workers; call on the running event loop. Events submitted before are kept."""
        if self._started or self._closed or not self._endpoints:
            self._started = True
            return
        self._started = True
        workers = self._config.concurrency * len(self._endpoints)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.timeout_s),
            connector=aiohttp.TCPConnector(limit=workers),
            headers={"User-Agent": USER_AGENT},
            # No proxy or netrc from the environment: webhooks go where the YAML says.
            trust_env=False,
        )
        for endpoint in self._endpoints:
            for index in range(self._config.concurrency):
                endpoint.workers.append(
                    asyncio.create_task(
                        self._work(endpoint), name=f"webhook:{endpoint.name}:{index}"
                    )
                )

    def submit(
        self,
        event_type: str,
        room: str,
        data: Mapping[str, Any],
        *,
        seq: int | None = None,
        occurred_at: float | None = None,
        severity: str | None = None,
    ) -> str | None:
        """Queue an event for every endpoint that wants it; never waits, never raises.

        Returns the event id, or None when no endpoint took it (none matches, all full, closed).
        """
        targets = [e for e in self._endpoints if e.wants(event_type)]
        if not targets:
            return None
        try:
            event = new_event(
                event_type,
                room,
                data,
                occurred_at=self._clock() if occurred_at is None else occurred_at,
                seq=seq,
                severity=severity,
            )
        except (TypeError, ValueError):
            # Tuple keys or a reference cycle: a bug in the publisher, which must not break
            # the room's event fan-out this is called from.
            log.exception("webhook event %s for room %s cannot be encoded as JSON", event_type, room)
            for endpoint in targets:
                self._count_drop(endpoint, "dropped", "an event could not be encoded")
            return None
        accepted = False
        for endpoint in targets:
            if self._closed:
                self._count_drop(endpoint, "abandoned", "the dispatcher is closed")
                continue
            try:
                endpoint.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._count_drop(endpoint, "dropped", "its queue is full")
                continue
            endpoint.depth.set(endpoint.queue.qsize())
            accepted = True
        return event.id if accepted else None

    def on_room_event(self, event: RoomEvent) -> None:
        """An `EventLog` listener: `event_log.add_listener(dispatcher.on_room_event)`."""
        self.submit(
            event.type,
            event.room,
            event.data,
            seq=event.seq,
            occurred_at=event.wall_clock,
            severity=event.severity.value,
        )

    def _count_drop(self, endpoint: _Endpoint, outcome: str, why: str) -> None:
        endpoint.outcomes[outcome].inc()
        endpoint.dropped_since_log += 1
        now = time.monotonic()
        if now - endpoint.last_drop_log >= DROP_LOG_INTERVAL_S:
            log.warning(
                "webhook endpoint %s: dropped %d event(s) because %s",
                endpoint.name,
                endpoint.dropped_since_log,
                why,
                extra={"endpoint": endpoint.name},
            )
            endpoint.dropped_since_log = 0
            endpoint.last_drop_log = now

    async def _work(self, endpoint: _Endpoint) -> None:
        while True:
            event = await endpoint.queue.get()
            endpoint.depth.set(endpoint.queue.qsize())
            endpoint.in_flight.add(event.id)
            try:
                await self._deliver(endpoint, event)
            except asyncio.CancelledError:
                endpoint.outcomes["abandoned"].inc()
                raise
            except Exception:
                # A bug here must not kill the worker: the endpoint would silently go dark.
                log.exception(
                    "webhook endpoint %s: delivery of %s crashed", endpoint.name, event.id
                )
                endpoint.outcomes["exhausted"].inc()
            finally:
                endpoint.in_flight.discard(event.id)
                endpoint.queue.task_done()

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before attempt `attempt + 1`: exponential, capped, with jitter in [50 %, 100 %]
        so retries from many servers do not arrive in lockstep."""
        config = self._config
        ceiling = min(config.max_backoff_s, config.initial_backoff_s * 2.0 ** (attempt - 1))
        delay = ceiling * (0.5 + 0.5 * self._jitter())
        if retry_after is not None:
            delay = max(delay, min(retry_after, config.max_backoff_s))
        return delay

    async def _deliver(self, endpoint: _Endpoint, event: WebhookEvent) -> None:
        max_attempts = self._config.max_attempts
        for attempt in range(1, max_attempts + 1):
            result = await self._attempt(endpoint, event, attempt)
            if result.ok:
                endpoint.outcomes["delivered"].inc()
                return
            endpoint.failures[result.reason].inc()
            if not result.retry:
                endpoint.outcomes["rejected"].inc()
                log.warning(
                    "webhook endpoint %s rejected event %s (%s) with HTTP %s; not retrying",
                    endpoint.name, event.id, event.type, result.status,
                    extra={"endpoint": endpoint.name, "room": event.room},
                )
                return
            if attempt < max_attempts:
                delay = self.backoff_delay(attempt, result.retry_after)
                log.info(
                    "webhook endpoint %s: attempt %d/%d of %s failed (%s); retrying in %.2f s",
                    endpoint.name, attempt, max_attempts, event.id, result.reason, delay,
                    extra={"endpoint": endpoint.name, "room": event.room},
                )
                await asyncio.sleep(delay)
        endpoint.outcomes["exhausted"].inc()
        log.error(
            "webhook endpoint %s: gave up on event %s (%s) after %d attempts",
            endpoint.name, event.id, event.type, max_attempts,
            extra={"endpoint": endpoint.name, "room": event.room},
        )

    async def _attempt(
        self, endpoint: _Endpoint, event: WebhookEvent, attempt: int
    ) -> _AttemptResult:
        assert self._session is not None
        headers = signed_headers(endpoint.secret, event, attempt, int(self._clock()))
        started = time.perf_counter()
        try:
            async with self._session.post(
                endpoint.url, data=event.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                # A small answer is read so the connection goes back to the pool; a large or
                # chunked one is not worth memory: the connection is closed instead.
                length = response.content_length
                if length is not None and length <= MAX_RESPONSE_BYTES:
                    await response.read()
        except TimeoutError:
            return _AttemptResult(False, reason="timeout", retry=True)
        except aiohttp.ClientError:
            return _AttemptResult(False, reason="connection", retry=True)
        finally:
            endpoint.timer.observe(time.perf_counter() - started)
        if 200 <= status < 300:
            return _AttemptResult(True, status=status)
        if status >= 500:
            return _AttemptResult(
                False, reason="http_5xx", retry=True, status=status, retry_after=retry_after
            )
        if status == 429:
            return _AttemptResult(
                False, reason="http_429", retry=True, status=status, retry_after=retry_after
            )
        if status in RETRYABLE_STATUSES:
            return _AttemptResult(False, reason="http_4xx", retry=True, status=status)
        reason = "http_3xx" if 300 <= status < 400 else "http_4xx"
        return _AttemptResult(False, reason=reason, retry=False, status=status)

    def pending(self) -> int:
        """Events queued or being delivered, over all endpoints."""
        return sum(e.queue.qsize() + len(e.in_flight) for e in self._endpoints)

    async def close(self, drain_timeout: float) -> bool:
        """Stop taking events, deliver what is queued for up to `drain_timeout` seconds, then
        abandon the rest (counted). True when everything was delivered or given up on in time."""
        self._closed = True
        drained = all(e.queue.empty() for e in self._endpoints)
        if self._session is not None:
            joins = [asyncio.create_task(e.queue.join()) for e in self._endpoints]
            _done, not_done = await asyncio.wait(joins, timeout=max(drain_timeout, 0.0))
            drained = not not_done
            for task in not_done:
                task.cancel()
        for endpoint in self._endpoints:
            for worker in endpoint.workers:
                worker.cancel()
            for worker in endpoint.workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            endpoint.workers.clear()
            left = 0
            while not endpoint.queue.empty():
                endpoint.queue.get_nowait()
                endpoint.queue.task_done()
                left += 1
            if left:
                endpoint.outcomes["abandoned"].inc(left)
                log.warning(
                    "webhook endpoint %s: abandoned %d undelivered event(s) at shutdown",
                    endpoint.name, left, extra={"endpoint": endpoint.name},
                )
            endpoint.depth.set(0)
        if self._session is not None:
            await self._session.close()
            self._session = None
        return drained
