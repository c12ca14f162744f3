"""Calls that end badly: a client that vanishes, a server that is killed or stopped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from finrtc.auth import mint_token
from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.conftest import archive_loaded, start_server
from tests.media.test_lifecycle import SECRET, start_process
from tests.media.test_media_fanout import token, wait_for
from tests.media.test_recorded_call import finrtc
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack

ROOT = Path(__file__).resolve().parents[2]


def verify(session_dir: Path, keys_dir: Path) -> tuple[int, dict]:
    result = finrtc(
        "verify",
        str(session_dir),
        "--signer-key",
        str(keys_dir / "signer.pub"),
        "--archive-key",
        str(keys_dir / "archive.key"),
        "--json",
        "--quiet",
    )
    return result.returncode, json.loads(result.stdout)


async def test_vanished_publisher_is_sealed_as_an_interruption(tmp_path: Path, http) -> None:
    _, loaded = archive_loaded(tmp_path, media={"publisher_timeout_s": 3.0})
    server = await start_server(loaded)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.vanishing_publisher",
        server.base,
        "gone",
        token("gone", "agent9"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == b"publishing"
        await wait_for(
            lambda: "gone" in server.app[ROOMS].rooms and server.app[ROOMS].get("gone").session is not None,
            10,
        )
        session_id = server.app[ROOMS].get("gone").session.session_id
        await asyncio.sleep(3.0)
        process.kill()  # no BYE, no DELETE: the client just disappears
        await process.wait()
        await wait_for(lambda: "gone" not in server.app[ROOMS].rooms, 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.runner.cleanup()
    code, report = verify(tmp_path / "archive" / "gone" / session_id, tmp_path / "keys")
    text = json.dumps(report)
    assert report["final_record"] is True
    assert "interruption" in text, text
    assert code in (0, 1), text


async def test_sigkill_mid_call_leaves_a_verifiable_interrupted_session(tmp_path: Path) -> None:
    process, base = await start_process(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        async with aiohttp.ClientSession() as http:
            agent_token = mint_token(SECRET, room="crash", identity="ann", role=Role.AGENT)
            publisher = await client.publish(
                http, base, "crash", agent_token, [PatternVideoTrack(320, 240), ToneAudioTrack()]
            )
            # Dev mode seals 2 s segments: after 6 s at least two are sealed, the third is open.
            await asyncio.sleep(6.0)
            os.kill(process.pid, signal.SIGKILL)
            # The server's recognizer workers die with it (else they would hold its pipes open).
            await asyncio.wait_for(process.wait(), 15)
            await client.close(publisher)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    sessions = list((tmp_path / "data" / "archive" / "crash").iterdir())
    assert len(sessions) == 1
    code, report = verify(sessions[0], tmp_path / "data" / "keys")
    assert code == 2, json.dumps(report)
    assert report["final_record"] is False
    assert report["segments_valid"] == report["segments_total"] >= 2
    assert report["last_sealed_media_time"] > 1.0


async def test_sigterm_seals_the_recording(tmp_path: Path) -> None:
    process, base = await start_process(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        async with aiohttp.ClientSession() as http:
            agent_token = mint_token(SECRET, room="term", identity="ann", role=Role.AGENT)
            publisher = await client.publish(
                http, base, "term", agent_token, [PatternVideoTrack(320, 240), ToneAudioTrack()]
            )
            await asyncio.sleep(3.0)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
            await client.close(publisher)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    sessions = list((tmp_path / "data" / "archive" / "term").iterdir())
    code, report = verify(sessions[0], tmp_path / "data" / "keys")
    assert report["final_record"] is True, json.dumps(report)
    assert code == 0, json.dumps(report)
