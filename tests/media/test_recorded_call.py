"""A real call through the server is recorded, sealed, verified and exported."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import av

from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.conftest import archive_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import OpusPacketTrack, PatternVideoTrack, ToneAudioTrack


def finrtc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finrtc", *args], capture_output=True, text=True, timeout=120
    )


async def test_real_call_is_recorded_verified_and_exported(tmp_path: Path, http) -> None:
    keys, loaded = archive_loaded(tmp_path)
    running = await start_server(loaded)
    room = "recorded"
    try:
        agent = await client.publish(
            http, running.base, room, token(room, "agent1"), [PatternVideoTrack(320, 240), ToneAudioTrack()]
        )
        customer = await client.publish(
            http,
            running.base,
            room,
            token(room, "cust1", Role.CUSTOMER),
            # Mono Opus, as browsers send it, forwarded unchanged into the archive.
            [PatternVideoTrack(320, 240), OpusPacketTrack(660)],
        )
        viewer = await client.play(
            http, running.base, room, token(room, "cust1", Role.CUSTOMER), "?participant=agent1"
        )
        await wait_for(
            lambda: viewer.received.get("video") is not None and viewer.received["video"].count > 20
        )
        session_id = running.app[ROOMS].get(room).session.session_id
        await asyncio.sleep(4.0)
        await client.close(viewer)
        assert await client.delete(http, running.base, customer) == 200
        assert await client.delete(http, running.base, agent) == 200
        await client.close(customer)
        await client.close(agent)
        await wait_for(lambda: room not in running.app[ROOMS].rooms, 15)
    finally:
        await running.runner.cleanup()

    session_dir = tmp_path / "archive" / room / session_id
    assert session_dir.is_dir()
    result = finrtc(
        "verify",
        str(session_dir),
        "--signer-key",
        str(keys.signer_pub),
        "--archive-key",
        str(keys.archive_key),
        "--json",
        "--quiet",
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    events = json.dumps(report)
    assert "participant_joined" in events or report

    out = tmp_path / "call.webm"
    result = finrtc(
        "export",
        "--reason",
        "test audit",
        str(session_dir),
        "--out",
        str(out),
        "--signer-key",
        str(keys.signer_pub),
        "--archive-key",
        str(keys.archive_key),
        "--quiet",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with av.open(str(out)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        assert kinds.count("video") >= 1 and kinds.count("audio") >= 1
        duration = float(container.duration or 0) / av.time_base
        decoded = sum(1 for _ in container.decode(video=0))
    # About 5 s of call (± one segment of slack on each end).
    assert 3.5 <= duration <= 8.0, duration
    assert decoded > 60
    # Both parties' audio decodes: the agent's (stereo, from aiortc's encoder) and the
    # customer's (mono Opus forwarded as sent), each about as long as the call.
    with av.open(str(out)) as container:
        audio_streams = [stream.index for stream in container.streams.audio]
    audio_seconds = []
    for index in audio_streams:
        with av.open(str(out)) as container:
            stream = container.streams[index]
            samples = sum(frame.samples for frame in container.decode(stream))
            audio_seconds.append(samples / stream.rate)
    assert len(audio_seconds) >= 2 and all(seconds > 3.0 for seconds in audio_seconds), audio_seconds

    # A copy for an auditor names its recipient; the plain export names nobody.
    marked = tmp_path / "for-auditor.webm"
    result = finrtc(
        "export",
        "--reason",
        "test audit",
        str(session_dir),
        "--out",
        str(marked),
        "--signer-key",
        str(keys.signer_pub),
        "--archive-key",
        str(keys.archive_key),
        "--quiet",
        "--mark-for",
        "auditor-jane",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    mark = json.loads((tmp_path / "for-auditor.webm.mark.json").read_text())
    found = finrtc("watermark", "extract", str(marked), "--json")
    assert found.returncode == 0, found.stdout + found.stderr
    assert mark["mark_id"] in found.stdout and "recipient" in found.stdout
    plain = finrtc("watermark", "extract", str(out), "--json")
    assert mark["mark_id"] not in plain.stdout
    with av.open(str(marked)) as container:
        assert sorted(s.type for s in container.streams).count("audio") >= 1
