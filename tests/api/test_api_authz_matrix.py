"""Authorization matrix: every route of the server × eight kinds of credentials it must refuse
(or, where the route allows that caller, the status of the next check), and no response that
shows one room's or role's data to a caller entitled only to another.

The route list comes from the application's router: a route without a row here fails the test.
A real aiortc publisher and viewer hold WHIP/WHEP sessions in the room, so the session routes
check ownership of live resources, not only "no such session".
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from finrtc.config import LoadedConfig
from finrtc.signaling.context import ROOMS as ROOMS_KEY
from finrtc.signaling.openapi import build_openapi
from tests.api.conftest import api_config, basic
from tests.api.contract import check_response
from tests.api.test_api_contract import routed
from tests.conftest import TEST_SECRET, RunningServer, start_server
from tests.support import webrtc_client as client
from tests.support.media import ToneAudioTrack

ROOM, OTHER, CLOSED = "vault", "elsewhere", "ended"
# Staff-only data of each room (its policy reaches agents, observers and admins only).
CANARY = {ROOM: "residency-vault-7f3a", OTHER: "residency-elsewhere-91c2", CLOSED: "residency-ended-55d0"}
CELLS = ("none", "expired", "wrong_secret", "alg_none", "other_room", "wrong_role", "customer", "closed_room")

# Who a route is for: its natural caller, the caller of the "wrong role" cell.
PUBLIC, ADMIN = "public", "admin"


@dataclass(frozen=True)
class Caller:
    identity: str
    role: str
    admin: bool = False
    can_publish: bool | None = None
    can_subscribe: bool = True


ADMIN_CALLER = Caller("ops", "observer", admin=True)
ANNA = Caller("anna", "agent")  # publishes in ROOM
OLGA = Caller("olga", "observer")  # watches anna in ROOM
CLEO = Caller("cleo", "customer")
BLIND = Caller("bea", "agent", can_subscribe=False)


@dataclass(frozen=True)
class Row:
    natural: Caller | str
    wrong_role: Caller | str
    expected: tuple[int, ...]  # in CELLS order
    body: Any = None
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _every(status: int) -> tuple[int, ...]:
    return (status,) * len(CELLS)


SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
DENIED_ADMIN_ON_ROOM = (401, 401, 401, 401, 403, 403, 403, 410)
MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/healthz"): Row(PUBLIC, PUBLIC, _every(200)),
    ("GET", "/readyz"): Row(PUBLIC, PUBLIC, _every(200)),
    ("GET", "/metrics"): Row(PUBLIC, PUBLIC, _every(200)),
    ("GET", "/openapi.json"): Row(PUBLIC, PUBLIC, _every(200)),
    ("GET", "/"): Row(PUBLIC, PUBLIC, _every(200)),
    ("GET", "/demo.js"): Row(PUBLIC, PUBLIC, _every(200)),
    ("GET", "/demo-i18n.js"): Row(PUBLIC, PUBLIC, _every(200)),
    # Dev mode only (server.dev_token_endpoint): anyone may mint; never on in production configs.
    ("POST", "/dev/token"): Row(PUBLIC, PUBLIC, _every(200),
                                {"room": ROOM, "identity": "dev", "role": "agent"}),
    ("OPTIONS", "/whip/{room}"): Row(PUBLIC, PUBLIC, _every(204)),
    ("OPTIONS", "/whep/{room}"): Row(PUBLIC, PUBLIC, _every(204)),
    ("OPTIONS", "/whip/{room}/{resource}"): Row(PUBLIC, PUBLIC, _every(204)),
    ("OPTIONS", "/whep/{room}/{resource}"): Row(PUBLIC, PUBLIC, _every(204)),
    # Room API: admins only; a room-scoped admin token only for its room; a closed room is 410.
    ("POST", "/v1/rooms"): Row(ADMIN_CALLER, ANNA, (401, 401, 401, 401, 403, 403, 403, 403),
                               {"name": "intruder", "policy": {"recording": False}}),
    ("GET", "/v1/rooms"): Row(ADMIN_CALLER, ANNA, (401, 401, 401, 401, 200, 403, 403, 200)),
    ("GET", "/v1/rooms/{room}"): Row(ADMIN_CALLER, ANNA, DENIED_ADMIN_ON_ROOM),
    ("DELETE", "/v1/rooms/{room}"): Row(ADMIN_CALLER, ANNA, DENIED_ADMIN_ON_ROOM),
    ("POST", "/v1/rooms/{room}/close"): Row(ADMIN_CALLER, ANNA, DENIED_ADMIN_ON_ROOM),
    ("DELETE", "/v1/rooms/{room}/participants/{identity}"): Row(ADMIN_CALLER, ANNA, DENIED_ADMIN_ON_ROOM),
    ("POST", "/v1/tokens"): Row(ADMIN_CALLER, ANNA, (401, 401, 401, 401, 403, 403, 403, 403),
                                {"room": ROOM, "identity": "mallory", "role": "agent"}),
    # Participant routes: the room's own tokens; one issued before its room was closed is revoked.
    ("GET", "/v1/rooms/{room}/events"): Row(ANNA, CLEO, (401, 401, 401, 401, 403, 101, 101, 401)),
    # Compliance is off in this server: an allowed caller learns the room has no session (409).
    ("GET", "/v1/rooms/{room}/compliance"): Row(ANNA, CLEO, (401, 401, 401, 401, 403, 403, 403, 401)),
    ("POST", "/v1/rooms/{room}/consent"): Row(CLEO, ANNA, (401, 401, 401, 401, 403, 403, 409, 401),
                                              {"granted": True}),
    # An allowed publisher or viewer gets as far as the SDP check (400).
    ("POST", "/whip/{room}"): Row(ANNA, OLGA, (401, 401, 401, 401, 403, 403, 400, 401), "v=0\r\n", SDP),
    ("POST", "/whep/{room}"): Row(OLGA, BLIND, (401, 401, 401, 401, 403, 403, 400, 401), "v=0\r\n", SDP),
    # Sessions: only their creator (or an admin) may change them.
    ("PATCH", "/whip/{room}/{resource}"): Row(ANNA, OLGA, (401, 401, 401, 401, 403, 403, 403, 401),
                                              "a=end-of-candidates\r\n", TRICKLE, (("If-Match", "*"),)),
    ("DELETE", "/whip/{room}/{resource}"): Row(ANNA, OLGA, (401, 401, 401, 401, 403, 403, 403, 401)),
    ("PATCH", "/whep/{room}/{resource}"): Row(OLGA, ANNA, (401, 401, 401, 401, 403, 403, 403, 401),
                                              "a=end-of-candidates\r\n", TRICKLE, (("If-Match", "*"),)),
    ("DELETE", "/whep/{room}/{resource}"): Row(OLGA, ANNA, (401, 401, 401, 401, 403, 403, 403, 401)),
}


def _claims(
    caller: Caller, room: str | None, *, issued_at: int | None = None, ttl_s: int = 600
) -> dict[str, Any]:
    now = int(time.time()) if issued_at is None else issued_at
    claims: dict[str, Any] = {
        "iss": "finrtc", "sub": caller.identity, "role": caller.role, "iat": now, "nbf": now,
        "exp": now + ttl_s, "can_subscribe": caller.can_subscribe,
        "can_publish": caller.role != "observer" if caller.can_publish is None else caller.can_publish,
    }
    if room is not None:
        claims["room"] = room
    if caller.admin:
        claims["admin"] = True
    return claims


def _signed(claims: dict[str, Any], secret: str = TEST_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@dataclass(frozen=True)
class Credential:
    token: str | None
    room: str  # the room the request's path names
    entitled: frozenset[str]  # rooms whose staff data this caller may see


def credential(cell: str, row: Row, closed_at: int) -> Credential:
    natural = row.natural
    if natural == PUBLIC:
        # Public routes ignore credentials; send the natural participant's to show that.
        natural = ANNA
    assert isinstance(natural, Caller)
    home = None if natural.admin else ROOM
    nobody: frozenset[str] = frozenset()
    if cell == "none":
        return Credential(None, ROOM, nobody)
    if cell == "expired":
        return Credential(_signed(_claims(natural, home, issued_at=int(time.time()) - 7200)), ROOM, nobody)
    if cell == "wrong_secret":
        return Credential(_signed(_claims(natural, home), "another-secret-" + "y" * 40), ROOM, nobody)
    if cell == "alg_none":
        return Credential(_unsigned(_claims(natural, home)), ROOM, nobody)
    if cell == "other_room":
        return Credential(_signed(_claims(natural, OTHER)), ROOM, _staff(natural, OTHER))
    if cell == "wrong_role":
        wrong = row.wrong_role if isinstance(row.wrong_role, Caller) else ANNA
        return Credential(_signed(_claims(wrong, ROOM)), ROOM, _staff(wrong, ROOM))
    if cell == "customer":
        return Credential(_signed(_claims(CLEO, ROOM)), ROOM, nobody)
    assert cell == "closed_room"
    issued = _claims(natural, CLOSED, issued_at=closed_at - 60)
    return Credential(_signed(issued), CLOSED, _staff(natural, CLOSED))


def _staff(caller: Caller, room: str) -> frozenset[str]:
    return frozenset({room}) if caller.role != "customer" else frozenset()


@dataclass
class World:
    server: RunningServer
    resources: dict[str, str]  # "whip" / "whep" -> session id in ROOM
    closed_at: int


@pytest.fixture
def server_config(tmp_path: Path) -> LoadedConfig:
    return api_config(tmp_path, demo_page=True, dev_token_endpoint=True)


@pytest.fixture
async def world(server_config: LoadedConfig, http: aiohttp.ClientSession) -> AsyncIterator[World]:
    server = await start_server(server_config)
    sessions: list[client.Session] = []
    try:
        for name in (ROOM, OTHER, CLOSED):
            async with http.post(server.base + "/v1/rooms", headers=basic(),
                                 json={"name": name, "policy": {"residency": CANARY[name]}}) as response:
                assert response.status == 201, await response.text()
        async with http.post(server.base + f"/v1/rooms/{CLOSED}/close", headers=basic()) as response:
            assert response.status == 200
        closed_at = int(server.app[ROOMS_KEY].closed[CLOSED].at)
        publisher = await client.publish(
            http, server.base, ROOM, _signed(_claims(ANNA, ROOM)), [ToneAudioTrack()]
        )
        sessions.append(publisher)
        viewer = await client.play(http, server.base, ROOM, _signed(_claims(OLGA, ROOM)),
                                   query="?participant=anna", kinds=("audio",), consume=False)
        sessions.append(viewer)
        resources = {kind: session.location.rsplit("/", 1)[1]
                     for kind, session in (("whip", publisher), ("whep", viewer))}
        yield World(server, resources, closed_at)
    finally:
        for session in sessions:
            await client.close(session)
        await server.runner.cleanup()


def _path(template: str, room: str, world: World) -> str:
    kind = template.split("/")[1]
    return (template.replace("{room}", room).replace("{identity}", "olga")
            .replace("{resource}", world.resources.get(kind, "none")))


async def _events(http: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, str]:
    """Open the events WebSocket (token in the query, as browsers do); the status and what came."""
    query = f"?after=0&token={token}" if token is not None else "?after=0"
    try:
        async with http.ws_connect(url.replace("http://", "ws://") + query) as socket:
            texts = []
            hello = await socket.receive_json(timeout=5)
            texts.append(json.dumps(hello))
            while True:
                try:
                    message = await socket.receive(timeout=0.3)
                except TimeoutError:
                    break
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                texts.append(message.data)
            return 101, "\n".join(texts)
    except aiohttp.WSServerHandshakeError as error:
        return error.status, error.message


async def _request(
    http: aiohttp.ClientSession, world: World, method: str, template: str, row: Row, cred: Credential
) -> tuple[int, str]:
    url = world.server.base + _path(template, cred.room, world)
    if template == "/v1/rooms/{room}/events":
        return await _events(http, url, cred.token)
    headers = dict(row.headers)
    if cred.token is not None:
        headers["Authorization"] = f"Bearer {cred.token}"
    kwargs: dict[str, Any] = {"headers": headers}
    if row.content_type is not None:
        headers["Content-Type"] = row.content_type
        kwargs["data"] = row.body
    elif row.body is not None:
        kwargs["json"] = row.body
    async with http.request(method, url, **kwargs) as response:
        text = await response.text()
        body = json.loads(text) if response.content_type == "application/json" else None
        check_response(build_openapi(world.server.loaded.config), method, template, response.status, body,
                       response.content_type)
        return response.status, text


async def test_every_route_has_a_row(world: World) -> None:
    assert routed(world.server.app) == set(MATRIX), (
        f"routes without a matrix row: {sorted(routed(world.server.app) - set(MATRIX))}; "
        f"rows without a route: {sorted(set(MATRIX) - routed(world.server.app))}"
    )


async def test_authorization_matrix(world: World, http: aiohttp.ClientSession) -> None:
    before = {name: room.to_json() for name, room in world.server.app[ROOMS_KEY].rooms.items()}
    wrong: list[str] = []
    leaks: list[str] = []
    for (method, template), row in sorted(MATRIX.items()):
        for cell, expected in zip(CELLS, row.expected, strict=True):
            cred = credential(cell, row, world.closed_at)
            status, text = await _request(http, world, method, template, row, cred)
            if status != expected:
                wrong.append(f"{method} {template} [{cell}]: {status}, expected {expected}: {text[:200]}")
            for room, canary in CANARY.items():
                if canary in text and room not in cred.entitled:
                    leaks.append(f"{method} {template} [{cell}] shows {room}'s staff data: {text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert not leaks, "\n".join(leaks)
    # Nothing a refused (or merely allowed-to-fail) caller did changed a room.
    after = {name: room.to_json() for name, room in world.server.app[ROOMS_KEY].rooms.items()}
    for state in (*before.values(), *after.values()):
        state.pop("session", None)
    assert after == before


async def test_leak_check_sees_staff_data(world: World, http: aiohttp.ClientSession) -> None:
    """The canaries do reach the callers entitled to them, so the matrix's leak check can fail."""
    url = world.server.base + f"/v1/rooms/{ROOM}/events"
    status, text = await _events(http, url, _signed(_claims(ANNA, ROOM)))
    assert status == 101 and CANARY[ROOM] in text
    status, text = await _events(http, url, _signed(_claims(CLEO, ROOM)))
    assert status == 101 and CANARY[ROOM] not in text and '"role": "customer"' in text
    async with http.get(world.server.base + "/v1/rooms", headers=basic()) as response:
        listed = await response.text()
    assert CANARY[ROOM] in listed and CANARY[OTHER] in listed
