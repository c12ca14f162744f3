"""Webhooks fed by a real finrtc server's room events (Room API create / close)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from finrtc.auth import mint_token
from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from finrtc.webhooks.sender import WebhookDispatcher
from finrtc.webhooks.settings import WebhookEndpoint, WebhooksConfig
from finrtc.webhooks.signing import verify_signature
from tests.conftest import TEST_SECRET, RunningServer
from tests.ops.test_ops_webhooks import receiver_factory  # noqa: F401  (fixture)


async def test_room_lifecycle_reaches_the_backend_signed(
    server: RunningServer, http: aiohttp.ClientSession, receiver_factory: Any  # noqa: F811
) -> None:
    receiver = await receiver_factory()
    dispatcher = WebhookDispatcher(
        WebhooksConfig(endpoints=[WebhookEndpoint(url=receiver.url, name="lifecycle")]),
        server.loaded.api_secret,
    )
    dispatcher.start()
    server.app[ROOMS].add_event_listener(dispatcher.on_room_event)
    admin = mint_token(TEST_SECRET, room=None, identity="backend", role=Role.OBSERVER, admin=True)
    headers = {"Authorization": f"Bearer {admin}"}

    async with http.post(
        f"{server.base}/v1/rooms", json={"name": "branch-7"}, headers=headers
    ) as response:
        assert response.status == 201, await response.text()
    async with http.delete(f"{server.base}/v1/rooms/branch-7", headers=headers) as response:
        assert response.status == 200, await response.text()

    await receiver.wait_for(2)
    assert await dispatcher.close(5.0)
    # Deliveries may overtake each other (concurrency 2): order by the room's sequence number.
    bodies = sorted((json.loads(r.body) for r in receiver.requests), key=lambda b: b["seq"])
    assert bodies[0]["type"] == "room_started" and bodies[0]["seq"] == 1
    assert "room_closed" in [b["type"] for b in bodies]
    assert all(b["room"] == "branch-7" for b in bodies)
    assert all(verify_signature(TEST_SECRET, r.headers, r.body) for r in receiver.requests)
