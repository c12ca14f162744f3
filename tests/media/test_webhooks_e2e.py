"""Real rooms send signed webhooks to a real HTTP receiver."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from finrtc.model import Role
from finrtc.webhooks.signing import verify_signature
from tests.conftest import make_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack

HOOK_SECRET = "whsec-" + "w" * 40


async def test_room_lifecycle_reaches_the_backend_signed(tmp_path: Path, http) -> None:
    received: list[dict] = []
    bad_signatures: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(HOOK_SECRET, request.headers, body, tolerance_s=300):
            bad_signatures.append(request.headers.get("Finrtc-Event-Id", "?"))
            return web.Response(status=400)
        # The same check must reject a tampered body.
        assert not verify_signature(HOOK_SECRET, request.headers, body + b" ", tolerance_s=300)
        received.append(json.loads(body))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hooks", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    loaded = make_loaded(
        tmp_path,
        archive={"enabled": False},
        compliance={"enabled": False},
        webhooks={"endpoints": [{"url": f"http://127.0.0.1:{port}/hooks", "secret": HOOK_SECRET}]},
    )
    server = await start_server(loaded)
    try:
        publisher = await client.publish(
            http, server.base, "hooked", token("hooked", "a1"), [PatternVideoTrack()]
        )
        viewer = await client.play(
            http,
            server.base,
            "hooked",
            token("hooked", "c1", Role.CUSTOMER),
            "?participant=a1",
            kinds=("video",),
        )
        await wait_for(
            lambda: viewer.received.get("video") is not None and viewer.received["video"].count > 3
        )
        await client.delete(http, server.base, viewer)
        await client.delete(http, server.base, publisher)
        await client.close(viewer)
        await client.close(publisher)
        types = lambda: [event.get("type") for event in received]  # noqa: E731
        await wait_for(lambda: "room_closed" in types(), 15)
        for expected in ("room_started", "participant_joined", "participant_left", "room_closed"):
            assert expected in types(), types()
        assert not bad_signatures
        ids = [event.get("id") for event in received]
        assert len(ids) == len(set(ids))
    finally:
        await server.runner.cleanup()
        await runner.cleanup()
