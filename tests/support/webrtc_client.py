"""A WHIP/WHEP client written against RFC 9725 with aiortc and aiohttp only (no finrtc code)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


@dataclass
class ReceivedTrack:
    kind: str
    frames: list = field(default_factory=list)
    count: int = 0
    keep: int = 5
    first_at: float | None = None
    last_at: float | None = None
    ended: bool = False


@dataclass
class Session:
    pc: RTCPeerConnection
    location: str
    token: str
    received: dict[str, ReceivedTrack] = field(default_factory=dict)
    tasks: list[asyncio.Task] = field(default_factory=list)


def prefer_video_codec(
    transceiver: RTCRtpTransceiver, mime_type: str, profile_level_id: str | None = None
) -> None:
    """Offer only `mime_type` for this video transceiver (what a browser app does with
    setCodecPreferences); for H.264 optionally only one profile-level-id."""
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind)  # the table setCodecPreferences checks
    chosen = [
        codec
        for codec in capabilities.codecs
        if codec.mimeType.lower() == mime_type.lower()
        and (profile_level_id is None or codec.parameters.get("profile-level-id") == profile_level_id)
    ]
    assert chosen, f"aiortc has no {mime_type} {profile_level_id or ''} capability"
    transceiver.setCodecPreferences(chosen)


async def _gathered(pc: RTCPeerConnection) -> None:
    # aiortc gathers inside setLocalDescription; nothing to trickle.
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.01)


async def _post_offer(http: aiohttp.ClientSession, url: str, token: str, pc: RTCPeerConnection) -> str:
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    await _gathered(pc)
    async with http.post(
        url,
        data=pc.localDescription.sdp,
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.text()
        if response.status != 201:
            raise RuntimeError(f"{response.status}: {body}")
        assert response.headers["Content-Type"].startswith("application/sdp")
        location = response.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return location


def negotiated_video_codec(session: Session) -> str:
    """The video codec of the server's answer (the first, and with finrtc the only, one)."""
    description = session.pc.remoteDescription
    assert description is not None
    lines = description.sdp.splitlines()
    in_video = False
    for line in lines:
        if line.startswith("m="):
            in_video = line.startswith("m=video")
            payload_types = line.split()[3:]
        elif in_video and line.startswith(f"a=rtpmap:{payload_types[0]} "):
            return line.split()[1].split("/")[0]
    raise AssertionError("the answer has no video section")


async def publish(
    http: aiohttp.ClientSession,
    base: str,
    room: str,
    token: str,
    tracks: list[MediaStreamTrack],
    video_codec: str | None = None,
    profile_level_id: str | None = None,
) -> Session:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if video_codec is not None and track.kind == "video":
            prefer_video_codec(transceiver, video_codec, profile_level_id)
    try:
        location = await _post_offer(http, f"{base}/whip/{room}", token, pc)
    except BaseException:
        await pc.close()
        raise
    return Session(pc, location, token)


async def _consume(track: MediaStreamTrack, record: ReceivedTrack) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            frame = await track.recv()
            now = loop.time()
            record.count += 1
            if record.first_at is None:
                record.first_at = now
            record.last_at = now
            record.frames.append(frame)
            if len(record.frames) > record.keep:
                record.frames.pop(0)
    except MediaStreamError:
        record.ended = True


async def play(
    http: aiohttp.ClientSession,
    base: str,
    room: str,
    token: str,
    query: str = "",
    kinds: tuple[str, ...] = ("video", "audio"),
    consume: bool = True,
    video_codec: str | None = None,
) -> Session:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session = Session(pc, "", token)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        record = ReceivedTrack(track.kind)
        session.received[track.kind] = record
        if consume:
            session.tasks.append(asyncio.ensure_future(_consume(track, record)))

    for kind in kinds:
        transceiver = pc.addTransceiver(kind, direction="recvonly")
        if video_codec is not None and kind == "video":
            prefer_video_codec(transceiver, video_codec)
    try:
        session.location = await _post_offer(http, f"{base}/whep/{room}{query}", token, pc)
    except BaseException:
        await pc.close()
        raise
    return session


async def delete(http: aiohttp.ClientSession, base: str, session: Session) -> int:
    async with http.delete(
        base + session.location, headers={"Authorization": f"Bearer {session.token}"}
    ) as r:
        return r.status


async def close(session: Session) -> None:
    for task in session.tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await session.pc.close()
