"""Script compliance through real WebRTC: synthesized speech published by aiortc peers."""

from __future__ import annotations

import asyncio
import fractions
import json
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack

from finrtc.compliance.testing import FLITE, silence, synthesize, to_48k_stereo
from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.conftest import make_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import Pacer, PatternVideoTrack

pytestmark = pytest.mark.skipif(FLITE is None, reason="Debian flite is needed to synthesize speech")

AGENT_LINES = {
    "identity": "My name is Alice and I am a licensed insurance agent.",
    "product": "This policy is issued by the Harbor insurance company.",
    "risk": "Returns are not guaranteed and the value of your policy can go down.",
    "exclusions": "The policy does not cover pre existing conditions.",
}
CONFIRMATION = "I have understood and I agree."


class SpeechTrack(MediaStreamTrack):
    """Plays 48 kHz stereo speech once, in real time, then silence (like a microphone)."""

    kind = "audio"

    def __init__(self, stereo: np.ndarray, delay_s: float = 0.0) -> None:
        super().__init__()
        self._samples = np.concatenate([np.zeros((int(48000 * delay_s), 2), np.int16), stereo])
        self._pacer = Pacer(0.02)

    async def recv(self) -> av.AudioFrame:
        index = await self._pacer.next()
        chunk = self._samples[index * 960 : (index + 1) * 960]
        if len(chunk) < 960:
            chunk = np.concatenate([chunk, np.zeros((960 - len(chunk), 2), np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        return frame


def speech(texts: list[str], folder: Path) -> np.ndarray:
    parts = []
    for text in texts:
        parts += [synthesize(text, folder), silence(0.8)]
    return to_48k_stereo(np.concatenate(parts))


async def report(http, base: str, room: str) -> dict:
    headers = {"Authorization": f"Bearer {token(room, 'supervisor', Role.OBSERVER)}"}
    async with http.get(f"{base}/v1/rooms/{room}/compliance", headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def run_call(
    tmp_path: Path,
    http,
    room: str,
    agent_lines: list[str],
    *,
    compliance: dict | None = None,
    customer_lines: tuple[str, ...] = (CONFIRMATION,),
    customer_first: tuple[str, ...] = (),
    speak: Callable[[list[str], Path], np.ndarray] = speech,
) -> tuple[dict, list[dict]]:
    """The customer says `customer_first`, the agent `agent_lines`, then the customer
    `customer_lines`; the final report and every room event. `compliance` replaces the demo
    script's configuration (the script named "demo" is the room's)."""
    loaded = make_loaded(
        tmp_path,
        archive={"enabled": False},
        compliance=compliance or {
            "scripts": {"demo": "builtin:demo_insurance_en"},
            "recognizer": {"transcribe": "on_demand"},
        },
        rooms={"default_policy": {"script": "demo"}},
    )
    server = await start_server(loaded)
    opening = speak(list(customer_first), tmp_path) if customer_first else np.zeros((0, 2), np.int16)
    agent_delay = len(opening) / 48000 + (0.5 if customer_first else 0.0)
    agent_speech = speak(agent_lines, tmp_path)
    # The customer's closing lines start 0.5 s after the agent's last one.
    closing_at = int(48000 * (agent_delay + 0.5)) + len(agent_speech)
    pause = np.zeros((closing_at - len(opening), 2), np.int16)
    customer_speech = np.concatenate([opening, pause, speak(list(customer_lines), tmp_path)])
    events: list[dict] = []
    try:
        agent = await client.publish(
            http,
            server.base,
            room,
            token(room, "alice"),
            [PatternVideoTrack(320, 240, fps=15), SpeechTrack(agent_speech, delay_s=agent_delay)],
        )
        customer = await client.publish(
            http,
            server.base,
            room,
            token(room, "bob", Role.CUSTOMER),
            [SpeechTrack(customer_speech)],
        )
        async with http.ws_connect(
            f"{server.base}/v1/rooms/{room}/events?token={token(room, 'alice')}&after=0"
        ) as ws:

            async def collect() -> None:
                async for message in ws:
                    events.append(json.loads(message.data))

            collector = asyncio.create_task(collect())
            await asyncio.sleep(len(customer_speech) / 48000 + 3.0)
            live = await report(http, server.base, room)
            assert live["status"] != "final"
            await client.delete(http, server.base, customer)
            await client.delete(http, server.base, agent)
            await client.close(customer)
            await client.close(agent)
            try:
                await wait_for(lambda: any(e["type"] == "compliance.report" for e in events), 60)
            except AssertionError:
                raise AssertionError([(e["type"], e.get("data")) for e in events]) from None
            collector.cancel()
        final = await report(http, server.base, room)
        assert room not in server.app[ROOMS].rooms or server.app[ROOMS].get(room).session is None
        return final, events
    finally:
        await server.runner.cleanup()


async def test_spoken_call_completes_every_stage_in_order(tmp_path: Path, http) -> None:
    final, events = await run_call(tmp_path, http, "sale-ok", list(AGENT_LINES.values()))
    stages = {stage["id"]: stage for stage in final["stages"]}
    assert [stage["status"] for stage in stages.values()] == ["completed"] * len(stages), stages
    times = [stage["media_time"] for stage in stages.values()]
    assert times == sorted(times)
    assert stages["customer_confirmation"]["participant"] == "bob"
    assert final["can_submit"] is True and final["status"] == "final"
    prompts = [e for e in events if e["type"] == "compliance.prompt"]
    assert prompts and prompts[0]["data"]["stage_id"] == "identity"


async def test_skipped_exclusions_are_missed_prompted_and_block_submission(tmp_path: Path, http) -> None:
    lines = [AGENT_LINES["identity"], AGENT_LINES["product"], AGENT_LINES["risk"]]
    final, events = await run_call(tmp_path, http, "sale-skip", lines)
    stages = {stage["id"]: stage for stage in final["stages"]}
    assert stages["exclusions"]["status"] == "missed", stages
    assert final["can_submit"] is False
    missed = [e for e in events if e["type"] == "compliance.stage_missed"]
    assert any(
        e["data"].get("stage", {}).get("id", e["data"].get("stage_id")) == "exclusions" for e in missed
    ), missed
    assert any(
        e["type"] == "compliance.prompt" and "exclusion" in json.dumps(e["data"]).lower() for e in events
    )
