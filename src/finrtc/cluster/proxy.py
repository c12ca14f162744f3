"""Forwarding one HTTP request (or WebSocket) to another listener: a worker's Unix socket or
another node. Bodies are small (SDP, JSON; bounded by server.max_body_bytes) and read whole;
responses are relayed with their status, headers and body unchanged, so a client sees exactly
what the owning process answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

# RFC 9110 section 7.6.1: connection-scoped headers are never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
WEBSOCKET_HANDSHAKE = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-accept", "sec-websocket-protocol",
})
# Events sent by the server (a final compliance report is the largest) and messages a client may
# send (the owner enforces its own, smaller limit).
UPSTREAM_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CLIENT_MAX_MESSAGE_BYTES = 64 * 1024
# Marks a request one node sent to another, so it is answered where it lands, never sent on.
FORWARDED_BY = "Finrtc-Forwarded-By"


class UpstreamError(Exception):
    """The listener a request was forwarded to did not answer (died, restarting, unreachable)."""


def forwarded_headers(request: web.Request, extra: Mapping[str, str] | None = None) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and lowered not in WEBSOCKET_HANDSHAKE:
            headers.add(name, value)
    peer = request.remote
    if peer:
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    for name, value in (extra or {}).items():
        headers[name] = value
    return headers


def _response_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in HOP_BY_HOP:
            headers.add(name, value)
    return headers


def is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def forward(
    request: web.Request, session: aiohttp.ClientSession, base_url: str, *,
    extra_headers: Mapping[str, str] | None = None, timeout_s: float = 30.0, body: bytes | None = None,
) -> web.Response:
    """Relay `request` to `base_url` + its path and query; the upstream's answer, verbatim."""
    payload = body if body is not None else await request.read()
    url = base_url + request.rel_url.raw_path_qs
    try:
        async with session.request(
            request.method, url, headers=forwarded_headers(request, extra_headers), data=payload,
            allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as upstream:
            content = await upstream.read()
            return web.Response(status=upstream.status, body=content,
                                headers=_response_headers(upstream.headers))
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        raise UpstreamError(f"{request.method} {request.path} to {base_url}: {error!r}") from None


async def forward_websocket(
    request: web.Request, session: aiohttp.ClientSession, base_url: str, *,
    extra_headers: Mapping[str, str] | None = None, timeout_s: float = 30.0,
) -> web.StreamResponse:
    """Relay a WebSocket both ways. A handshake the upstream refuses is answered with the
    upstream's own error (its checks run before its upgrade), fetched as a plain GET."""
    url = base_url + request.rel_url.raw_path_qs
    headers = forwarded_headers(request, extra_headers)
    try:
        upstream = await session.ws_connect(
            url, headers=headers, max_msg_size=UPSTREAM_MAX_MESSAGE_BYTES, autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0), heartbeat=None,
        )
    except aiohttp.WSServerHandshakeError:
        return await forward(request, session, base_url, extra_headers=extra_headers,
                             timeout_s=timeout_s, body=b"")
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        raise UpstreamError(f"WebSocket {request.path} to {base_url}: {error!r}") from None
    client = web.WebSocketResponse(max_msg_size=CLIENT_MAX_MESSAGE_BYTES, autoping=True)
    try:
        await client.prepare(request)
    except BaseException:
        await upstream.close()
        raise

    async def downstream() -> None:
        code, reason = aiohttp.WSCloseCode.GOING_AWAY, b""
        while True:
            message = await upstream.receive()
            if message.type is WSMsgType.TEXT:
                await client.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await client.send_bytes(message.data)
            elif message.type is WSMsgType.CLOSE:
                # The owner's close code (4008 "too slow", 1001 going away) reaches the client.
                code, reason = message.data, str(message.extra or "").encode()[:120]
                break
            else:
                break
        await client.close(code=code, message=reason)

    pump = asyncio.create_task(downstream())
    try:
        async for message in client:
            if message.type is WSMsgType.TEXT:
                await upstream.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await upstream.send_bytes(message.data)
            else:
                break
    except (ConnectionError, aiohttp.ClientError) as error:
        log.debug("WebSocket relay of %s ended: %r", request.path, error)
    finally:
        await upstream.close()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, ConnectionError,
                                 aiohttp.ClientError):
            await asyncio.wait_for(pump, timeout=5.0)
        pump.cancel()
        if not client.closed:
            await client.close()
    return client
