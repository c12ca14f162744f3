"""WHIP/WHEP conformance (RFC 9725): headers, trickle ICE via PATCH, CORS and every error case,
driven by tests/api/rfc_client.py, a client that uses no finrtc code."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice import stun

from finrtc.errors import NotFoundError
from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from finrtc.signaling.openapi import build_openapi
from tests.api import rfc_client
from tests.api.conftest import ORIGIN, bearer, expired_admin_token, participant_token
from tests.api.contract import check_response
from tests.conftest import RunningServer, make_loaded, start_server
from tests.support.media import PatternVideoTrack, ToneAudioTrack

SDP = "application/sdp"


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def server_remote_candidates(server: RunningServer, room: str, identity: str) -> list[Any]:
    """The candidates the server's ICE agent knows for this participant's peer connection."""
    participant = server.app[ROOMS].get(room).participants[identity]
    if participant.publication is not None:
        peer = participant.publication.peer
    else:
        peer = next(iter(participant.subscriptions.values())).peer
    pc = peer._pc
    transports = {t.receiver.transport.transport for t in pc.getTransceivers()}
    return [candidate for transport in transports for candidate in transport.getRemoteCandidates()]


def methods(header: str) -> set[str]:
    return {method.strip() for method in header.split(",")}


def host_ports(candidate_lines: list[str]) -> set[int]:
    return {int(line.split()[5]) for line in candidate_lines if " typ host" in line}


async def sample_offer(kind: str = "video") -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(PatternVideoTrack() if kind == "video" else kind, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return str(sdp)


async def test_trickle_publish_and_play(server: RunningServer, http: aiohttp.ClientSession) -> None:
    room = "trickle"
    endpoint = f"{server.base}/whip/{room}"
    publisher = await rfc_client.publish(
        http, endpoint, participant_token(room, "anna"), [PatternVideoTrack(), ToneAudioTrack()], trickle=True
    )
    viewer = await rfc_client.play(
        http,
        f"{server.base}/whep/{room}?participant=anna",
        participant_token(room, "olga", Role.OBSERVER),
        trickle=True,
    )
    try:
        assert publisher.url.startswith(f"{server.base}/whip/{room}/")
        assert viewer.url.startswith(f"{server.base}/whep/{room}/")
        for session in (publisher, viewer):
            assert session.etag.startswith('"') and session.etag.endswith('"')
            assert session.links == []  # no ICE servers configured
        await wait_for(
            lambda: all(viewer.received.get(k) and viewer.received[k].count > 10 for k in ("video", "audio"))
        )
        assert viewer.received["video"].last_size == (640, 480)
        # The server learnt the clients' host candidates from the PATCH bodies, not as
        # peer-reflexive addresses from connectivity checks.
        for identity, session in (("anna", publisher), ("olga", viewer)):
            known = server_remote_candidates(server, room, identity)
            hosts = {c.port for c in known if c.type == "host"}
            assert host_ports(session.offer_candidates) <= hosts, (identity, known)
        assert await rfc_client.delete(http, viewer) == 200
        assert await rfc_client.delete(http, publisher) == 200
        # The session is gone (404), or with it the emptied room, closed behind it (410).
        status, _ = await rfc_client.patch(http, publisher, "a=end-of-candidates\r\n")
        assert status in (404, 410)
        assert await rfc_client.delete(http, publisher) in (404, 410)
    finally:
        await rfc_client.close(viewer)
        await rfc_client.close(publisher)


async def test_full_offer_without_trickle_also_works(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    room = "plain"
    publisher = await rfc_client.publish(
        http, f"{server.base}/whip/{room}", participant_token(room, "a"), [PatternVideoTrack()], trickle=False
    )
    viewer = await rfc_client.play(
        http, f"{server.base}/whep/{room}", participant_token(room, "b"), trickle=False, kinds=("video",)
    )
    try:
        await wait_for(lambda: bool(viewer.received.get("video")) and viewer.received["video"].count > 5)
    finally:
        await rfc_client.close(viewer)
        await rfc_client.close(publisher)
    # Clients that vanish without DELETE: their sessions end, and their ICE state with them (it
    # lives on the resource, not in a table of its own).
    ended = {"whip": publisher.url.rsplit("/", 1)[1], "whep": viewer.url.rsplit("/", 1)[1]}
    await wait_for(lambda: room not in server.app[ROOMS].rooms)
    again = await rfc_client.publish(
        http, f"{server.base}/whip/{room}", participant_token(room, "a"), [PatternVideoTrack()]
    )
    try:
        live_room = server.app[ROOMS].get(room)
        ice = live_room.ice_credentials(again.url.rsplit("/", 1)[1], "whip")
        assert ice is not None and ice.etag == again.etag
        for kind, resource_id in ended.items():
            with pytest.raises(NotFoundError):
                live_room.ice_credentials(resource_id, kind)
    finally:
        assert await rfc_client.delete(http, again) == 200
        await rfc_client.close(again)


@pytest.fixture
async def live(server: RunningServer, http: aiohttp.ClientSession) -> AsyncIterator[rfc_client.Session]:
    session = await rfc_client.publish(
        http,
        f"{server.base}/whip/live",
        participant_token("live", "anna"),
        [PatternVideoTrack()],
        trickle=False,
    )
    await wait_for(lambda: session.pc.connectionState == "connected")
    yield session
    await rfc_client.close(session)


async def test_patch_error_cases(
    server: RunningServer, http: aiohttp.ClientSession, live: rfc_client.Session
) -> None:
    doc = build_openapi(server.loaded.config)
    template = "/whip/{room}/{resource}"
    fragment, _ = rfc_client.trickle_fragment(live.pc.localDescription.sdp)
    other_ice = fragment.replace("a=ice-ufrag:", "a=ice-ufrag:x").replace("a=ice-pwd:", "a=ice-pwd:y")
    candidate = next(line for line in fragment.splitlines() if line.startswith("a=candidate:"))
    many_candidates = "\r\n".join([candidate] * 65)
    malformed = fragment.replace("typ host", "").replace(" udp ", " ")
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("wrong etag", {"if_match": '"stale"'}, 412),
        ("weak etag", {"if_match": "W/" + live.etag}, 412),
        ("no If-Match", {"if_match": None}, 428),
        ("wrong content type", {"content_type": SDP}, 415),
        ("ICE restart", {"body": other_ice, "if_match": "*"}, 422),
        ("malformed candidate", {"body": malformed}, 400),
        ("not SDP", {"body": "hello world\r\n"}, 400),
        ("too many candidates", {"body": fragment.replace("a=end-of-candidates", many_candidates)}, 400),
        ("oversize", {"body": "a=x\r\n" * 40_000}, 413),
    ]
    for label, options, status in cases:
        body = options.pop("body", fragment)
        code, text = await rfc_client.patch(http, live, body, **options)
        assert code == status, (label, text)
        check_response(doc, "PATCH", template, code, json.loads(text))
    headers = {"Content-Type": rfc_client.TRICKLE_TYPE, "If-Match": live.etag}
    for label, auth, status in (
        ("no token", {}, 401),
        ("expired", bearer(expired_admin_token()), 401),
        ("someone else in the room", bearer(participant_token("live", "eve")), 403),
        ("token for another room", bearer(participant_token("other", "anna")), 403),
    ):
        async with http.patch(live.url, data=fragment, headers={**headers, **auth}) as response:
            assert response.status == status, (label, await response.text())
            check_response(doc, "PATCH", template, response.status, await response.json())
    token = bearer(live.token)
    for url in (live.url + "x", live.url.replace("/whip/", "/whep/")):
        async with http.patch(url, data=fragment, headers={**headers, **token}) as response:
            assert response.status == 404, await response.text()
    # RFC 9725: GET, HEAD, POST and PUT on a session URL are 405 with Allow.
    for method in ("GET", "HEAD", "POST", "PUT"):
        async with http.request(method, live.url, headers=token) as response:
            assert response.status == 405
            assert methods(response.headers["Allow"]) == {"DELETE", "OPTIONS", "PATCH"}
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        async with http.request(method, live.url.rsplit("/", 1)[0], headers=token) as response:
            assert response.status == 405
            assert methods(response.headers["Allow"]) == {"OPTIONS", "POST"}
    async with http.patch(live.url, data=fragment, headers={**headers, "Content-Type": SDP, **token}) as r:
        assert r.headers["Accept-Patch"] == rfc_client.TRICKLE_TYPE
    # None of it hurt the session: a valid PATCH (If-Match: * is allowed too) still succeeds.
    code, text = await rfc_client.patch(
        http, live, fragment.replace("a=end-of-candidates\r\n", ""), if_match="*"
    )
    assert code == 204, text
    assert live.pc.connectionState == "connected"


async def test_post_error_cases(server: RunningServer, http: aiohttp.ClientSession) -> None:
    doc = build_openapi(server.loaded.config)
    offer = await sample_offer()
    token = participant_token("room1", "anna")
    no_media = "\r\n".join(line for line in offer.splitlines() if not line.startswith("m=")) + "\r\n"
    cases: list[tuple[str, str, bytes, dict[str, str], int]] = [
        (
            "wrong content type",
            "/whip/room1",
            offer.encode(),
            {"Content-Type": "text/plain", **bearer(token)},
            415,
        ),
        ("not SDP", "/whip/room1", b"hello", {"Content-Type": SDP, **bearer(token)}, 400),
        ("not UTF-8", "/whip/room1", b"v=0\r\n\xff\xfe", {"Content-Type": SDP, **bearer(token)}, 400),
        ("no media", "/whip/room1", no_media.encode(), {"Content-Type": SDP, **bearer(token)}, 400),
        (
            "garbage SDP",
            "/whip/room1",
            b"v=0\r\nm=video x y\r\nqq\r\n",
            {"Content-Type": SDP, **bearer(token)},
            400,
        ),
        (
            "oversize",
            "/whip/room1",
            b"v=0\r\n" + b"a=x\r\n" * 40_000,
            {"Content-Type": SDP, **bearer(token)},
            413,
        ),
        ("no token", "/whip/room1", offer.encode(), {"Content-Type": SDP}, 401),
        (
            "expired token",
            "/whip/room1",
            offer.encode(),
            {"Content-Type": SDP, **bearer(expired_admin_token())},
            401,
        ),
        ("other room", "/whip/room2", offer.encode(), {"Content-Type": SDP, **bearer(token)}, 403),
        (
            "observer publishes",
            "/whip/room1",
            offer.encode(),
            {"Content-Type": SDP, **bearer(participant_token("room1", "obs", Role.OBSERVER))},
            403,
        ),
        (
            "no such room",
            "/whep/nowhere",
            offer.encode(),
            {"Content-Type": SDP, **bearer(participant_token("nowhere", "v"))},
            404,
        ),
        ("bad room name", "/whip/bad%20name", offer.encode(), {"Content-Type": SDP, **bearer(token)}, 400),
    ]
    for label, path, data, headers, status in cases:
        async with http.post(server.base + path, data=data, headers=headers) as response:
            payload = await response.json()
            assert response.status == status, (label, payload)
            assert payload["error"]["message"], label
            check_response(doc, "POST", "/" + path.split("/")[1] + "/{room}", status, payload)
            if status == 415:
                assert response.headers["Accept-Post"] == SDP
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # The server kept serving, and nothing was half-created.
    assert server.app[ROOMS].rooms == {}
    async with http.get(server.base + "/healthz") as response:
        assert response.status == 200
    first = await rfc_client.publish(http, f"{server.base}/whip/room1", token, [PatternVideoTrack()])
    try:
        async with http.post(
            f"{server.base}/whip/room1", data=offer, headers={"Content-Type": SDP, **bearer(token)}
        ) as r:
            assert r.status == 409
            check_response(doc, "POST", "/whip/{room}", 409, await r.json())
    finally:
        await rfc_client.delete(http, first)
        await rfc_client.close(first)


async def test_cors_for_browser_clients(server: RunningServer, http: aiohttp.ClientSession) -> None:
    endpoint = f"{server.base}/whip/cors"
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(endpoint, headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert {"authorization", "content-type", "if-match"} <= {h.strip() for h in allowed.split(",")}
        assert response.headers["Vary"] == "Origin"
    async with http.options(endpoint, headers={**preflight, "Origin": "https://evil.example"}) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    async with http.options(
        endpoint, headers={**preflight, "Access-Control-Request-Method": "PUT"}
    ) as response:
        assert response.status == 405
    async with http.options(endpoint) as response:
        assert response.status == 204 and response.headers["Accept-Post"] == SDP
        assert "Access-Control-Allow-Origin" not in response.headers
    async with http.options(endpoint + "/some-session") as response:
        assert response.headers["Accept-Patch"] == rfc_client.TRICKLE_TYPE
        assert methods(response.headers["Allow"]) == {"DELETE", "OPTIONS", "PATCH"}

    token = participant_token("cors", "anna")
    offer = await sample_offer()
    async with http.post(
        endpoint, data=offer, headers={"Content-Type": SDP, "Origin": ORIGIN, **bearer(token)}
    ) as r:
        assert r.status == 201
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Location", "ETag", "Link"} <= exposed
        location = r.headers["Location"]
    # Errors are readable by the page too.
    async with http.post(endpoint, data=b"x", headers={"Content-Type": SDP, "Origin": ORIGIN}) as r:
        assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.delete(server.base + location, headers={"Origin": ORIGIN, **bearer(token)}) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN


class StunResponder(asyncio.DatagramProtocol):
    """Answers STUN Binding requests, so a configured STUN URL resolves instantly on loopback."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.requests = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method == stun.Method.BINDING and request.message_class == stun.Class.REQUEST:
            self.requests += 1
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=request.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            self.transport.sendto(bytes(response), addr)  # type: ignore[attr-defined]


