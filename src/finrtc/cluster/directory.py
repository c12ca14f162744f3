"""The room directory shared by every node: which nodes are alive and which node owns each room.

Kept in Redis (`cluster.redis_url`) with the `redis` asyncio client. Every entry expires: a
node's own record and each room it owns are refreshed by its heartbeat, so a node that dies
(SIGKILL, power loss, partition) drops out of the directory within `cluster.node_expiry_s` and
its room names can be placed on another node. Claims are atomic Lua scripts, so two nodes that
race for one new room name agree on a single owner.

    {prefix}node:{id}   JSON NodeRecord                 PX node_expiry
    {prefix}room:{name} owning node id                  PX node_expiry
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from finrtc.cluster.node_record import NodeRecord
from finrtc.cluster.settings import ClusterConfig
from finrtc.errors import DirectoryUnavailableError

log = logging.getLogger(__name__)

# A room whose key names a node that no longer has a record is unowned: the node died between
# two of its heartbeats' expiries (room and node keys expire a moment apart).
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. owner) == 0 then
  owner = false
end
if (not owner) or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return owner
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
SCAN_BATCH = 200


class RoomDirectory:
    def __init__(self, settings: ClusterConfig, node_id: str) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.node_id = node_id
        self._url = settings.redis_url
        timeout = settings.peer_timeout_s
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=timeout,
            socket_connect_timeout=timeout, health_check_interval=30,
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._expiry_ms = int(settings.node_expiry_s * 1000)

    def _node_key(self, node_id: str) -> str:
        return f"{self.settings.key_prefix}node:{node_id}"

    def _room_key(self, room: str) -> str:
        return f"{self.settings.key_prefix}room:{room}"

    def _unavailable(self, error: Exception) -> DirectoryUnavailableError:
        return DirectoryUnavailableError(
            f"the room directory (Redis at {_redacted(self._url)}) is unreachable: {error}; "
            "retry shortly, or check the Redis server and cluster.redis_url"
        )

    async def check(self) -> None:
        """At start-up: a node that cannot reach its directory must not pretend to be in it."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as error:
            raise self._unavailable(error) from None

    async def heartbeat(self, record: NodeRecord, rooms: Iterable[str]) -> dict[str, str]:
        """Refresh this node's record and its rooms; returns rooms another node owns now
        (room -> that node), which happens only after this node missed its expiry."""
        names = list(rooms)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._node_key(self.node_id), record.to_json(), px=self._expiry_ms)
                for name in names:
                    pipe.eval(_CLAIM, 1, self._room_key(name), *self._claim_args())
                results = await pipe.execute()
        except (RedisError, OSError) as error:
            raise self._unavailable(error) from None
        return {name: owner for name, owner in zip(names, results[1:], strict=True)
                if owner != self.node_id}

    def _claim_args(self) -> list[str | int]:
        return [self.node_id, self._expiry_ms, f"{self.settings.key_prefix}node:"]

    async def claim(self, room: str) -> str:
        """Own `room` unless a live node does; the owner's id either way."""
        try:
            owner = await self._claim(keys=[self._room_key(room)], args=self._claim_args())
        except (RedisError, OSError) as error:
            raise self._unavailable(error) from None
        return str(owner)

    async def release(self, rooms: Iterable[str]) -> None:
        names = list(rooms)
        if not names:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.eval(_RELEASE, 1, self._room_key(name), self.node_id)
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise self._unavailable(error) from None

    async def owner(self, room: str) -> NodeRecord | None:
        """The live node owning `room`, or None (unowned, or its owner is gone)."""
        try:
            owner = await self._redis.get(self._room_key(room))
            if owner is None:
                return None
            text = await self._redis.get(self._node_key(str(owner)))
        except (RedisError, OSError) as error:
            raise self._unavailable(error) from None
        return NodeRecord.from_json(str(text)) if text is not None else None

    async def nodes(self) -> list[NodeRecord]:
        """Every live node, this one included."""
        try:
            keys = [key async for key in self._redis.scan_iter(
                match=f"{self.settings.key_prefix}node:*", count=SCAN_BATCH)]
            texts = await self._redis.mget(keys) if keys else []
        except (RedisError, OSError) as error:
            raise self._unavailable(error) from None
        records = [NodeRecord.from_json(str(text)) for text in texts if text is not None]
        return sorted((record for record in records if record is not None), key=lambda r: r.node_id)

    async def leave(self, rooms: Iterable[str]) -> None:
        """Clean shutdown: drop this node and its rooms now instead of at expiry."""
        try:
            await self.release(rooms)
            await self._redis.delete(self._node_key(self.node_id))
        except (DirectoryUnavailableError, RedisError, OSError) as error:
            log.warning("could not leave the room directory (entries expire by themselves): %s", error)

    async def close(self) -> None:
        await self._redis.aclose()


def _redacted(url: str) -> str:
    """redis://user:password@host -> redis://***@host: the URL goes into errors and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"
