"""`finrtc serve` and `finrtc token`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from finrtc.assembly import build_app, drain
from finrtc.auth import mint_token
from finrtc.config import LoadedConfig, load_config
from finrtc.model import Role
from finrtc.services import prepare_data_dir

log = logging.getLogger("finrtc.server")


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (default: dev mode, loopback only)")
    parser.add_argument("--data-dir", help="data folder (keys, archive); default ./finrtc-data")


async def serve(loaded: LoadedConfig) -> int:
    prepare_data_dir(loaded)
    app = build_app(loaded)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None,
        # aiohttp's own default (an hour) would let slow-header clients hold sockets that long.
        keepalive_timeout=loaded.config.server.idle_connection_timeout_s,
    )
    await runner.setup()
    server = loaded.config.server
    site = web.TCPSite(runner, server.host, server.port, shutdown_timeout=1.0)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        print(
            f"finrtc: error: cannot listen on {server.host}:{server.port}: {error.strerror}", file=sys.stderr
        )
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    mode = "dev mode (embedded config, loopback only)" if loaded.dev_mode else f"config {loaded.source}"
    print(f"finrtc listening on {loaded.base_url} — {mode}; data in {loaded.data_dir}", flush=True)
    if server.demo_page:
        print(f"demo page: {loaded.base_url}/?room=demo", flush=True)
    await stop.wait()
    await drain(app)
    await runner.cleanup()
    return 0


def run_serve(args: argparse.Namespace) -> int:
    loaded = load_config(args.config, data_dir=args.data_dir, host=args.host, port=args.port)
    from finrtc.logging_setup import configure_logging

    configure_logging(loaded.config.logging.level, loaded.config.logging.format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep serving without it
        return asyncio.run(serve(loaded))
    return uvloop.run(serve(loaded))


def run_token(args: argparse.Namespace) -> int:
    loaded = load_config(args.config, data_dir=args.data_dir)
    token = mint_token(
        loaded.api_secret,
        room=args.room,
        identity=args.identity,
        role=Role(args.role),
        ttl_s=args.ttl,
        can_publish=False if args.no_publish else None,
        can_subscribe=not args.no_subscribe,
        admin=args.admin,
    )
    print(token)
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    serve_parser = subparsers.add_parser("serve", help="run the media server")
    _config_arguments(serve_parser)
    serve_parser.add_argument("--host", help="HTTP listen address (default from config: 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="HTTP port (default from config: 8080)")
    serve_parser.set_defaults(handler=run_serve)

    token_parser = subparsers.add_parser("token", help="print an access token (JWT) for a participant")
    _config_arguments(token_parser)
    token_parser.add_argument("--room", help="room name (omit only with --admin)")
    token_parser.add_argument("--identity", required=True, help="participant identity (the JWT sub)")
    token_parser.add_argument("--role", required=True, choices=[role.value for role in Role])
    token_parser.add_argument("--ttl", type=int, default=3600, help="seconds until expiry (default 3600)")
    token_parser.add_argument("--no-publish", action="store_true", help="deny publishing")
    token_parser.add_argument("--no-subscribe", action="store_true", help="deny subscribing")
    token_parser.add_argument("--admin", action="store_true", help="room API access (all rooms if no --room)")
    token_parser.set_defaults(handler=run_token)
