"""The aiohttp application: routes, middleware, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from finrtc import metrics
from finrtc.auth import authorize_room, check_name, mint_token, verify_token
from finrtc.compliance.routes import compliance_routes
from finrtc.config import LoadedConfig
from finrtc.errors import AuthError, BadRequestError
from finrtc.hooks.chain import HookProvider
from finrtc.hooks.loader import load_hooks
from finrtc.logging_setup import log_context
from finrtc.media.ice import pin_host_addresses
from finrtc.model import Role
from finrtc.room import RoomManager
from finrtc.services import Services
from finrtc.session import ExtensionFactory
from finrtc.signaling import room_api, whip
from finrtc.signaling.context import CONFIG, READINESS, ROOMS, Readiness
from finrtc.signaling.http_errors import Handler, error_middleware
from finrtc.threads import name_native_thread
from finrtc.webhooks.sender import WebhookDispatcher

log = logging.getLogger(__name__)

LAG_PROBE_INTERVAL_S = 0.1


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
        authorize_room(grant, room_name)
    after_text = request.query.get("after")
    try:
        after = int(after_text) if after_text is not None else None
    except ValueError:
        raise BadRequestError("after must be an event sequence number") from None
    room = request.app[ROOMS].get(room_name)
    subscription, complete = room.events.subscribe(grant.role, after)
    socket = web.WebSocketResponse(heartbeat=20)
    await socket.prepare(request)
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


async def dev_token(request: web.Request) -> web.Response:
    """Dev mode only: mint a token for the demo page."""
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise BadRequestError('send JSON: {"room": ..., "identity": ..., "role": ...}') from None
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    try:
        role = Role(str(body.get("role", "")))
    except ValueError:
        raise BadRequestError("role must be agent, customer or observer") from None
    room = check_name(str(body.get("room", "")), "room name")
    identity = check_name(str(body.get("identity", "")), "identity")
    token = mint_token(
        request.app[CONFIG].api_secret, room=room, identity=identity, role=role, ttl_s=4 * 3600
    )
    return web.json_response({"token": token, "room": room, "identity": identity, "role": role.value})


async def demo_page(request: web.Request) -> web.Response:
    html = resources.files("finrtc.signaling").joinpath("static/demo.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html")


async def demo_script(request: web.Request) -> web.Response:
    script = resources.files("finrtc.signaling").joinpath("static/demo.js").read_text(encoding="utf-8")
    return web.Response(text=script, content_type="application/javascript")


async def _measure_loop_lag(app: web.Application) -> AsyncIterator[None]:
    async def probe() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_INTERVAL_S)
            metrics.EVENT_LOOP_LAG.observe(max(0.0, time.perf_counter() - started - LAG_PROBE_INTERVAL_S))

    task = asyncio.create_task(probe())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _no_compliance(room: str) -> None:
    return None


def build_app(
    loaded: LoadedConfig,
    *,
    hook_factories: Sequence[HookProvider] | None = None,
    extension_factories: Sequence[ExtensionFactory] | None = None,
) -> web.Application:
    """The server. Session services (archive, compliance) come from the config unless a test
    passes its own `extension_factories`."""
    config = loaded.config
    services = Services(loaded) if extension_factories is None else None
    factories = services.factories if services is not None else list(extension_factories or ())
    if hook_factories is None:
        hook_factories = load_hooks(config.hooks, loaded.source.parent if loaded.source else None)
    pin_host_addresses(config.media.bind_addresses)
    # Built now so a bad webhook secret reference fails at start-up, naming its key.
    webhooks = WebhookDispatcher.from_loaded(loaded)
    executor = ThreadPoolExecutor(
        config.media.worker_threads, thread_name_prefix="finrtc-media", initializer=name_native_thread
    )
    app = web.Application(
        middlewares=[request_context, error_middleware], client_max_size=config.server.max_body_bytes
    )
    app[CONFIG] = loaded
    readiness = Readiness()
    app[READINESS] = readiness

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if services is not None:
            services.start()
        rooms = RoomManager(loaded, hook_factories, executor, factories)
        app[ROOMS] = rooms
        webhooks.start()
        rooms.add_event_listener(webhooks.on_room_event)
        readiness.ready = True
        readiness.reason = "ready"
        yield
        readiness.ready = False
        readiness.reason = "shutting down"
        await rooms.shutdown()
        # Room-closed and session-ended events are worth a short wait; a dead backend is not.
        await webhooks.close(min(config.server.drain_timeout_s, 5.0))
        if services is not None:
            await services.close()
        executor.shutdown(wait=True, cancel_futures=True)

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(_measure_loop_lag)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/rooms/{room}/events", room_events)
    whip.add_routes(app)
    room_api.add_routes(app)
    lookup = services.compliance_lookup if services is not None else _no_compliance
    app.add_routes(compliance_routes(lookup, room_api.authorize_room_request))
    if services is not None and services.identity is not None:
        from finrtc.identity.routes import identity_routes

        def identity_required(room: str) -> list[str]:
            found = app[ROOMS].rooms.get(room)
            policy = found.policy if found is not None else config.rooms.default_policy
            return list(policy.identity.require)

        app.add_routes(identity_routes(
            services.identity, room_api.authorize_room_request, identity_required, services.identity_recorder
        ))
    if config.server.demo_page:
        app.router.add_get("/", demo_page)
        app.router.add_get("/demo.js", demo_script)
    if config.server.dev_token_endpoint:
        app.router.add_post("/dev/token", dev_token)
    return app
