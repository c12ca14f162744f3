"""Bad input gets a clear JSON 4xx, creates nothing, and the server keeps serving."""

from __future__ import annotations

import time

import jwt
import pytest

from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.conftest import TEST_SECRET, make_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack

MINIMAL_BAD_SDP = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


async def post(http, url: str, body: str | bytes, auth: str | None, content_type: str = "application/sdp"):
    headers = {"Content-Type": content_type}
    if auth is not None:
        headers["Authorization"] = f"Bearer {auth}"
    async with http.post(url, data=body, headers=headers) as response:
        text = await response.text()
        return response.status, response.headers.get("Content-Type", ""), text


@pytest.mark.parametrize(
    ("make_auth", "status", "fragment"),
    [
        (lambda: None, 401, "missing Authorization"),
        (lambda: "not-a-jwt", 401, "malformed"),
        (lambda: token("r1", "a").rsplit(".", 1)[0] + "." + "A" * 43, 401, "signature"),
        (
            lambda: jwt.encode(
                {
                    "iss": "finrtc",
                    "sub": "a",
                    "role": "agent",
                    "room": "r1",
                    "can_publish": True,
                    "nbf": int(time.time()) - 100,
                    "exp": int(time.time()) - 60,
                },
                TEST_SECRET,
                algorithm="HS256",
            ),
            401,
            "expired",
        ),
        (
            lambda: jwt.encode(
                {
                    "iss": "finrtc",
                    "sub": "a",
                    "role": "agent",
                    "room": "r1",
                    "can_publish": True,
                    "nbf": int(time.time()),
                    "exp": int(time.time()) + 60,
                },
                "another-secret-" + "y" * 40,
                algorithm="HS256",
            ),
            401,
            "signature",
        ),
        (lambda: token("other-room", "a"), 403, "not 'r1'"),
        (lambda: token("r1", "watcher", Role.OBSERVER), 403, "may not publish"),
        (lambda: token("r1", "a", can_publish=False), 403, "may not publish"),
    ],
)
async def test_publish_rejected_without_valid_grant(server, http, make_auth, status, fragment) -> None:
    code, content_type, text = await post(http, f"{server.base}/whip/r1", MINIMAL_BAD_SDP, make_auth())
    assert code == status, text
    assert content_type.startswith("application/json")
    assert fragment in text
    assert "Traceback" not in text
    assert "r1" not in server.app[ROOMS].rooms


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        ("hello", "application/sdp", 400, "not an SDP offer"),
        ("v=0\r\n", "application/sdp", 400, "no media section"),
        (MINIMAL_BAD_SDP, "application/sdp", 400, "could not be parsed"),
        (b"v=0\xff\xfe", "application/sdp", 400, "UTF-8"),
        ("v=0", "text/plain", 415, "application/sdp"),
        ("v=0\r\n" + "a=x\r\n" * 60000, "application/sdp", 413, "larger than"),
    ],
)
async def test_bad_offers_are_refused_clearly(server, http, body, content_type, status, fragment) -> None:
    code, response_type, text = await post(
        http, f"{server.base}/whip/r2", body, token("r2", "a"), content_type
    )
    assert code == status, text
    assert response_type.startswith("application/json")
    assert fragment in text
    assert "Traceback" not in text
    room = server.app[ROOMS].rooms.get("r2")
    assert room is None or not room.participants


async def test_server_keeps_serving_after_bad_input(server, http) -> None:
    for _ in range(3):
        await post(http, f"{server.base}/whip/ok", "garbage", token("ok", "a"))
    publisher = await client.publish(http, server.base, "ok", token("ok", "a"), [PatternVideoTrack()])
    viewer = await client.play(
        http, server.base, "ok", token("ok", "b", Role.CUSTOMER), "?participant=a", kinds=("video",)
    )
    try:
        await wait_for(
            lambda: viewer.received.get("video") is not None and viewer.received["video"].count > 5
        )
    finally:
        await client.close(viewer)
        await client.close(publisher)


async def test_invalid_names_and_unknown_sessions(server, http) -> None:
    code, _, text = await post(http, f"{server.base}/whip/bad%20room", "v=0", token("r3", "a"))
    assert code == 400 and "room name" in text
    async with http.delete(
        f"{server.base}/whip/r3/nope", headers={"Authorization": f"Bearer {token('r3', 'a')}"}
    ) as r:
        assert r.status == 404
    async with http.get(f"{server.base}/whip/r3") as r:
        assert r.status == 405
        assert (await r.json())["error"]["code"] == "method_not_allowed"
    code, _, text = await post(http, f"{server.base}/whep/missing", "v=0", token("missing", "a"))
    assert code == 404 and "does not exist" in text


async def test_explicit_room_creation_required(tmp_path, http) -> None:
    loaded = make_loaded(
        tmp_path,
        rooms={"require_explicit_creation": True},
        archive={"enabled": False},
        compliance={"enabled": False},
    )
    running = await start_server(loaded)
    try:
        code, _, text = await post(
            http, f"{running.base}/whip/unknown", "v=0\r\nm=audio 9 x 0\r\n", token("unknown", "a")
        )
        assert code == 404 and "create it through the room API" in text
        assert "unknown" not in running.app[ROOMS].rooms
    finally:
        await running.runner.cleanup()


async def test_duplicate_publisher_is_a_conflict(server, http) -> None:
    first = await client.publish(http, server.base, "dup", token("dup", "a"), [PatternVideoTrack()])
    try:
        with pytest.raises(RuntimeError, match="409"):
            await client.publish(http, server.base, "dup", token("dup", "a"), [PatternVideoTrack()])
        code, _, text = await post(http, f"{server.base}/whip/dup", "v=0", token("dup", "a", Role.CUSTOMER))
        assert code == 409 and "already in room" in text
    finally:
        await client.close(first)
