"""The server process: dev-mode start, readiness, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from finrtc.auth import mint_token
from finrtc.model import Role
from tests.media.test_media_fanout import wait_for
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack

SECRET = "s" * 48


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_process(tmp_path: Path, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "finrtc",
        "serve",
        "--port",
        str(port),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "FINRTC_API_SECRET": SECRET},
    )
    base = f"http://127.0.0.1:{port}"
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert b"listening on" in line, line
    return process, base


async def test_dev_mode_serves_demo_and_drains_on_sigterm(tmp_path: Path) -> None:
    process, base = await start_process(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            async with http.post(
                f"{base}/dev/token", json={"room": "demo", "identity": "ann", "role": "agent"}
            ) as response:
                assert response.status == 200
                token = (await response.json())["token"]
            publisher = await client.publish(
                http, base, "demo", token, [PatternVideoTrack(), ToneAudioTrack()]
            )
            viewer_token = mint_token(SECRET, room="demo", identity="cust", role=Role.CUSTOMER)
            viewer = await client.play(http, base, "demo", viewer_token, "?role=agent")
            events: list[dict] = []
            async with http.ws_connect(f"{base}/v1/rooms/demo/events?token={viewer_token}&after=0") as ws:
                await wait_for(
                    lambda: viewer.received.get("video") is not None and viewer.received["video"].count > 10,
                    20,
                )
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)

                async def collect() -> None:
                    async for message in ws:
                        events.append(json.loads(message.data))

                await asyncio.wait_for(collect(), 15)
            code = await asyncio.wait_for(process.wait(), 15)
            assert code == 0
            assert time.monotonic() - started < 12  # default drain timeout 10 s
            types = [event["type"] for event in events]
            assert "server_draining" in types
            assert "session_ended" in types and "room_closed" in types
            # The publisher's tracks ended at the viewer when the room closed.
            await wait_for(lambda: viewer.received["video"].ended, 10)
            await client.close(viewer)
            await client.close(publisher)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        (tmp_path / "data").exists()
