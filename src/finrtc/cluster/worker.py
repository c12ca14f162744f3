"""One media worker process: the whole single-node server (rooms, aiortc, hook chains, archive,
compliance) on a private Unix socket that only the front listener talks to."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

from aiohttp import web

from finrtc.assembly import build_app
from finrtc.config import LoadedConfig
from finrtc.errors import ConfigError
from finrtc.signaling.context import READINESS, ROOMS

STATE_PATH = "/internal/state"
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """A worker whose front listener died (even by SIGKILL) gets SIGTERM and seals its calls:
    nobody could reach them any more, and the directory hands their rooms to other nodes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl: then we were re-parented already.
    if os.getppid() != parent_pid:
        raise ConfigError(f"the front listener (pid {parent_pid}) is gone; this worker stops")


async def worker_state(request: web.Request) -> web.Response:
    """What the front routes by: the rooms this worker holds (open, and recently closed ones whose
    names must keep coming here) and its load."""
    rooms = request.app[ROOMS]
    readiness = request.app[READINESS]
    return web.json_response({
        "ready": readiness.ready and not rooms.draining,
        "rooms": sorted(rooms.rooms),
        "remembered": sorted(name for name in rooms.closed if name not in rooms.rooms),
        "participants": sum(len(room.participants) for room in rooms.rooms.values()),
        "pid": os.getpid(),
    })


def build_worker_app(loaded: LoadedConfig) -> web.Application:
    app = build_app(loaded)
    app.router.add_get(STATE_PATH, worker_state)
    return app


def unix_site(runner: web.AppRunner, socket_path: Path) -> web.UnixSite:
    socket_path.unlink(missing_ok=True)
    return web.UnixSite(runner, str(socket_path), shutdown_timeout=1.0)
