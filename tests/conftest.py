"""Shared fixtures: a real finrtc server on 127.0.0.1 with a random port."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from finrtc.archive.keys import KeyPaths, generate_keys
from finrtc.assembly import build_app
from finrtc.config import LoadedConfig, parse_config
from finrtc.services import prepare_data_dir

TEST_SECRET = "test-secret-" + "x" * 40

# aiortc's default ICE servers are public; make sure no code path falls back to them.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def make_loaded(tmp_path: Path, **sections: Any) -> LoadedConfig:
    data: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
    data.update(sections)
    config = parse_config(data)
    return LoadedConfig(config, dev_mode=False, source=None, api_secret=TEST_SECRET)


def archive_loaded(
    tmp_path: Path, archive_extra: dict[str, Any] | None = None, **sections: Any
) -> tuple[KeyPaths, LoadedConfig]:
    """A config that records to tmp_path/archive in 1 s segments, with fresh keys in tmp_path/keys."""
    keys = generate_keys(tmp_path / "keys")
    archive: dict[str, Any] = {
        "enabled": True,
        "directory": str(tmp_path / "archive"),
        "segment_seconds": 1.0,
        "signer_key_file": str(keys.signer_key),
        "archive_public_key_files": [str(keys.archive_pub)],
        **(archive_extra or {}),
    }
    sections.setdefault("compliance", {"enabled": False})
    return keys, make_loaded(tmp_path, archive=archive, **sections)


class RunningServer:
    def __init__(self, app: web.Application, runner: web.AppRunner, base: str, loaded: LoadedConfig) -> None:
        self.app = app
        self.runner = runner
        self.base = base
        self.loaded = loaded


async def start_server(loaded: LoadedConfig, **kwargs: Any) -> RunningServer:
    prepare_data_dir(loaded)
    app = build_app(loaded, **kwargs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return RunningServer(app, runner, f"http://127.0.0.1:{port}", loaded)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def server_config(tmp_path: Path) -> LoadedConfig:
    return make_loaded(tmp_path, archive={"enabled": False}, compliance={"enabled": False})


@pytest.fixture
async def server(server_config: LoadedConfig) -> AsyncIterator[RunningServer]:
    running = await start_server(server_config)
    yield running
    await running.runner.cleanup()
