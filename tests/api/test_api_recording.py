"""Closing a room through the API seals its recording: `finrtc verify` accepts it as complete."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.api.conftest import API_KEY, API_KEY_SECRET, basic
from tests.api.test_api_rooms import wait_for
from tests.conftest import archive_loaded, start_server
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack


async def wait_live(http: aiohttp.ClientSession, base: str, room: str, media_s: float) -> Any:
    """Poll the room API until the call's media clock passes `media_s` seconds."""
    for _ in range(600):
        async with http.get(f"{base}/v1/rooms/{room}", headers=basic()) as response:
            state = await response.json()
        if state["session"] and state["session"]["media_time"] >= media_s:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"room {room} did not record {media_s} s of media")


async def record_call(http: aiohttp.ClientSession, base: str, room: str, media_s: float) -> str:
    """An agent publishes video until `media_s` s are recorded; the room is closed (sealed).

    Returns the sealed session's id."""
    async with http.post(base + "/v1/tokens", headers=basic(),
                         json={"room": room, "identity": "agent7", "role": "agent"}) as response:
        assert response.status == 201, await response.text()
        token = (await response.json())["token"]
    publisher = await client.publish(http, base, room, token, [PatternVideoTrack()])
    try:
        await wait_live(http, base, room, media_s)
        async with http.post(f"{base}/v1/rooms/{room}/close", headers=basic()) as response:
            assert response.status == 200
            return str((await response.json())["last_session"])
    finally:
        await client.close(publisher)


async def test_api_close_seals_a_live_recording(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    keys, loaded = archive_loaded(tmp_path, {"region": "ch"}, auth={"api_keys": {API_KEY: API_KEY_SECRET}})
    server = await start_server(loaded)
    room = "sealed-call"
    try:
        async with http.post(
            server.base + "/v1/rooms", headers=basic(), json={"name": room, "policy": {"residency": "ch"}}
        ) as response:
            assert response.status == 201
        async with http.post(
            server.base + "/v1/tokens",
            headers=basic(),
            json={"room": room, "identity": "agent7", "role": "agent"},
        ) as response:
            token = (await response.json())["token"]
        # Video only: the A/V drift check of `finrtc verify` is not what this test is about.
        publisher = await client.publish(http, server.base, room, token, [PatternVideoTrack()])
        try:
            async with http.get(f"{server.base}/v1/rooms/{room}", headers=basic()) as response:
                state = await response.json()
            assert "archive" in state["session"]["services"]
            state = await wait_live(http, server.base, room, 2.5)
            # Closed while media still flows: the API answers only once the recording is sealed.
            async with http.post(f"{server.base}/v1/rooms/{room}/close", headers=basic()) as response:
                assert response.status == 200
                closed = await response.json()
            assert closed["last_session"] == state["session"]["id"]
            await wait_for(lambda: publisher.pc.connectionState in ("closed", "failed"), timeout=40)
        finally:
            await client.close(publisher)
    finally:
        await server.runner.cleanup()
    session_dir = tmp_path / "archive" / room / closed["last_session"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "finrtc",
        "verify",
        str(session_dir),
        "--signer-key",
        str(keys.signer_pub),
        "--archive-key",
        str(keys.archive_key),
        "--json",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    report = json.loads(stdout)
    assert report["status"] == "valid" and report["final_record"] is True, report
    assert report["segments_valid"] == report["segments_total"] >= 2, report
    assert report["last_sealed_media_time"] >= 1.0, report


async def test_segment_boundaries_are_the_recorders_keyframe_schedule(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """With the encoder's own keyframe spacing far above the segment length, every 1 s segment
    still starts on a keyframe near its boundary: the recorder's request is the one schedule."""
    _keys, loaded = archive_loaded(
        tmp_path, auth={"api_keys": {API_KEY: API_KEY_SECRET}},
        media={"video": {"keyframe_interval_s": 60.0}},
    )
    server = await start_server(loaded)
    room = "boundaries"
    try:
        async with http.post(server.base + "/v1/rooms", headers=basic(), json={"name": room}) as response:
            assert response.status == 201
        session_id = await record_call(http, server.base, room, 4.5)
    finally:
        await server.runner.cleanup()
    records = sorted((tmp_path / "archive" / room / session_id / "records").glob("*.json"))
    bodies = [json.loads(path.read_text())["body"] for path in records]
    assert len(bodies) >= 4, len(bodies)
    for body in bodies[:-1]:  # the last segment ends with the call, at any length
        (span,) = [t for t in body["tracks"].values() if t["kind"] == "video"]
        assert span["starts_with_keyframe"], body["index"]
        assert 0.6 <= body["media_end"] - body["media_start"] <= 1.5, body
