"""Two finrtc nodes (two `finrtc serve` processes) sharing one real redis-server.

A room lives on the node that created it; the other node lists it, proxies its room API, events
WebSocket and WHIP/WHEP requests to it, and the media flows between the client and the owner.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from finrtc.auth import mint_token
from finrtc.model import Role
from tests.cluster.conftest import RedisServer, children, is_alive
from tests.support import webrtc_client
from tests.support.live_server import LIVE_SECRET, LiveServer, live_server
from tests.support.media import PatternVideoTrack, ToneAudioTrack

HEARTBEAT_S = 0.5
EXPIRY_S = 2.0


@dataclass
class WebhookInbox:
    """A backend receiving both nodes' webhooks (plain HTTP server on a thread: the nodes are
    started before any event loop of a test exists)."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_room(self, room: str) -> list[dict[str, Any]]:
        with self.lock:
            return sorted((b for b in self.bodies if b["room"] == room), key=lambda b: b["seq"])


@pytest.fixture(scope="module")
def inbox() -> Iterator[WebhookInbox]:
    box = WebhookInbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with box.lock:
                box.bodies.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()


def node_sections(redis: RedisServer, prefix: str, node_id: str, inbox: WebhookInbox) -> dict[str, Any]:
    return {
        "server": {"workers": 1},
        "cluster": {"redis_url": redis.url, "node_id": node_id, "key_prefix": prefix,
                    "heartbeat_interval_s": HEARTBEAT_S, "node_expiry_s": EXPIRY_S, "peer_timeout_s": 3},
        "webhooks": {"endpoints": [{"name": "backend", "url": inbox.url}],
                     "initial_backoff_s": 0.05, "max_backoff_s": 0.2},
        "logging": {"level": "info", "format": "text"},
    }


@dataclass
class Cluster:
    a: LiveServer
    b: LiveServer
    redis: RedisServer
    prefix: str
    inbox: WebhookInbox
    root: Path


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, inbox: WebhookInbox,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    prefix = f"n{uuid.uuid4().hex[:6]}:"
    root = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        nodes = []
        for name in ("node-a", "node-b"):
            (root / name).mkdir()
            nodes.append(stack.enter_context(
                live_server(root / name, **node_sections(redis_server, prefix, name, inbox))))
        yield Cluster(nodes[0], nodes[1], redis_server, prefix, inbox, root)


ADMIN = {"Authorization": "Bearer " + mint_token(LIVE_SECRET, room=None, identity="backend",
                                                 role=Role.OBSERVER, admin=True)}


def token(room: str, identity: str, role: Role) -> str:
    return mint_token(LIVE_SECRET, room=room, identity=identity, role=role)


def new_room() -> str:
    return "sale-" + uuid.uuid4().hex[:8]


async def create_room(http: aiohttp.ClientSession, base: str, room: str) -> None:
    async with http.post(f"{base}/v1/rooms", json={"name": room}, headers=ADMIN) as response:
        assert response.status == 201, await response.text()


async def listed(http: aiohttp.ClientSession, base: str) -> set[str]:
    async with http.get(f"{base}/v1/rooms", headers=ADMIN) as response:
        assert response.status == 200, await response.text()
        return {room["name"] for room in (await response.json())["rooms"]}


async def test_both_nodes_registered_with_their_urls(cluster: Cluster) -> None:
    keys = set(cluster.redis.cli("KEYS", f"{cluster.prefix}node:*").split())
    assert keys == {f"{cluster.prefix}node:node-a", f"{cluster.prefix}node:node-b"}
    record = json.loads(cluster.redis.cli("GET", f"{cluster.prefix}node:node-a"))
    assert record["public_url"] == cluster.a.base and record["workers"] == 1
    ttl_ms = int(cluster.redis.cli("PTTL", f"{cluster.prefix}node:node-a"))
    assert 0 < ttl_ms <= EXPIRY_S * 1000


async def test_room_api_on_b_lists_and_acts_on_a_room_of_a(cluster: Cluster) -> None:
    room = new_room()
    async with aiohttp.ClientSession() as http:
        await create_room(http, cluster.a.base, room)
        assert cluster.redis.cli("GET", f"{cluster.prefix}room:{room}") == "node-a"
        assert room in await listed(http, cluster.b.base)
        names = await listed(http, cluster.b.base)
        assert len(names) == len(set(names)), "a room must be listed once"
        async with http.get(f"{cluster.b.base}/v1/rooms/{room}", headers=ADMIN) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["name"] == room
        # B refuses a second room of the same name: A owns it.
        async with http.post(f"{cluster.b.base}/v1/rooms", json={"name": room}, headers=ADMIN) as response:
            assert response.status == 409, await response.text()
        # Credentials are checked by the owner, through B, as on A.
        async with http.get(f"{cluster.b.base}/v1/rooms/{room}") as response:
            assert response.status == 401
            assert (await response.json())["error"]
        async with http.delete(f"{cluster.b.base}/v1/rooms/{room}", headers=ADMIN) as response:
            assert response.status == 200, await response.text()
        async with http.get(f"{cluster.a.base}/v1/rooms/{room}", headers=ADMIN) as response:
            assert response.status in (404, 410)


