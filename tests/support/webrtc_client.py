"""A WHIP/WHEP client written against RFC 9725 with aiortc and aiohttp only (no finrtc code)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
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


async def publish(
    http: aiohttp.ClientSession, base: str, room: str, token: str, tracks: list[MediaStreamTrack]
) -> Session:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
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
        pc.addTransceiver(kind, direction="recvonly")
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
