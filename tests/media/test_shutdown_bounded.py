"""The whole shutdown (SIGTERM drain, then the app's cleanup) is bounded by drain_timeout_s.

A session service that never finishes closing (a storage backend that hangs) must not hold the
process: the drain and the cleanup share one deadline. Before, the cleanup called the rooms'
shutdown again without a timeout and waited forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from finrtc.assembly import drain
from finrtc.auth import mint_token
from finrtc.events import RoomEvent
from finrtc.hooks.chain import HookProvider
from finrtc.media.pipeline import TrackPipeline
from finrtc.model import Role
from finrtc.room import Room
from finrtc.session import CallSession, SessionExtension
from finrtc.signaling.context import READINESS, ROOMS
from tests.conftest import TEST_SECRET, make_loaded, start_server
from tests.media.test_media_fanout import wait_for
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack

DRAIN_TIMEOUT_S = 1.0


class HangingService:
    """A session service whose close never returns on its own."""

    name = "hanging"

    def __init__(self) -> None:
        self.close_started = asyncio.Event()
        self.cancelled = False

    def hook_providers(self) -> Sequence[HookProvider]:
        return ()

    def on_track(self, pipeline: TrackPipeline) -> None:
        pass

    def on_event(self, event: RoomEvent) -> None:
        pass

    async def close(self, clean: bool) -> None:
        self.close_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_drain_and_cleanup_share_one_deadline(tmp_path: Path) -> None:
    services: list[HangingService] = []

    async def factory(room: Room, session: CallSession) -> SessionExtension:
        service = HangingService()
        services.append(service)
        return service

    loaded = make_loaded(tmp_path, server={"drain_timeout_s": DRAIN_TIMEOUT_S})
    server = await start_server(loaded, extension_factories=[factory])
    async with aiohttp.ClientSession() as http:
        token = mint_token(TEST_SECRET, room="r", identity="ann", role=Role.AGENT)
        publisher = await client.publish(http, server.base, "r", token, [PatternVideoTrack()])
        try:
            await wait_for(lambda: bool(services), 10)
            started = time.monotonic()
            sealed_in_time = await drain(server.app)
            drained_at = time.monotonic()
            assert not server.app[READINESS].ready
            await server.runner.cleanup()
            finished = time.monotonic()
        finally:
            await client.close(publisher)
    assert not sealed_in_time
    assert services[0].close_started.is_set() and services[0].cancelled
    assert drained_at - started < DRAIN_TIMEOUT_S + 1.5
    # The cleanup's drain finds the deadline already spent: no second full wait.
    assert finished - started < DRAIN_TIMEOUT_S + 3.0, finished - started
    assert server.app[ROOMS].draining


async def test_a_second_drain_after_a_clean_one_returns_at_once(tmp_path: Path) -> None:
    server = await start_server(
        make_loaded(tmp_path, archive={"enabled": False}, compliance={"enabled": False})
    )
    rooms = server.app[ROOMS]
    rooms.create("quiet")
    assert await drain(server.app)
    assert not rooms.rooms and "quiet" in rooms.closed
    started = time.monotonic()
    assert await rooms.drain(60.0)
    await server.runner.cleanup()
    assert time.monotonic() - started < 2.0