async def events_of(base: str, room: str, until_type: str, within_s: float = 20) -> list[dict[str, Any]]:
    url = f"{base.replace('http', 'ws', 1)}/v1/rooms/{room}/events?after=0"
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=ADMIN) as socket:
        hello = await socket.receive_json(timeout=within_s)
        assert hello["type"] == "hello" and hello["room"] == room
        while not events or events[-1]["type"] != until_type:
            events.append(await socket.receive_json(timeout=within_s))
    return events


async def test_publisher_on_a_viewer_on_b_events_and_webhooks_once(cluster: Cluster) -> None:
    room = new_room()
    async with aiohttp.ClientSession() as http:
        await create_room(http, cluster.a.base, room)
        via_b = asyncio.create_task(events_of(cluster.b.base, room, "room_closed"))
        direct = asyncio.create_task(events_of(cluster.a.base, room, "room_closed"))
        publisher = await webrtc_client.publish(
            http, cluster.a.base, room, token(room, "agent-1", Role.AGENT),
            [PatternVideoTrack(), ToneAudioTrack()])
        # The viewer only knows node B.
        viewer = await webrtc_client.play(
            http, cluster.b.base, room, token(room, "customer-1", Role.CUSTOMER))
        try:
            assert viewer.location.startswith(f"/whep/{room}/")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                video = viewer.received.get("video")
                if video is not None and video.count >= 30:
                    break
                await asyncio.sleep(0.2)
            video = viewer.received.get("video")
            assert video is not None and video.count >= 30, "the viewer on node B got no video"
            frame = video.frames[-1]
            assert (frame.width, frame.height) == (640, 480)
            assert viewer.pc.connectionState == "connected"
            # The session resource answers through B (proxied to the owner).
            assert await webrtc_client.delete(http, cluster.b.base, viewer) == 200
        finally:
            await webrtc_client.close(viewer)
            await webrtc_client.close(publisher)
        async with http.delete(f"{cluster.b.base}/v1/rooms/{room}", headers=ADMIN) as response:
            assert response.status == 200, await response.text()
        seen_via_b, seen_direct = await asyncio.wait_for(asyncio.gather(via_b, direct), 30)

    # B's events stream is A's, event for event.
    assert seen_via_b == seen_direct
    types = [e["type"] for e in seen_via_b]
    assert types[0] == "room_started" and types[-1] == "room_closed"
    assert "participant_joined" in types
    seqs = [e["seq"] for e in seen_via_b]
    assert seqs == sorted(set(seqs))
    # Both nodes have the webhook endpoint configured: each event is still delivered once.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
            b["type"] == "room_closed" for b in cluster.inbox.of_room(room)):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    delivered = cluster.inbox.of_room(room)
    delivered_seqs = [b["seq"] for b in delivered]
    assert delivered_seqs == list(range(1, len(delivered) + 1)), "webhooks lost or duplicated"
    assert {(e["seq"], e["type"]) for e in seen_via_b} <= {(b["seq"], b["type"]) for b in delivered}


async def test_a_room_created_through_b_lives_on_b(cluster: Cluster) -> None:
    room = new_room()
    async with aiohttp.ClientSession() as http:
        publisher = await webrtc_client.publish(
            http, cluster.b.base, room, token(room, "agent-2", Role.AGENT), [ToneAudioTrack()])
        try:
            assert cluster.redis.cli("GET", f"{cluster.prefix}room:{room}") == "node-b"
            assert room in await listed(http, cluster.a.base)
        finally:
            await webrtc_client.close(publisher)


async def test_a_killed_node_drops_out_and_its_room_names_can_be_reused(
    cluster: Cluster, tmp_path: Path
) -> None:
    room = new_room()
    with live_server(tmp_path, **node_sections(cluster.redis, cluster.prefix, "node-doomed",
                                               cluster.inbox)) as doomed:
        workers = children(doomed.pid)
        assert workers, "the node's front listener started no media worker"
        async with aiohttp.ClientSession() as http:
            await create_room(http, doomed.base, room)
            assert room in await listed(http, cluster.b.base)
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait(timeout=10)
            killed_at = time.monotonic()
            # Its room names leave the directory within the expiry (plus one heartbeat of slack).
            while cluster.redis.cli("EXISTS", f"{cluster.prefix}room:{room}") != "0":
                assert time.monotonic() - killed_at < EXPIRY_S + HEARTBEAT_S + 1, "room did not expire"
                await asyncio.sleep(0.1)
            assert cluster.redis.cli("EXISTS", f"{cluster.prefix}node:node-doomed") == "0"
            # Its workers stop with it (PR_SET_PDEATHSIG): no orphan keeps media ports.
            deadline = time.monotonic() + 10
            while any(is_alive(pid) for pid in workers):
                assert time.monotonic() < deadline, "a media worker outlived its node"
                await asyncio.sleep(0.1)
            assert room not in await listed(http, cluster.b.base)
            # B refuses nothing it owns: the name can be created again, on B.
            await create_room(http, cluster.b.base, room)
            assert cluster.redis.cli("GET", f"{cluster.prefix}room:{room}") == "node-b"
            async with http.delete(f"{cluster.b.base}/v1/rooms/{room}", headers=ADMIN) as response:
                assert response.status == 200
