"""Starting an aiohttp app on a TCP port or Unix socket, and waiting for SIGTERM/SIGINT: shared by
the single-process server, the front listener and each media worker."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from finrtc.config import ServerConfig

SiteFactory = Callable[[web.AppRunner], web.BaseSite]


async def start_listener(app: web.Application, server: ServerConfig, site_for: SiteFactory,
                         where: str) -> web.AppRunner | None:
    """The running app, or None after printing why it cannot listen on `where`."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None,
        # aiohttp's own default (an hour) would let slow-header clients hold sockets that long.
        keepalive_timeout=server.idle_connection_timeout_s,
    )
    await runner.setup()
    site = site_for(runner)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        print(f"finrtc: error: cannot listen on {where}: {error.strerror}", file=sys.stderr)
        return None
    return runner


def tcp_site(server: ServerConfig) -> SiteFactory:
    return lambda runner: web.TCPSite(runner, server.host, server.port, shutdown_timeout=1.0)


async def wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
