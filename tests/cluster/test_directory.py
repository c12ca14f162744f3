"""RoomDirectory against a real redis-server: claims, expiry, release, node records."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from finrtc.cluster.directory import RoomDirectory
from finrtc.cluster.node_record import NodeRecord, generated_node_id
from finrtc.cluster.settings import ClusterConfig
from finrtc.errors import DirectoryUnavailableError
from tests.cluster.conftest import RedisServer
from tests.support.live_server import free_port


def settings(url: str, prefix: str, expiry_s: float = 10.0) -> ClusterConfig:
    return ClusterConfig(redis_url=url, key_prefix=prefix, heartbeat_interval_s=expiry_s / 4,
                         node_expiry_s=expiry_s, peer_timeout_s=2)


def record(node_id: str, rooms: int = 0) -> NodeRecord:
    now = time.time()
    return NodeRecord(node_id=node_id, public_url=f"http://{node_id}", internal_url=f"http://{node_id}:1",
                      rooms=rooms, participants=0, workers=1, started_at=now, heartbeat_at=now)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


async def test_one_owner_when_two_nodes_race_for_a_room(redis_server: RedisServer, prefix: str) -> None:
    a = RoomDirectory(settings(redis_server.url, prefix), "node-a")
    b = RoomDirectory(settings(redis_server.url, prefix), "node-b")
    try:
        await a.heartbeat(record("node-a"), [])
        await b.heartbeat(record("node-b"), [])
        winners = await asyncio.gather(*(d.claim(f"sale-{i}") for i in range(20) for d in (a, b)))
        for i in range(20):
            assert winners[2 * i] == winners[2 * i + 1], "both nodes must agree on the owner"
        owner = await b.owner("sale-0")
        assert owner is not None and owner.node_id == winners[0]
        assert owner.public_url == f"http://{winners[0]}"
        assert redis_server.cli("GET", f"{prefix}room:sale-0") == winners[0]
        # The owner claiming again keeps it; the other node is told who owns it.
        loser = b if winners[0] == "node-a" else a
        assert await loser.claim("sale-0") == winners[0]
    finally:
        await a.close()
        await b.close()


async def test_a_dead_owner_frees_its_rooms(redis_server: RedisServer, prefix: str) -> None:
    a = RoomDirectory(settings(redis_server.url, prefix, expiry_s=0.6), "node-a")
    b = RoomDirectory(settings(redis_server.url, prefix, expiry_s=0.6), "node-b")
    try:
        await a.heartbeat(record("node-a"), [])
        assert await a.claim("sale-1") == "node-a"
        assert await b.claim("sale-1") == "node-a"
        # node-a's record vanishes first (as when it died between the two expiries): its room
        # key alone does not keep the name.
        redis_server.cli("DEL", f"{prefix}node:node-a")
        assert await b.owner("sale-1") is None
        await b.heartbeat(record("node-b"), [])
        assert await b.claim("sale-1") == "node-b"
        # node-a comes back with a late heartbeat: it learns the room is someone else's now.
        taken = await a.heartbeat(record("node-a"), ["sale-1"])
        assert taken == {"sale-1": "node-b"}
        await b.heartbeat(record("node-b"), ["sale-1"])
        await asyncio.sleep(0.9)
        assert redis_server.cli("EXISTS", f"{prefix}room:sale-1") == "0", "entries must expire"
        assert await a.nodes() == []
    finally:
        await a.close()
        await b.close()


async def test_release_only_drops_rooms_this_node_owns(redis_server: RedisServer, prefix: str) -> None:
    a = RoomDirectory(settings(redis_server.url, prefix), "node-a")
    b = RoomDirectory(settings(redis_server.url, prefix), "node-b")
    try:
        await a.heartbeat(record("node-a", rooms=1), [])
        await b.heartbeat(record("node-b"), [])
        await a.claim("mine")
        await b.release(["mine"])
        assert redis_server.cli("GET", f"{prefix}room:mine") == "node-a"
        assert [n.node_id for n in await b.nodes()] == ["node-a", "node-b"]
        await a.leave(["mine"])
        assert redis_server.cli("EXISTS", f"{prefix}room:mine") == "0"
        assert [n.node_id for n in await b.nodes()] == ["node-b"]
    finally:
        await a.close()
        await b.close()


async def test_unreachable_redis_is_a_typed_error_without_the_password(prefix: str) -> None:
    url = f"redis://ops:hunter2@127.0.0.1:{free_port()}/0"
    directory = RoomDirectory(settings(url, prefix), "node-a")
    try:
        with pytest.raises(DirectoryUnavailableError) as caught:
            await directory.check()
        text = str(caught.value)
        assert "hunter2" not in text and "redis://***@127.0.0.1" in text
        assert "cluster.redis_url" in text
        with pytest.raises(DirectoryUnavailableError):
            await directory.claim("sale-1")
    finally:
        await directory.close()


def test_generated_node_ids_are_valid_and_distinct() -> None:
    ids = {generated_node_id() for _ in range(50)}
    assert len(ids) == 50
    for node_id in ids:
        ClusterConfig(node_id=node_id)