def closed_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_link_headers_announce_configured_ice_servers(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(StunResponder, local_addr=("127.0.0.1", 0))
    stun_port = transport.get_extra_info("sockname")[1]
    # A TURN URL over TCP to a closed port fails at once, so gathering stays fast.
    turn_url = f"turn:127.0.0.1:{closed_tcp_port()}?transport=tcp"
    loaded = make_loaded(
        tmp_path,
        archive={"enabled": False},
        compliance={"enabled": False},
        media={
            "ice_servers": [
                {"urls": [f"stun:127.0.0.1:{stun_port}"]},
                {"urls": [turn_url], "username": 'fin"user', "credential": "s3cr=t"},
            ]
        },
    )
    server = await start_server(loaded)
    try:
        session = await rfc_client.publish(
            http, f"{server.base}/whip/links", participant_token("links", "a"), [PatternVideoTrack()]
        )
        try:
            assert session.links == [
                f'<stun:127.0.0.1:{stun_port}>; rel="ice-server"',
                f'<{turn_url}>; rel="ice-server"; username="fin\\"user"; credential="s3cr=t"; '
                'credential-type="password"',
            ]
            assert responder.requests > 0  # the server itself used the STUN server
            # OPTIONS never hands out TURN credentials to unauthenticated callers.
            async with http.options(f"{server.base}/whip/links") as response:
                assert "Link" not in response.headers
        finally:
            await rfc_client.delete(http, session)
            await rfc_client.close(session)
    finally:
        await server.runner.cleanup()
        transport.close()
