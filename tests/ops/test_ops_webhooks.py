"""Signed webhooks against real aiohttp receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from finrtc.errors import ConfigError
from finrtc.events import EventLog
from finrtc.metrics import REGISTRY
from finrtc.model import Severity
from finrtc.webhooks.sender import WebhookDispatcher, resolve_endpoint_secret
from finrtc.webhooks.settings import WebhookEndpoint, WebhooksConfig
from finrtc.webhooks.signing import (
    WebhookSignatureError,
    check_signature,
    signature_header,
    verify_signature,
)

SECRET = "s3cr3t-" + "x" * 40
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A backend: answers with `statuses` in turn (then 200), records every request."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    retry_after: str | None = None
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.statuses.pop(0) if self.statuses else 200
        self.requests.append(Received(dict(request.headers), body, status))
        self.arrived.set()
        headers = {"Retry-After": self.retry_after} if self.retry_after and status == 429 else {}
        return web.Response(status=status, headers=headers)

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait_for(self, count: int, within_s: float = 15.0) -> None:
        deadline = time.monotonic() + within_s
        while len(self.requests) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                continue


@pytest.fixture
async def receiver_factory() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def make(statuses: list[int] | None = None, delay_s: float = 0.0) -> Receiver:
        receiver = Receiver(statuses=list(statuses or []), delay_s=delay_s)
        app = web.Application()
        app.router.add_post("/hooks", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        receiver.url = f"http://127.0.0.1:{port}/hooks"
        return receiver

    yield make
    for runner in runners:
        await runner.cleanup()


def unique_name() -> str:
    return "t" + uuid.uuid4().hex[:12]


def config(*endpoints: WebhookEndpoint, **overrides: Any) -> WebhooksConfig:
    values: dict[str, Any] = {
        "endpoints": list(endpoints),
        "initial_backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "timeout_s": 2.0,
    }
    values.update(overrides)
    return WebhooksConfig(**values)


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_event_arrives_signed_with_documented_headers(receiver_factory: Any) -> None:
    receiver = await receiver_factory()
    name = unique_name()
    dispatcher = WebhookDispatcher(
        config(WebhookEndpoint(url=receiver.url, name=name, secret=SECRET)), "unused-api-secret"
    )
    dispatcher.start()
    event_id = dispatcher.submit("participant_joined", "branch-42", {"participant": "agent-1"})
    assert event_id is not None and event_id.startswith("evt_")
    await receiver.wait_for(1)
    assert await dispatcher.close(2.0)

    request = receiver.requests[0]
    assert verify_signature(SECRET, request.headers, request.body)
    assert check_signature(SECRET, request.headers, request.body) == int(
        request.headers["Finrtc-Timestamp"]
    )
    assert request.headers["Finrtc-Event-Id"] == event_id
    assert request.headers["Finrtc-Event-Type"] == "participant_joined"
    assert request.headers["Finrtc-Delivery-Attempt"] == "1"
    assert request.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", request.headers["Finrtc-Signature"])
    body = json.loads(request.body)
    assert body["id"] == event_id
    assert body["type"] == "participant_joined"
    assert body["room"] == "branch-42"
    assert body["data"] == {"participant": "agent-1"}
    assert body["version"] == 1
    assert abs(body["time"] - time.time()) < 10
    assert not verify_signature("another-secret-" + "y" * 40, request.headers, request.body)
    assert sample("finrtc_webhook_deliveries_total", endpoint=name, outcome="delivered") == 1


async def test_fails_twice_then_succeeds_delivers_once_with_same_id(receiver_factory: Any) -> None:
    receiver = await receiver_factory(statuses=[500, 503])
    name = unique_name()
    dispatcher = WebhookDispatcher(
        config(WebhookEndpoint(url=receiver.url, name=name), max_attempts=5), SECRET
    )
    dispatcher.start()
    event_id = dispatcher.submit("room_closed", "room-a", {"reason": "ended"})
    await receiver.wait_for(3)
    assert await dispatcher.close(2.0)
    # Nothing more arrives after the success.
    await asyncio.sleep(0.1)

    assert [r.status for r in receiver.requests] == [500, 503, 200]
    assert len(receiver.accepted()) == 1
    assert {r.headers["Finrtc-Event-Id"] for r in receiver.requests} == {event_id}
    assert len({r.body for r in receiver.requests}) == 1
    assert [r.headers["Finrtc-Delivery-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    # The API secret signs when the endpoint has none; every attempt carries a valid signature.
    assert all(verify_signature(SECRET, r.headers, r.body) for r in receiver.requests)
    assert sample("finrtc_webhook_attempt_failures_total", endpoint=name, reason="http_5xx") == 2
    assert sample("finrtc_webhook_deliveries_total", endpoint=name, outcome="delivered") == 1


async def test_tampered_body_fails_verification(receiver_factory: Any) -> None:
    receiver = await receiver_factory()
    dispatcher = WebhookDispatcher(config(WebhookEndpoint(url=receiver.url)), SECRET)
    dispatcher.start()
    dispatcher.submit("hook_alert", "room-b", {"amount": 1000})
    await receiver.wait_for(1)
    await dispatcher.close(2.0)
    request = receiver.requests[0]
    assert verify_signature(SECRET, request.headers, request.body)

    tampered = request.body.replace(b"1000", b"9000")
    assert tampered != request.body
    assert not verify_signature(SECRET, request.headers, tampered)
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        check_signature(SECRET, request.headers, tampered)
    # A replay after the tolerance, a missing header and a mangled header are refused too.
    stamp = int(request.headers["Finrtc-Timestamp"])
    with pytest.raises(WebhookSignatureError, match="away from now"):
        check_signature(SECRET, request.headers, request.body, now=stamp + 301)
    with pytest.raises(WebhookSignatureError, match="no Finrtc-Signature"):
        check_signature(SECRET, {}, request.body)
    with pytest.raises(WebhookSignatureError, match="must look like"):
        check_signature(SECRET, {"finrtc-signature": "v1=abc"}, request.body)


def test_rotation_header_with_two_signatures_verifies() -> None:
    body = b'{"id":"evt_1"}'
    now = int(time.time())
    old = signature_header("old-" + "o" * 40, now, body)
    new = signature_header(SECRET, now, body)
    header = f"{new},{old.split(',')[1]}"
    assert verify_signature(SECRET, {"Finrtc-Signature": header}, body)
    assert verify_signature("old-" + "o" * 40, {"Finrtc-Signature": header}, body)


async def test_dead_endpoint_never_blocks_submit_and_overflow_is_counted() -> None:
    # A backend that accepts connections and never answers: the worst kind of dead.
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(-1)
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    name = unique_name()
    dispatcher = WebhookDispatcher(
        config(
            WebhookEndpoint(url=f"http://127.0.0.1:{port}/hooks", name=name),
            queue_size=50,
            timeout_s=30.0,
        ),
        SECRET,
    )
    dispatcher.start()
    await asyncio.sleep(0)
    durations = []
    for index in range(2000):
        started = time.perf_counter()
        dispatcher.submit("participant_joined", "room-c", {"n": index})
        durations.append(time.perf_counter() - started)
    durations.sort()
    p99 = durations[int(len(durations) * 0.99)]
    print(
        f"\nsubmit() with a hanging endpoint: mean {sum(durations) / len(durations) * 1e6:.1f} us, "
        f"median {durations[len(durations) // 2] * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us, "
        f"max {durations[-1] * 1e6:.1f} us"
    )
    # A submit that waited on the backend would take the 30 s timeout (or at least a connect
    # round trip). Bounds are loose because this machine is shared: preemption shows in the max.
    assert durations[len(durations) // 2] < 0.001
    assert p99 < 0.01
    assert sum(durations) < 5.0
    # No await happened during the loop, so exactly queue_size events were taken.
    assert sample("finrtc_webhook_deliveries_total", endpoint=name, outcome="dropped") == 1950
    assert sample("finrtc_webhook_queue_depth", endpoint=name) == 50

    started = time.perf_counter()
    assert not await dispatcher.close(0.2)
    assert time.perf_counter() - started < 2.0
    # Everything queued or in flight at the deadline is accounted for as abandoned.
    assert sample("finrtc_webhook_deliveries_total", endpoint=name, outcome="abandoned") == 50
    assert sample("finrtc_webhook_queue_depth", endpoint=name) == 0
    server.close()
    await server.wait_closed()


async def test_refused_endpoint_exhausts_and_does_not_delay_a_healthy_one(
    receiver_factory: Any,
) -> None:
    healthy = await receiver_factory()
    dead, alive = unique_name(), unique_name()
    dispatcher = WebhookDispatcher(
        config(
            WebhookEndpoint(url=f"http://127.0.0.1:{closed_port()}/x", name=dead),
            WebhookEndpoint(url=healthy.url, name=alive),
            max_attempts=3,
        ),
        SECRET,
    )
    dispatcher.start()
    for index in range(5):
        dispatcher.submit("track_published", "room-d", {"n": index})
    await healthy.wait_for(5)
    assert await dispatcher.close(5.0)
    assert sample("finrtc_webhook_deliveries_total", endpoint=alive, outcome="delivered") == 5
    assert sample("finrtc_webhook_deliveries_total", endpoint=dead, outcome="exhausted") == 5
    assert sample("finrtc_webhook_attempt_failures_total", endpoint=dead, reason="connection") == 15


async def test_permanent_rejection_is_not_retried(receiver_factory: Any) -> None:
    receiver = await receiver_factory(statuses=[400, 301])
    name = unique_name()
    dispatcher = WebhookDispatcher(config(WebhookEndpoint(url=receiver.url, name=name)), SECRET)
    dispatcher.start()
    dispatcher.submit("a", "room-e", {})
    dispatcher.submit("b", "room-e", {})
    await receiver.wait_for(2)
    assert await dispatcher.close(2.0)
    await asyncio.sleep(0.05)
    assert len(receiver.requests) == 2
    assert sample("finrtc_webhook_deliveries_total", endpoint=name, outcome="rejected") == 2
    assert sample("finrtc_webhook_attempt_failures_total", endpoint=name, reason="http_4xx") == 1
    assert sample("finrtc_webhook_attempt_failures_total", endpoint=name, reason="http_3xx") == 1


def test_backoff_is_exponential_capped_jittered_and_honours_retry_after() -> None:
    cfg = WebhooksConfig(initial_backoff_s=0.5, max_backoff_s=30.0)
    low = WebhookDispatcher(cfg, SECRET, jitter=lambda: 0.0)
    high = WebhookDispatcher(cfg, SECRET, jitter=lambda: 1.0)
    assert [high.backoff_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [low.backoff_delay(n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert high.backoff_delay(20) == 30.0
    assert low.backoff_delay(1, retry_after=7.0) == 7.0
    assert low.backoff_delay(1, retry_after=600.0) == 30.0


async def test_retry_after_on_429_is_respected(receiver_factory: Any) -> None:
    receiver = await receiver_factory(statuses=[429])
    receiver.retry_after = "0.3"
    name = unique_name()
    dispatcher = WebhookDispatcher(
        config(WebhookEndpoint(url=receiver.url, name=name), max_backoff_s=1.0), SECRET
    )
    dispatcher.start()
    dispatcher.submit("x", "room-f", {})
    await receiver.wait_for(1)
    first = time.monotonic()
    await receiver.wait_for(2)
    waited = time.monotonic() - first
    assert await dispatcher.close(1.0)
    # The backoff alone would be 5-10 ms; the receiver asked for 300 ms.
    assert 0.25 <= waited < 5.0
    assert sample("finrtc_webhook_attempt_failures_total", endpoint=name, reason="http_429") == 1
    assert sample("finrtc_webhook_deliveries_total", endpoint=name, outcome="delivered") == 1


async def test_event_filter_room_event_listener_and_drain(receiver_factory: Any) -> None:
    receiver = await receiver_factory(delay_s=0.01)
    dispatcher = WebhookDispatcher(
        config(WebhookEndpoint(url=receiver.url, events=["participant_*", "room_closed"])),
        SECRET,
    )
    assert dispatcher.submit("track_published", "r", {}) is None  # filtered out
    log = EventLog("branch-7")
    log.add_listener(dispatcher.on_room_event)
    # Submitted before start(): kept, delivered once workers run.
    log.publish("participant_joined", {"participant": "c-1"}, severity=Severity.WARNING)
    log.publish("track_published", {"kind": "video"})
    for _ in range(20):
        log.publish("room_closed", {})
    dispatcher.start()
    # close() drains what is queued within its timeout.
    assert await dispatcher.close(5.0)
    assert len(receiver.requests) == 21
    bodies = [json.loads(r.body) for r in receiver.requests]
    first = next(b for b in bodies if b["type"] == "participant_joined")
    assert first["seq"] == 1 and first["severity"] == "warning" and first["room"] == "branch-7"
    assert {b["type"] for b in bodies} == {"participant_joined", "room_closed"}
    assert len({b["id"] for b in bodies}) == 21
    # After close, submit neither raises nor queues.
    assert dispatcher.submit("room_closed", "branch-7", {}) is None


def test_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    strong = "k" * 40
    (tmp_path / "hook.secret").write_text(strong + "\n")
    from_file = WebhookEndpoint(url="https://h/x", secret_file="hook.secret")
    assert resolve_endpoint_secret(from_file, 0, "api", tmp_path) == strong
    monkeypatch.setenv("FINRTC_TEST_HOOK_SECRET", strong)
    from_env = WebhookEndpoint(url="https://h/x", secret_env="FINRTC_TEST_HOOK_SECRET")
    assert resolve_endpoint_secret(from_env, 0, "api", None) == strong
    assert resolve_endpoint_secret(WebhookEndpoint(url="https://h/x"), 0, "api", None) == "api"

    missing_env = WebhookEndpoint(url="https://h/x", secret_env="FINRTC_TEST_UNSET_VAR")
    with pytest.raises(ConfigError, match=r"webhooks\.endpoints\[3\]\.secret_env"):
        resolve_endpoint_secret(missing_env, 3, "api", None)
    missing_file = WebhookEndpoint(url="https://h/x", secret_file="nope")
    with pytest.raises(ConfigError, match=r"endpoints\[1\]\.secret_file: cannot read"):
        resolve_endpoint_secret(missing_file, 1, "api", tmp_path)
    with pytest.raises(ConfigError, match="at least 32"):
        resolve_endpoint_secret(WebhookEndpoint(url="https://h/x", secret="short"), 0, "api")


def test_endpoint_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="at most one of secret"):
        WebhookEndpoint(url="https://h/x", secret="a" * 40, secret_env="X")
    with pytest.raises(ValueError, match="must start with http"):
        WebhookEndpoint(url="ftp://h/x")
    with pytest.raises(ValueError, match="endpoint name"):
        WebhookEndpoint(url="https://h/x", name="Has Spaces")
    with pytest.raises(ValueError, match="unique"):
        WebhooksConfig(
            endpoints=[
                WebhookEndpoint(url="https://a/x", name="crm"),
                WebhookEndpoint(url="https://b/x", name="crm"),
            ]
        )


def load_docs_snippet() -> Callable[..., bool]:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- verify-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/webhooks.md lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), str(DOCS), "exec"), namespace)
    function: Callable[..., bool] = namespace["verify_finrtc_webhook"]
    return function


async def test_documented_snippet_agrees_with_the_sender(receiver_factory: Any) -> None:
    verify_finrtc_webhook = load_docs_snippet()
    receiver = await receiver_factory()
    dispatcher = WebhookDispatcher(config(WebhookEndpoint(url=receiver.url)), SECRET)
    dispatcher.start()
    dispatcher.submit("room_started", "房间-1", {"script": "zh_insurance_sale"})
    await receiver.wait_for(1)
    await dispatcher.close(2.0)
    request = receiver.requests[0]
    assert json.loads(request.body)["room"] == "房间-1"
    assert verify_finrtc_webhook(SECRET, request.headers, request.body)
    assert not verify_finrtc_webhook(SECRET, request.headers, request.body + b" ")
    assert not verify_finrtc_webhook("wrong-" + "z" * 40, request.headers, request.body)
    stale = {"Finrtc-Signature": signature_header(SECRET, int(time.time()) - 3600, request.body)}
    assert not verify_finrtc_webhook(SECRET, stale, request.body)


async def test_delivery_throughput_to_a_local_receiver(receiver_factory: Any) -> None:
    receiver = await receiver_factory()
    count = 600
    dispatcher = WebhookDispatcher(
        config(WebhookEndpoint(url=receiver.url), queue_size=count, concurrency=4), SECRET
    )
    dispatcher.start()
    started = time.perf_counter()
    for index in range(count):
        dispatcher.submit("participant_joined", "room-t", {"n": index})
    await receiver.wait_for(count, within_s=30)
    elapsed = time.perf_counter() - started
    await dispatcher.close(2.0)
    print(f"\nsigned deliveries to a local receiver: {count / elapsed:.0f} events/s")
    assert all(verify_signature(SECRET, r.headers, r.body) for r in receiver.requests[:50])
    assert len({r.headers["Finrtc-Event-Id"] for r in receiver.requests}) == count


async def test_from_loaded_resolves_secrets_beside_the_config(
    receiver_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finrtc.config import load_config

    own, shared = await receiver_factory(), await receiver_factory()
    file_secret = "file-" + "f" * 40
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "crm").write_text(file_secret + "\n")
    config_path = tmp_path / "finrtc.yaml"
    config_path.write_text(
        "webhooks:\n"
        "  initial_backoff_s: 0.01\n"
        "  endpoints:\n"
        f"    - {{name: crm, url: '{own.url}', secret_file: secrets/crm}}\n"
        f"    - {{name: audit, url: '{shared.url}'}}\n"
    )
    monkeypatch.setenv("FINRTC_API_SECRET", SECRET)
    loaded = load_config(config_path, data_dir=str(tmp_path / "data"))
    dispatcher = WebhookDispatcher.from_loaded(loaded)
    assert dispatcher.endpoint_names == ["crm", "audit"]
    dispatcher.start()
    dispatcher.submit("room_started", "room-g", {})
    await own.wait_for(1)
    await shared.wait_for(1)
    await dispatcher.close(2.0)
    assert verify_signature(file_secret, own.requests[0].headers, own.requests[0].body)
    assert not verify_signature(SECRET, own.requests[0].headers, own.requests[0].body)
    assert verify_signature(SECRET, shared.requests[0].headers, shared.requests[0].body)
    # The same event (same id) goes to both endpoints.
    assert own.requests[0].body == shared.requests[0].body


async def test_unencodable_data_is_dropped_not_raised(
    receiver_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await receiver_factory()
    name = unique_name()
    dispatcher = WebhookDispatcher(config(WebhookEndpoint(url=receiver.url, name=name)), SECRET)
    dispatcher.start()
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    assert dispatcher.submit("bad", "room-h", {"key": {(1, 2): "tuple key"}}) is None
    assert dispatcher.submit("bad", "room-h", cycle) is None
    # Odd but encodable values go through as strings.
    assert dispatcher.submit("ok", "room-h", {"path": Path("/x"), "n": 1}) is not None
    await receiver.wait_for(1)
    await dispatcher.close(2.0)
    assert json.loads(receiver.requests[0].body)["data"] == {"path": "/x", "n": 1}
    assert sample("finrtc_webhook_deliveries_total", endpoint=name, outcome="dropped") == 2
    assert "cannot be encoded as JSON" in caplog.text
