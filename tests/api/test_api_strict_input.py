"""The findings of a schemathesis run against finrtc, each pinned as a deterministic request:
malformed input is a documented 4xx with a JSON body, schema-valid input is accepted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from finrtc.config import LoadedConfig
from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from finrtc.signaling.openapi import build_openapi
from tests.api.conftest import api_config, basic, bearer, participant_token
from tests.api.contract import check_response
from tests.conftest import RunningServer

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server_config(tmp_path: Path) -> LoadedConfig:
    return api_config(tmp_path, dev_token_endpoint=True)


async def _call(
    http: aiohttp.ClientSession, server: RunningServer, method: str, path: str, template: str,
    expect: int, **kwargs: Any,
) -> Any:
    async with http.request(method, server.base + path, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        assert response.status == expect, (method, path, body)
    check_response(build_openapi(server.loaded.config), method, template, expect, body)
    return body


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"room": "r\xc3", "identity": "i", "role": "agent"}'])
async def test_dev_token_body_that_is_not_utf8_is_400(
    server: RunningServer, http: aiohttp.ClientSession, body: bytes
) -> None:
    error = await _call(http, server, "POST", "/dev/token", "/dev/token", 400, data=body, headers=JSON)
    assert "UTF-8" in error["error"]["message"]


async def test_dev_token_checks_names_types_and_fields(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    for body in ({"room": "", "identity": "i", "role": "agent"},
                 {"room": "r", "identity": "i", "role": "agent", "admin": True},
                 {"room": "r", "identity": 7, "role": "agent"}):
        await _call(http, server, "POST", "/dev/token", "/dev/token", 400, json=body)
    await _call(http, server, "POST", "/dev/token", "/dev/token", 415, data=b"{}")
    token = await _call(http, server, "POST", "/dev/token", "/dev/token", 200,
                        json={"room": "r", "identity": "i", "role": "customer"})
    assert token["role"] == "customer"


@pytest.mark.parametrize("after", ["-1", "٣", "+1", "1_000", " 1", "1.0", "9" * 5000, str(2**63)])
async def test_events_after_that_is_no_sequence_number_is_400(
    server: RunningServer, http: aiohttp.ClientSession, after: str
) -> None:
    server.app[ROOMS].create("lobby")
    await _call(http, server, "GET", "/v1/rooms/lobby/events", "/v1/rooms/{room}/events", 400,
                params={"after": after}, headers=basic())


async def test_events_without_websocket_handshake_is_426_and_subscribes_nothing(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    room = server.app[ROOMS].create("lobby")
    token = participant_token("lobby", "ann", Role.AGENT)
    for _ in range(20):
        async with http.get(f"{server.base}/v1/rooms/lobby/events",
                            params={"token": token, "after": str(2**63 - 1)}) as response:
            assert response.status == 426 and response.headers["Upgrade"] == "websocket"
            check_response(build_openapi(server.loaded.config), "GET", "/v1/rooms/{room}/events", 426,
                           await response.json())
    assert not room.events._subscriptions, "a plain GET left subscriptions behind"


@pytest.mark.parametrize("path,template", [
    ("/whip/%C2%84", "/whip/{room}"), ("/whep/%C2%84/x", "/whep/{room}/{resource}"),
])
async def test_options_with_a_malformed_room_name_is_400(
    server: RunningServer, http: aiohttp.ClientSession, path: str, template: str
) -> None:
    await _call(http, server, "OPTIONS", path, template, 400)


async def test_integral_json_numbers_are_integers(server: RunningServer, http: aiohttp.ClientSession) -> None:
    token = await _call(http, server, "POST", "/v1/tokens", "/v1/tokens", 201, headers=basic(),
                        json={"room": "r1", "identity": "i1", "role": "agent", "ttl_s": 600.0})
    assert token["expires_at"] > 0
    await _call(http, server, "POST", "/v1/tokens", "/v1/tokens", 400, headers=basic(),
                json={"room": "r1", "identity": "i1", "role": "agent", "ttl_s": 600.5})
    room = await _call(http, server, "POST", "/v1/rooms", "/v1/rooms", 201, headers=basic(),
                       json={"name": "r2", "policy": {"max_participants": 4.0}})
    assert room["policy"]["max_participants"] == 4


async def test_policy_names_are_enumerated_in_the_document(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    policy = build_openapi(server.loaded.config)["components"]["schemas"]["RoomPolicy"]["properties"]
    assert policy["script"]["enum"] == ["mifid", None]
    assert policy["retention_class"]["enum"] == sorted(server.loaded.config.archive.retention_classes)
    await _call(http, server, "POST", "/v1/rooms", "/v1/rooms", 400, headers=basic(),
                json={"name": "r3", "policy": {"script": ""}})


async def test_room_without_compliance_is_409_and_closed_room_is_410(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    await _call(http, server, "POST", "/v1/rooms", "/v1/rooms", 201, headers=basic(), json={"name": "plain"})
    customer = bearer(participant_token("plain", "cleo", Role.CUSTOMER))
    await _call(http, server, "GET", "/v1/rooms/plain/compliance", "/v1/rooms/{room}/compliance", 409,
                headers=basic())
    await _call(http, server, "POST", "/v1/rooms/plain/consent", "/v1/rooms/{room}/consent", 409,
                headers=customer)
    await _call(http, server, "DELETE", "/v1/rooms/plain/participants/nobody",
                "/v1/rooms/{room}/participants/{identity}", 404, headers=basic())
    await _call(http, server, "POST", "/v1/rooms/plain/close", "/v1/rooms/{room}/close", 200, headers=basic())
    for method, path, template, headers in (
        ("GET", "/v1/rooms/plain", "/v1/rooms/{room}", basic()),
        ("GET", "/v1/rooms/plain/compliance", "/v1/rooms/{room}/compliance", basic()),
        ("POST", "/v1/rooms/plain/consent", "/v1/rooms/{room}/consent", customer),
        ("DELETE", "/v1/rooms/plain/participants/cleo", "/v1/rooms/{room}/participants/{identity}", basic()),
    ):
        await _call(http, server, method, path, template, 410, headers=headers)
    await _call(http, server, "GET", "/v1/rooms/never", "/v1/rooms/{room}", 404, headers=basic())
    # The name is free again.
    await _call(http, server, "POST", "/v1/rooms", "/v1/rooms", 201, headers=basic(), json={"name": "plain"})
    await _call(http, server, "GET", "/v1/rooms/plain", "/v1/rooms/{room}", 200, headers=basic())


@pytest.mark.parametrize(("method", "path"), [("PATCH", "/whip/r/abc"), ("GET", "/v1/rooms")])
async def test_authorization_header_that_is_not_utf8_is_401(
    server: RunningServer, method: str, path: str
) -> None:
    # aiohttp decodes header bytes with surrogate escapes; a token built from them used to be a 500.
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n".encode()
        + b"Authorization: Bearer \x84\xc2.a.b\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"401", status_line
