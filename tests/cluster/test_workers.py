"""One node, two media worker processes (`server.workers: 2`), no Redis: a room lives on one
worker, a new room goes to the least-loaded one, and a worker that dies is restarted with only
its own rooms lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finrtc.auth import mint_token
from finrtc.model import Role
from tests.cluster.conftest import children, is_alive, worker_id_of
from tests.support import webrtc_client
from tests.support.live_server import LIVE_SECRET, LiveServer, live_server
from tests.support.media import PatternVideoTrack, ToneAudioTrack


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("workers"), server={"workers": 2},
                     logging={"level": "info", "format": "text"}) as server:
        yield server


@dataclass
class Call:
    room: str
    agent: webrtc_client.Session
    customer: webrtc_client.Session

    def frames_seen(self) -> int:
        video = self.customer.received.get("video")
        return video.count if video is not None else 0


def token(room: str, identity: str, role: Role) -> str:
    return mint_token(LIVE_SECRET, room=room, identity=identity, role=role)


async def start_call(http: aiohttp.ClientSession, base: str) -> Call:
    room = "call-" + uuid.uuid4().hex[:8]
    agent = await webrtc_client.publish(http, base, room, token(room, "agent", Role.AGENT),
                                        [PatternVideoTrack(), ToneAudioTrack()])
    customer = await webrtc_client.play(http, base, room, token(room, "customer", Role.CUSTOMER))
    return Call(room, agent, customer)


async def until(condition: object, within_s: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within_s
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def metrics(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), "a metric family appears twice in the merged /metrics"
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def worker_pids(node: LiveServer) -> dict[int, int]:
    found = {worker_id_of(pid): pid for pid in children(node.pid)}
    return {worker: pid for worker, pid in found.items() if worker is not None}


async def test_a_call_per_worker_and_a_restart_that_loses_only_its_rooms(
    node: LiveServer, http: aiohttp.ClientSession
) -> None:
    async def all_ready() -> bool:
        # The node is ready as soon as one worker is; each worker reports on its own.
        async with http.get(f"{node.base}/readyz") as response:
            assert response.status == 200
            return bool((await response.json())["workers"] == {"0": "ready", "1": "ready"})

    await until(all_ready, 30, "both media workers must become ready")
    pids = worker_pids(node)
    assert sorted(pids) == [0, 1]

    first = await start_call(http, node.base)
    second = await start_call(http, node.base)
    calls = [first, second]
    try:
        async def both_flowing() -> bool:
            return all(call.frames_seen() >= 30 for call in calls)

        await until(both_flowing, 20, "a call did not get 30 frames")

        async def spread() -> bool:
            samples = await metrics(http, node.base)
            return all(value(samples, "finrtc_worker_rooms", media_worker=w) == 1 for w in ("0", "1"))

        await until(spread, 5, "the two calls must land on the two workers, one each")
        samples = await metrics(http, node.base)
        # Each worker's own metrics come through the one /metrics, labelled with its id.
        for worker in ("0", "1"):
            assert value(samples, "finrtc_worker_up", media_worker=worker) == 1
            assert any(name.startswith("finrtc_") and ("media_worker", worker) in labels
                       for name, labels in samples if name != "finrtc_worker_up")
        log = node.log_text()
        assert "worker=0" in log and "worker=1" in log, "log lines must carry the worker id"

        # The first room went to worker 0 (both idle: lowest id), the second to worker 1.
        os.kill(pids[0], signal.SIGKILL)
        killed_at = time.monotonic()
        before = second.frames_seen()

        async def restarted() -> bool:
            if worker_pids(node).get(0) in (None, pids[0]):
                return False
            async with http.get(f"{node.base}/readyz") as response:
                return response.status == 200 and (await response.json())["workers"]["0"] == "ready"

        await until(restarted, 20, "the killed worker was not restarted")
        restart_s = time.monotonic() - killed_at
        new_pids = worker_pids(node)
        assert new_pids[1] == pids[1] and new_pids[0] != pids[0] and not is_alive(pids[0])
        samples = await metrics(http, node.base)
        assert value(samples, "finrtc_worker_restarts_total", media_worker="0") == 1
        assert value(samples, "finrtc_worker_restarts_total", media_worker="1") == 0

        # The other worker's call never stopped.
        await asyncio.sleep(1)
        assert second.frames_seen() > before + 15, "the call on the surviving worker stalled"
        admin = {"Authorization": "Bearer " + mint_token(LIVE_SECRET, room=None, identity="ops",
                                                         role=Role.OBSERVER, admin=True)}
        async with http.get(f"{node.base}/v1/rooms/{second.room}", headers=admin) as response:
            assert response.status == 200
        async with http.get(f"{node.base}/v1/rooms/{first.room}", headers=admin) as response:
            assert response.status == 404, "the killed worker's room must be gone, not half-alive"
            assert "error" in await response.json()
        async with http.get(f"{node.base}/v1/rooms", headers=admin) as response:
            names = {room["name"] for room in (await response.json())["rooms"]}
        assert second.room in names and first.room not in names

        # New calls go to the restarted worker too.
        third = await start_call(http, node.base)
        calls.append(third)

        async def third_flowing() -> bool:
            return third.frames_seen() >= 30

        await until(third_flowing, 20, "a call after the restart got no video")
        assert restart_s < 15
    finally:
        for call in calls:
            await webrtc_client.close(call.customer)
            await webrtc_client.close(call.agent)


async def test_the_front_answers_for_itself_when_no_worker_owns_a_room(
    node: LiveServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{node.base}/internal/state") as response:
        assert response.status == 404, "worker-internal routes must not be reachable from outside"
    async with http.get(f"{node.base}/v1/rooms/{'x' * 300}") as response:
        assert response.status in (400, 401)
        assert "error" in await response.json()
    async with http.get(f"{node.base}/openapi.json") as response:
        assert response.status == 200
        assert "/v1/rooms" in (await response.json())["paths"]


def test_each_worker_is_a_child_of_the_front(node: LiveServer) -> None:
    pids = worker_pids(node)
    for pid in pids.values():
        assert int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1]) == node.pid
