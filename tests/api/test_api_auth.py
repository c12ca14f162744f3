"""Authorization matrix of the room API: every refusal is 401/403 with a JSON body, and nothing
changes (rooms, participants, policies are the same afterwards)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import jwt
import pytest

from finrtc.model import Role
from finrtc.signaling.openapi import build_openapi
from tests.api.conftest import (
    API_KEY,
    API_KEY_SECRET,
    admin_token,
    basic,
    bearer,
    expired_admin_token,
    participant_token,
)
from tests.api.contract import check_response
from tests.conftest import RunningServer

ROOM = "vault"
OTHER = "elsewhere"

# (method, concrete path, documented template, JSON body)
MUTATIONS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/rooms", "/v1/rooms", {"name": "intruder", "policy": {"recording": False}}),
    ("POST", f"/v1/rooms/{ROOM}/close", "/v1/rooms/{room}/close", None),
    ("DELETE", f"/v1/rooms/{ROOM}", "/v1/rooms/{room}", None),
    ("DELETE", f"/v1/rooms/{ROOM}/participants/alice", "/v1/rooms/{room}/participants/{identity}", None),
    ("POST", "/v1/tokens", "/v1/tokens", {"room": ROOM, "identity": "mallory", "role": "agent"}),
]
READS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/rooms", "/v1/rooms", None),
    ("GET", f"/v1/rooms/{ROOM}", "/v1/rooms/{room}", None),
]


def _bad_credentials() -> list[tuple[str, dict[str, str], int]]:
    return [
        ("no credentials", {}, 401),
        ("wrong key", basic("no-such-key", API_KEY_SECRET), 401),
        ("wrong secret", basic(API_KEY, "not-the-secret-" + "k" * 32), 401),
        ("not base64", {"Authorization": "Basic %%%"}, 401),
        ("unknown scheme", {"Authorization": "Digest abc"}, 401),
        ("expired admin token", bearer(expired_admin_token()), 401),
        ("admin token, wrong signature", bearer(admin_token(secret="forged-" + "z" * 40)), 401),
        ("admin token, not yet valid", bearer(admin_token(not_before=4_000_000_000)), 401),
        ("garbage token", bearer("not.a.jwt"), 401),
        ("agent token", bearer(participant_token(ROOM, "agent1", Role.AGENT)), 403),
        ("observer token", bearer(participant_token(ROOM, "obs1", Role.OBSERVER)), 403),
        ("customer token for another room", bearer(participant_token(OTHER, "cust", Role.CUSTOMER)), 403),
        ("admin token scoped to another room", bearer(admin_token(OTHER)), 403),
    ]


async def _snapshot(http: aiohttp.ClientSession, base: str) -> Any:
    async with http.get(base + "/v1/rooms", headers=basic()) as response:
        assert response.status == 200
        rooms = (await response.json())["rooms"]
    for room in rooms:
        room.pop("created")
    return sorted(rooms, key=lambda room: room["name"])


@pytest.fixture
async def seeded(server: RunningServer, http: aiohttp.ClientSession) -> RunningServer:
    for name, policy in ((ROOM, {"max_participants": 4}), (OTHER, {})):
        async with http.post(
            server.base + "/v1/rooms", json={"name": name, "policy": policy}, headers=basic()
        ) as response:
            assert response.status == 201, await response.text()
    return server


@pytest.mark.parametrize(
    "label,headers,status", _bad_credentials(), ids=lambda v: v if isinstance(v, str) else ""
)
async def test_refused_and_nothing_changed(
    seeded: RunningServer, http: aiohttp.ClientSession, label: str, headers: dict[str, str], status: int
) -> None:
    doc = build_openapi(seeded.loaded.config)
    before = await _snapshot(http, seeded.base)
    for method, path, template, body in [*READS, *MUTATIONS]:
        if (
            status == 403
            and label == "admin token scoped to another room"
            and path == "/v1/rooms"
            and method == "GET"
        ):
            continue  # a room-scoped admin may list: it sees only its own room (tested below)
        async with http.request(method, seeded.base + path, json=body, headers=headers) as response:
            payload = await response.json()
            assert response.status == status, (label, method, path, payload)
            assert set(payload) == {"error"} and payload["error"]["message"], payload
            check_response(doc, method, template, response.status, payload)
            if status == 401:
                assert "Basic" in response.headers["WWW-Authenticate"]
    assert await _snapshot(http, seeded.base) == before


async def test_unknown_key_and_wrong_secret_are_indistinguishable(
    seeded: RunningServer, http: aiohttp.ClientSession
) -> None:
    messages = []
    for headers in (basic("nobody", API_KEY_SECRET), basic(API_KEY, "wrong-" + "s" * 40)):
        async with http.get(seeded.base + "/v1/rooms", headers=headers) as response:
            messages.append(await response.json())
    assert messages[0] == messages[1]


def kid_token(secret: str, *, admin: bool = True, key: str = API_KEY) -> str:
    claims: dict[str, Any] = {
        "iss": "finrtc",
        "sub": "ops",
        "role": "observer",
        "room": ROOM,
        "iat": 0,
        "nbf": 0,
        "exp": 4_000_000_000,
    }
    if admin:
        claims["admin"] = True
        del claims["room"]
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": key})


async def test_accepted_credentials(seeded: RunningServer, http: aiohttp.ClientSession) -> None:
    for headers in (basic(), bearer(admin_token()), bearer(kid_token(API_KEY_SECRET))):
        async with http.get(seeded.base + f"/v1/rooms/{ROOM}", headers=headers) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["policy"]["max_participants"] == 4
    for label, token in (
        # A JWT naming an API key must be signed with that key's secret, not another.
        ("wrong secret for kid", kid_token("x" * 48)),
        ("unknown kid", kid_token(API_KEY_SECRET, key="nobody")),
        # API key secrets sign admin tokens only; participant tokens come from the API secret.
        ("participant token signed by a key", kid_token(API_KEY_SECRET, admin=False)),
    ):
        async with http.get(seeded.base + f"/v1/rooms/{ROOM}", headers=bearer(token)) as response:
            assert response.status == 401, label
        async with http.post(
            seeded.base + f"/whip/{ROOM}",
            data="v=0",
            headers={**bearer(token), "Content-Type": "application/sdp"},
        ) as response:
            assert response.status == 401, label


async def test_room_scoped_admin_sees_and_manages_only_its_room(
    seeded: RunningServer, http: aiohttp.ClientSession
) -> None:
    headers = bearer(admin_token(ROOM))
    async with http.get(seeded.base + "/v1/rooms", headers=headers) as response:
        assert [room["name"] for room in (await response.json())["rooms"]] == [ROOM]
    async with http.post(
        seeded.base + "/v1/tokens", headers=headers, json={"room": OTHER, "identity": "x", "role": "agent"}
    ) as response:
        assert response.status == 403
    async with http.post(
        seeded.base + "/v1/tokens", headers=headers, json={"room": ROOM, "identity": "x", "role": "agent"}
    ) as response:
        assert response.status == 201
    async with http.post(seeded.base + f"/v1/rooms/{ROOM}/close", headers=headers) as response:
        assert response.status == 200
    async with http.get(seeded.base + f"/v1/rooms/{OTHER}", headers=basic()) as response:
        assert response.status == 200


async def test_room_request_authorization_for_per_room_routes(
    server_config: Any, http: aiohttp.ClientSession
) -> None:
    """authorize_room_request (what the compliance routes get) admits API keys, admin tokens and
    the room's own participants, and nobody else."""
    from aiohttp import web

    from finrtc.room import RoomManager
    from finrtc.signaling.context import CONFIG, ROOMS
    from finrtc.signaling.http_errors import error_middleware
    from finrtc.signaling.room_api import authorize_room_request

    async def whoami(request: web.Request) -> web.Response:
        grant = authorize_room_request(request, request.match_info["room"])
        return web.json_response({"identity": grant.identity, "admin": grant.admin})

    app = web.Application(middlewares=[error_middleware])
    app[CONFIG] = server_config
    executor = ThreadPoolExecutor(1)
    app[ROOMS] = RoomManager(server_config, [], executor)
    app.router.add_get("/v1/rooms/{room}/whoami", whoami)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/v1/rooms/{ROOM}/whoami"
    try:
        for headers, status, identity in (
            (basic(), 200, f"apikey:{API_KEY}"),
            (bearer(admin_token()), 200, "ops"),
            (bearer(admin_token(ROOM)), 200, "ops"),
            (bearer(participant_token(ROOM, "cust1", Role.CUSTOMER)), 200, "cust1"),
            (bearer(participant_token(OTHER, "cust1", Role.CUSTOMER)), 403, None),
            (bearer(admin_token(OTHER)), 403, None),
            (basic(API_KEY, "wrong-" + "x" * 40), 401, None),
            ({}, 401, None),
        ):
            async with http.get(url, headers=headers) as response:
                body = await response.json()
                assert response.status == status, (headers, body)
                if identity is not None:
                    assert body["identity"] == identity
    finally:
        await runner.cleanup()
        executor.shutdown()
