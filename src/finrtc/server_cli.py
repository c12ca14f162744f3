"""`finrtc serve` and `finrtc token`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from finrtc.assembly import build_app, drain
from finrtc.auth import mint_token
from finrtc.config import LoadedConfig, load_config
from finrtc.errors import ConfigError
from finrtc.listener import start_listener, tcp_site, wait_for_stop
from finrtc.model import Role
from finrtc.services import prepare_data_dir

log = logging.getLogger("finrtc.server")


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (default: dev mode, loopback only)")
    parser.add_argument("--data-dir", help="data folder (keys, archive); default ./finrtc-data")


async def serve(loaded: LoadedConfig) -> int:
    """One process: the whole server on its TCP port (one worker, no room directory)."""
    prepare_data_dir(loaded)
    app = build_app(loaded)
    server = loaded.config.server
    runner = await start_listener(app, server, tcp_site(server), f"{server.host}:{server.port}")
    if runner is None:
        return 2
    mode = "dev mode (embedded config, loopback only)" if loaded.dev_mode else f"config {loaded.source}"
    print(f"finrtc listening on {loaded.base_url} — {mode}; data in {loaded.data_dir}", flush=True)
    if server.demo_page:
        print(f"demo page: {loaded.base_url}/?room=demo", flush=True)
    await wait_for_stop()
    await drain(app)
    await runner.cleanup()
    return 0


async def serve_worker(loaded: LoadedConfig, socket_path: Path) -> int:
    """A media worker of `serve --workers N`: the same server on a Unix socket."""
    from finrtc.cluster.worker import build_worker_app, unix_site

    app = build_worker_app(loaded)
    runner = await start_listener(app, loaded.config.server, lambda r: unix_site(r, socket_path),
                                  str(socket_path))
    if runner is None:
        return 2
    await wait_for_stop()
    await drain(app)
    await runner.cleanup()
    return 0


def worker_count(requested: int | None, loaded: LoadedConfig) -> int:
    if requested is not None:
        return requested
    if loaded.config.server.workers is not None:
        return loaded.config.server.workers
    # The cores this process may run on (taskset, cgroup cpusets), not the machine's.
    return 1 if loaded.dev_mode else max(1, len(os.sched_getaffinity(0)))


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep serving without it
        return asyncio.run(main)
    return uvloop.run(main)


def _config_argv(args: argparse.Namespace) -> list[str]:
    """The arguments a worker needs to load exactly the config its front listener loaded."""
    argv: list[str] = []
    if args.config is not None:
        argv += ["--config", str(Path(args.config).resolve())]
    if args.data_dir is not None:
        argv += ["--data-dir", str(Path(args.data_dir).resolve())]
    if args.host is not None:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    return argv


def run_serve(args: argparse.Namespace) -> int:
    loaded = load_config(args.config, data_dir=args.data_dir, host=args.host, port=args.port)
    from finrtc.logging_setup import configure_logging

    configure_logging(loaded.config.logging.level, loaded.config.logging.format)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    workers = worker_count(args.workers, loaded)
    if workers == 1 and loaded.config.cluster.redis_url is None:
        return _run(serve(loaded))
    from finrtc.cluster.node import serve_node

    # Dev keys and the API secret exist before any worker loads the config.
    prepare_data_dir(loaded)
    return _run(serve_node(loaded, workers, _config_argv(args)))


def run_worker(args: argparse.Namespace) -> int:
    from finrtc.cluster.worker import die_with_parent
    from finrtc.logging_setup import configure_logging, set_process_fields

    die_with_parent(args.parent_pid)
    loaded = load_config(args.config, data_dir=args.data_dir, host=args.host, port=args.port)
    configure_logging(loaded.config.logging.level, loaded.config.logging.format)
    set_process_fields(worker=args.worker_id)
    return _run(serve_worker(loaded, Path(args.socket)))


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
    serve_parser.add_argument(
        "--workers", type=int,
        help="media worker processes (default server.workers, else one per core; 1 in dev mode)",
    )
    serve_parser.set_defaults(handler=run_serve)

    # Started by `serve --workers N` for each worker; not for people.
    worker_parser = subparsers.add_parser("worker")
    _config_arguments(worker_parser)
    worker_parser.add_argument("--host")
    worker_parser.add_argument("--port", type=int)
    worker_parser.add_argument("--worker-id", type=int, required=True)
    worker_parser.add_argument("--socket", required=True)
    worker_parser.add_argument("--parent-pid", type=int, required=True)
    worker_parser.set_defaults(handler=run_worker)

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
