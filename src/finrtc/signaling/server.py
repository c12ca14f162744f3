"""The server's HTTP routes and the request-context middleware; `finrtc.assembly` builds the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from importlib import resources
from typing import Literal

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from finrtc import metrics
from finrtc.auth import authorize_room, check_name, mint_token, verify_token
from finrtc.config_base import StrictModel
from finrtc.errors import AuthError
from finrtc.logging_setup import log_context
from finrtc.model import Role
from finrtc.services import Services
from finrtc.signaling import room_api, whip
from finrtc.signaling.compliance_api import compliance_routes
from finrtc.signaling.context import CONFIG, READINESS, ROOMS
from finrtc.signaling.http_errors import Handler
from finrtc.signaling.identity_api import identity_routes
from finrtc.signaling.parsing import check_name_fields, json_object, query_unsigned, validated

log = logging.getLogger(__name__)

# Clients only send pings and closes on the events socket; anything larger is abuse.
EVENTS_MAX_CLIENT_MESSAGE_BYTES = 4096


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every log line of a request (and of the tasks it starts) names the request and room."""
    with log_context(request_id=secrets.token_hex(6), room=request.match_info.get("room")):
        return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if readiness.ready:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "reason": readiness.reason}, status=503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def room_events(request: web.Request) -> web.WebSocketResponse:
    """A room's event stream over WebSocket; `?after=SEQ` resumes after a reconnect."""
    room_name = check_name(request.match_info["room"], "room name")
    loaded = request.app[CONFIG]
    if "Authorization" in request.headers:
        # Backends may use an API key (Basic) or an admin token here, like the room API.
        grant = room_api.authorize_room_request(request, room_name)
    else:
        # Browsers cannot set headers on a WebSocket: the token comes in the query.
        token = request.query.get("token")
        if not token:
            raise AuthError("pass the access token as ?token=... or an Authorization header")
        grant = verify_token(token, loaded.api_secret, loaded.config.auth.token_leeway_s)
        request.app[ROOMS].check_token_current(grant)
        authorize_room(grant, room_name)
    after = query_unsigned(request, "after", "an event sequence number")
    room = request.app[ROOMS].get(room_name)
    socket = web.WebSocketResponse(heartbeat=20, max_msg_size=EVENTS_MAX_CLIENT_MESSAGE_BYTES)
    if not socket.can_prepare(request).ok:
        # Checked before subscribing: a plain GET must not leave a subscription behind.
        raise web.HTTPUpgradeRequired(
            headers={"Upgrade": "websocket"},
            text="this URL is a WebSocket: send Connection: Upgrade, Upgrade: websocket and a "
            "Sec-WebSocket-Key (RFC 6455)",
        )
    subscription, complete = room.events.subscribe(grant.role, after)
    try:
        await socket.prepare(request)
    except BaseException:
        room.events.unsubscribe(subscription)
        raise
    try:
        await socket.send_json(
            {"type": "hello", "room": room_name, "role": grant.role.value, "replay_complete": complete}
        )

        async def pump() -> None:
            while True:
                event = await subscription.queue.get()
                if event is None or socket.closed:
                    return
                await socket.send_json(event.to_json())

        pump_task = asyncio.create_task(pump())
        try:
            async for message in socket:
                if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await pump_task
    finally:
        room.events.unsubscribe(subscription)
        if subscription.overflowed and not socket.closed:
            await socket.close(code=4008, message=b"too slow; reconnect with ?after=<last seq>")
    return socket


class DevTokenBody(StrictModel):
    room: str
    identity: str
    role: Literal["agent", "customer", "observer"]


async def dev_token(request: web.Request) -> web.Response:
    """Dev mode only: mint a token for the demo page."""
    body = await json_object(request, example='{"room": ..., "identity": ..., "role": ...}')
    parsed = validated(DevTokenBody, body)
    check_name_fields({"room": parsed.room, "identity": parsed.identity})
    role = Role(parsed.role)
    token = mint_token(
        request.app[CONFIG].api_secret, room=parsed.room, identity=parsed.identity, role=role,
        ttl_s=4 * 3600,
    )
    return web.json_response(
        {"token": token, "room": parsed.room, "identity": parsed.identity, "role": role.value}
    )


async def demo_page(request: web.Request) -> web.Response:
    html = resources.files("finrtc.signaling").joinpath("static/demo.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html")


async def demo_script(request: web.Request) -> web.Response:
    script = resources.files("finrtc.signaling").joinpath("static/demo.js").read_text(encoding="utf-8")
    return web.Response(text=script, content_type="application/javascript")


async def demo_translations(request: web.Request) -> web.Response:
    script = resources.files("finrtc.signaling").joinpath("static/demo-i18n.js").read_text(encoding="utf-8")
    return web.Response(text=script, content_type="application/javascript")


def _no_compliance(room: str) -> None:
    return None


def add_routes(app: web.Application, services: Services | None) -> None:
    """Every HTTP route of the server (the app itself is assembled in `finrtc.assembly`).
    Without `services` (tests with their own session extensions) no compliance or identity
    state exists to serve."""
    config = app[CONFIG].config
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/rooms/{room}/events", room_events)
    whip.add_routes(app)
    room_api.add_routes(app)
    lookup = services.compliance_lookup if services is not None else _no_compliance
    audit = services.archive_access.report_read if services is not None and (
        services.archive_access is not None) else None
    app.add_routes(compliance_routes(lookup, room_api.authorize_room_request, room_api.require_room,
                                     audit))
    if services is not None and services.identity is not None:
        identity = services.identity

        def identity_required(room: str) -> list[str]:
            found = app[ROOMS].rooms.get(room)
            policy = found.policy if found is not None else config.rooms.default_policy
            return list(policy.identity.require)

        app.add_routes(identity_routes(
            identity, room_api.authorize_room_request, identity_required, services.identity_recorder
        ))
    if config.server.demo_page:
        app.router.add_get("/", demo_page)
        app.router.add_get("/demo.js", demo_script)
        app.router.add_get("/demo-i18n.js", demo_translations)
    if config.server.dev_token_endpoint:
        app.router.add_post("/dev/token", dev_token)
