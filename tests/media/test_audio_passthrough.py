"""Opus passthrough: with no hook changing audio, viewers and the archive get the publisher's own
packets; a hook that changes audio, or `passthrough: false`, makes the server re-encode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from finrtc.hooks.contract import AudioChunk, FailurePolicy, Hook, Stage
from finrtc.model import EncodedPacket, MediaKind, Role
from finrtc.signaling.context import ROOMS
from tests.conftest import make_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import OpusPacketTrack


class HalveVolume(Hook):
    """An audio mutator: its output must be encoded, the publisher's packets no longer match."""

    name = "halve_volume"
    kinds = frozenset({MediaKind.AUDIO})
    stage = Stage.MUTATE
    failure_policy = FailurePolicy.FAIL_OPEN
    budget_ms = 1.0

    def process_audio(self, chunk: AudioChunk) -> None:
        chunk.samples[:] = chunk.samples // 2


async def forwarded_payloads(
    tmp_path: Path, http: aiohttp.ClientSession, **sections: Any
) -> tuple[set[bytes], list[bytes]]:
    """Publish pre-encoded Opus through a server; the sent payloads and what the pipeline emitted."""
    running = await start_server(
        make_loaded(tmp_path, archive={"enabled": False}, compliance={"enabled": False}, **sections)
    )
    room = "opus"
    source = OpusPacketTrack()
    publisher = await client.publish(http, running.base, room, token(room, "alice"), [source])
    viewer = None
    try:
        rooms = running.app[ROOMS]
        await wait_for(lambda: rooms.get(room) is not None and "alice" in rooms.get(room).participants)
        participant = rooms.get(room).participants["alice"]
        await wait_for(lambda: participant.publication is not None and participant.publication.pipelines)
        emitted: list[bytes] = []

        def listen(packet: EncodedPacket) -> None:
            emitted.append(packet.data)

        participant.publication.pipelines[0].add_packet_listener(listen)
        viewer = await client.play(
            http, running.base, room, token(room, "bob", Role.OBSERVER), query="?participant=alice"
        )
        await wait_for(
            lambda: len(emitted) >= 40
            and viewer is not None
            and viewer.received.get("audio") is not None
            and viewer.received["audio"].count >= 20,
            timeout=30,
        )
        return set(source.payloads), emitted
    finally:
        if viewer is not None:
            await client.close(viewer)
        await client.close(publisher)
        await running.runner.cleanup()


async def test_publishers_opus_is_forwarded_unchanged(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    sent, emitted = await forwarded_payloads(tmp_path, http)
    assert all(payload in sent for payload in emitted)


@pytest.mark.parametrize(
    "sections",
    [
        {"media": {"audio": {"passthrough": False}}},
        {"hooks": [{"use": "tests.media.test_audio_passthrough:HalveVolume"}]},
    ],
    ids=["passthrough_off", "audio_mutator"],
)
async def test_audio_is_reencoded_when_it_must_be(
    tmp_path: Path, http: aiohttp.ClientSession, sections: dict[str, Any]
) -> None:
    sent, emitted = await forwarded_payloads(tmp_path, http, **sections)
    # A re-encode of a decoded tone never reproduces the publisher's exact packets.
    assert not any(payload in sent for payload in emitted)


def test_halve_volume_is_a_mutator() -> None:
    samples = np.full((960, 2), 1000, np.int16)
    HalveVolume.__new__(HalveVolume).process_audio(AudioChunk(samples, 48000, 0.0, 0.0, 0))
    assert samples.max() == 500
