"""Room lifecycle through the API with real aiortc peers, and strict validation of bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from finrtc.signaling.openapi import build_openapi
from tests.api.conftest import basic
from tests.api.contract import check_response
from tests.conftest import RunningServer
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def api(
    http: aiohttp.ClientSession,
    server: RunningServer,
    method: str,
    path: str,
    template: str,
    body: Any = None,
    *,
    expect: int,
) -> Any:
    async with http.request(method, server.base + path, json=body, headers=basic()) as response:
        payload = await response.json() if response.content_type == "application/json" else None
        assert response.status == expect, payload
        check_response(build_openapi(server.loaded.config), method, template, response.status, payload)
        return payload


async def mint(
    http: aiohttp.ClientSession, server: RunningServer, room: str, identity: str, role: str
) -> str:
    body = {"room": room, "identity": identity, "role": role, "ttl_s": 600}
    token = await api(http, server, "POST", "/v1/tokens", "/v1/tokens", body, expect=201)
    assert token["expires_at"] > time.time() + 500
    return str(token["token"])


async def room_state(http: aiohttp.ClientSession, server: RunningServer, room: str) -> Any:
    return await api(http, server, "GET", f"/v1/rooms/{room}", "/v1/rooms/{room}", expect=200)


async def test_room_lifecycle_with_real_peers(server: RunningServer, http: aiohttp.ClientSession) -> None:
    room = "advice-42"
    policy = {
        "recording": True,
        "retention_class": "default",
        "residency": "eu-central",
        "max_participants": 3,
        "require_consent": True,
        "script": "mifid",
    }
    async with http.post(
        server.base + "/v1/rooms", json={"name": room, "policy": policy}, headers=basic()
    ) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Location"] == f"/v1/rooms/{room}"
        created = await response.json()
    check_response(build_openapi(server.loaded.config), "POST", "/v1/rooms", 201, created)
    # The stored policy states every field; those the request left out are the defaults.
    assert created["policy"] == {**policy, "identity": {"require": []}}
    assert created["state"] == "idle" and created["explicit"]
    await api(http, server, "POST", "/v1/rooms", "/v1/rooms", {"name": room}, expect=409)

    agent_token = await mint(http, server, room, "agent-anna", "agent")
    viewer_token = await mint(http, server, room, "supervisor", "observer")
    publisher = await client.publish(
        http, server.base, room, agent_token, [PatternVideoTrack(), ToneAudioTrack()]
    )
    viewer = await client.play(http, server.base, room, viewer_token, query="?participant=agent-anna")
    try:
        await wait_for(lambda: bool(viewer.received.get("video")) and viewer.received["video"].count > 5)
        state = await room_state(http, server, room)
        assert state["state"] == "live" and state["session"]["id"]
        people = {p["identity"]: p for p in state["participants"]}
        assert set(people) == {"agent-anna", "supervisor"}
        assert people["agent-anna"]["publishing"] and people["agent-anna"]["role"] == "agent"
        assert sorted(t["kind"] for t in people["agent-anna"]["tracks"]) == ["audio", "video"]
        assert all(t["subscribers"] == 1 for t in people["agent-anna"]["tracks"])
        assert people["supervisor"]["subscriptions"] == 1
        listed = await api(http, server, "GET", "/v1/rooms", "/v1/rooms", expect=200)
        assert [r["name"] for r in listed["rooms"]] == [room]

        # Removing the viewer ends its WHEP session; the publisher stays.
        await api(
            http,
            server,
            "DELETE",
            f"/v1/rooms/{room}/participants/supervisor",
            "/v1/rooms/{room}/participants/{identity}",
            expect=204,
        )
        state = await room_state(http, server, room)
        assert [p["identity"] for p in state["participants"]] == ["agent-anna"]
        await wait_for(
            lambda: viewer.pc.connectionState in ("closed", "failed") or viewer.received["video"].ended,
            timeout=40,
        )
        await api(
            http,
            server,
            "DELETE",
            f"/v1/rooms/{room}/participants/supervisor",
            "/v1/rooms/{room}/participants/{identity}",
            expect=404,
        )
        # The room's event stream tells staff who removed whom.
        events_url = f"{server.base}/v1/rooms/{room}/events?after=0&token={agent_token}"
        async with http.ws_connect(events_url.replace("http://", "ws://")) as socket:
            hello = await socket.receive_json(timeout=10)
            assert hello["type"] == "hello" and hello["replay_complete"]
            seen = []
            while not any(e["type"] == "participant_left" for e in seen):
                seen.append(await socket.receive_json(timeout=10))
        left = next(e for e in seen if e["type"] == "participant_left")
        assert left["data"] == {"participant": "supervisor", "role": "observer", "reason": "removed by API"}

        session_id = state["session"]["id"]
        closed = await api(
            http,
            server,
            "POST",
            f"/v1/rooms/{room}/close",
            "/v1/rooms/{room}/close",
            {"reason": "call finished"},
            expect=200,
        )
        assert closed == {"name": room, "closed": True, "reason": "call finished", "last_session": session_id}
        # Closed, not unknown: 410 names the reason; the name can be created again.
        gone = await api(http, server, "GET", f"/v1/rooms/{room}", "/v1/rooms/{room}", expect=410)
        assert "call finished" in gone["error"]["message"]
        await api(http, server, "DELETE", f"/v1/rooms/{room}", "/v1/rooms/{room}", expect=410)
        # The publisher's session went with the room (410), and once a second has passed since it
        # was minted (iat has whole seconds) its token too (401): it was for the closed call.
        assert await client.delete(http, server.base, publisher) in (401, 410)
    finally:
        await client.close(viewer)
        await client.close(publisher)


async def test_delete_room_closes_it(server: RunningServer, http: aiohttp.ClientSession) -> None:
    await api(http, server, "POST", "/v1/rooms", "/v1/rooms", {"name": "short"}, expect=201)
    closed = await api(http, server, "DELETE", "/v1/rooms/short", "/v1/rooms/{room}", expect=200)
    assert closed["closed"] is True and closed["last_session"] is None
    listed = await api(http, server, "GET", "/v1/rooms", "/v1/rooms", expect=200)
    assert listed["rooms"] == []


async def test_default_policy_fills_what_the_request_leaves_out(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    created = await api(
        http,
        server,
        "POST",
        "/v1/rooms",
        "/v1/rooms",
        {"name": "partial", "policy": {"recording": False}},
        expect=201,
    )
    defaults = server.loaded.config.rooms.default_policy.model_dump()
    assert created["policy"] == {**defaults, "recording": False}


BAD_ROOM_BODIES: list[tuple[Any, str]] = [
    ({"name": "r1", "policy": {"max_participants": 0}}, "policy.max_participants"),
    ({"name": "r1", "policy": {"max_participants": "4"}}, "policy.max_participants"),
    ({"name": "r1", "policy": {"recording": "yes"}}, "policy.recording"),
    ({"name": "r1", "policy": {"colour": "blue"}}, "policy.colour: unknown field"),
    ({"name": "r1", "policy": {"script": "nope"}}, "policy.script: unknown script 'nope'"),
    ({"name": "r1", "policy": {"retention_class": "forever"}}, "policy.retention_class"),
    ({"name": "r1", "policy": []}, "policy"),
    ({"name": "r1", "extra": 1}, "extra: unknown field"),
    ({"policy": {}}, "name: required"),
    ({"name": "bad name!"}, "name: invalid room name"),
    ([1, 2], "JSON object"),
]


async def test_invalid_room_requests_name_the_field(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    doc = build_openapi(server.loaded.config)
    for body, fragment in BAD_ROOM_BODIES:
        async with http.post(server.base + "/v1/rooms", json=body, headers=basic()) as response:
            payload = await response.json()
            assert response.status == 400, (body, payload)
            assert fragment in payload["error"]["message"], (body, payload)
            check_response(doc, "POST", "/v1/rooms", 400, payload)
    for data, content_type, status in (
        (b"{not json", "application/json", 400),
        (b"name=r1", "application/x-www-form-urlencoded", 415),
        (b'{"name": "' + b"x" * 200_000 + b'"}', "application/json", 413),
    ):
        async with http.post(
            server.base + "/v1/rooms", data=data, headers={**basic(), "Content-Type": content_type}
        ) as response:
            payload = await response.json()
            assert response.status == status, payload
            check_response(doc, "POST", "/v1/rooms", status, payload)
    listed = await api(http, server, "GET", "/v1/rooms", "/v1/rooms", expect=200)
    assert listed["rooms"] == []
    async with http.get(server.base + "/healthz") as response:
        assert response.status == 200


async def test_token_requests_are_validated(server: RunningServer, http: aiohttp.ClientSession) -> None:
    doc = build_openapi(server.loaded.config)
    for body, fragment in (
        ({"room": "r", "identity": "i", "role": "boss"}, "role"),
        ({"room": "r", "identity": "i", "role": "agent", "ttl_s": 0}, "ttl_s"),
        ({"room": "r", "identity": "i", "role": "agent", "ttl_s": 10**9}, "ttl_s"),
        ({"room": "r", "identity": "i i", "role": "agent"}, "identity: invalid identity"),
        ({"room": "r", "identity": "i", "role": "agent", "admin": True}, "admin: unknown field"),
    ):
        async with http.post(server.base + "/v1/tokens", json=body, headers=basic()) as response:
            payload = await response.json()
            assert response.status == 400 and fragment in payload["error"]["message"], payload
            check_response(doc, "POST", "/v1/tokens", 400, payload)
