"""Where the server is put together: every long-lived resource, its start and its teardown.

Each resource is one aiohttp cleanup context, appended in dependency order, so aiohttp tears
them down in reverse: readiness drops before the rooms drain, the rooms drain (recordings
sealed, room-closed events sent) while webhooks, the media thread pool and the session
services are still up, and each of those closes after everything that used it.

    services (archive, compliance workers) -> media thread pool -> webhooks -> rooms
        -> readiness -> event-loop lag probe

Signaling only registers routes (`finrtc.signaling.server.add_routes`); `finrtc serve` calls
`build_app` and, on SIGTERM, `drain` while still listening, then the app's cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from finrtc import metrics
from finrtc.config import LoadedConfig
from finrtc.hooks.chain import HookProvider
from finrtc.hooks.loader import load_hooks
from finrtc.media.aiortc_patches import accept_rsa_dtls_peers, add_h264_profiles, pin_host_addresses
from finrtc.room import RoomManager
from finrtc.services import Services
from finrtc.session import ExtensionFactory
from finrtc.signaling.context import CONFIG, READINESS, ROOMS, Readiness
from finrtc.signaling.http_errors import error_middleware, quiet_malformed_request_logs
from finrtc.signaling.server import add_routes, request_context
from finrtc.threads import name_native_thread
from finrtc.webhooks.sender import WebhookDispatcher

MEDIA_THREADS: web.AppKey[ThreadPoolExecutor] = web.AppKey("media_threads", ThreadPoolExecutor)
LAG_PROBE_INTERVAL_S = 0.1
# Room-closed and session-ended webhooks are worth a short wait at shutdown; a dead backend is not.
WEBHOOK_FLUSH_MAX_S = 5.0


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
    hooks = list(hook_factories) if hook_factories is not None else load_hooks(
        config.hooks, loaded.source.parent if loaded.source else None
    )
    pin_host_addresses(config.media.bind_addresses)
    accept_rsa_dtls_peers()
    add_h264_profiles()
    quiet_malformed_request_logs()
    # Built now so a bad webhook secret reference fails at start-up, naming its key.
    webhooks = WebhookDispatcher.from_loaded(loaded)
    app = web.Application(
        middlewares=[request_context, error_middleware], client_max_size=config.server.max_body_bytes
    )
    app[CONFIG] = loaded
    readiness = Readiness()
    app[READINESS] = readiness

    async def session_services(app: web.Application) -> AsyncIterator[None]:
        if services is not None:
            services.start()
        yield
        if services is not None:
            await services.close()

    async def media_threads(app: web.Application) -> AsyncIterator[None]:
        pool = ThreadPoolExecutor(
            config.media.worker_threads, thread_name_prefix="finrtc-media", initializer=name_native_thread
        )
        app[MEDIA_THREADS] = pool
        yield
        pool.shutdown(wait=True, cancel_futures=True)

    async def webhook_delivery(app: web.Application) -> AsyncIterator[None]:
        webhooks.start()
        yield
        await webhooks.close(min(config.server.drain_timeout_s, WEBHOOK_FLUSH_MAX_S))

    async def room_manager(app: web.Application) -> AsyncIterator[None]:
        rooms = RoomManager(loaded, hooks, app[MEDIA_THREADS], factories)
        rooms.add_event_listener(webhooks.on_room_event)
        app[ROOMS] = rooms
        yield
        await rooms.drain(config.server.drain_timeout_s)

    async def ready_flag(app: web.Application) -> AsyncIterator[None]:
        readiness.ready, readiness.reason = True, "ready"
        yield
        readiness.ready, readiness.reason = False, "shutting down"

    for context in (session_services, media_threads, webhook_delivery, room_manager, ready_flag):
        app.cleanup_ctx.append(context)
    app.cleanup_ctx.append(_measure_loop_lag)
    add_routes(app, services)
    return app


async def drain(app: web.Application) -> bool:
    """SIGTERM: /readyz goes false first so load balancers stop sending, then every room is
    closed (recordings sealed) within `server.drain_timeout_s`, while the server still listens."""
    readiness = app[READINESS]
    readiness.ready, readiness.reason = False, "draining"
    return await app[ROOMS].drain(app[CONFIG].config.server.drain_timeout_s)


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
