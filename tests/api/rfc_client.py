"""A WHIP/WHEP client written from RFC 9725 and RFC 8840 with aiohttp and aiortc only.

No finrtc code: it speaks HTTP and SDP the way a third-party client would. It can trickle its ICE
candidates: the offer goes out without any, and they follow in a PATCH of the session URL with
an `application/trickle-ice-sdpfrag` body and `If-Match: <ETag>`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

TRICKLE_TYPE = "application/trickle-ice-sdpfrag"


class WhipError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Received:
    count: int = 0
    last_size: tuple[int, int] | None = None


@dataclass
class Session:
    pc: RTCPeerConnection
    url: str  # absolute session URL (the Location, resolved against the endpoint URL)
    etag: str
    token: str
    links: list[str]
    offer_candidates: list[str]
    received: dict[str, Received] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def strip_candidates(sdp: str) -> str:
    """The offer as a trickling client sends it: no candidates, no end-of-candidates."""
    lines = [
        line
        for line in sdp.splitlines()
        if not line.startswith("a=candidate:") and line != "a=end-of-candidates"
    ]
    return "\r\n".join(lines) + "\r\n"


def trickle_fragment(sdp: str) -> tuple[str, list[str]]:
    """RFC 8840 fragment with the candidates of the first (BUNDLE-tagged) media section."""
    session_ufrag = session_pwd = None
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        elif line.startswith("a=ice-ufrag:"):
            session_ufrag = line
        elif line.startswith("a=ice-pwd:"):
            session_pwd = line
    first = sections[0]
    ufrag = next((line for line in first if line.startswith("a=ice-ufrag:")), session_ufrag)
    pwd = next((line for line in first if line.startswith("a=ice-pwd:")), session_pwd)
    mid = next(line for line in first if line.startswith("a=mid:"))
    candidates = [line for line in first if line.startswith("a=candidate:")]
    assert ufrag and pwd and candidates, "the offer has no ICE credentials or candidates"
    fragment = [ufrag, pwd, first[0], mid, *candidates, "a=end-of-candidates"]
    return "\r\n".join(fragment) + "\r\n", candidates


async def _gathered(pc: RTCPeerConnection) -> None:
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.01)


async def _consume(track: MediaStreamTrack, record: Received) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            record.count += 1
            width = getattr(frame, "width", None)
            height = getattr(frame, "height", None)
            if width is not None and height is not None:
                record.last_size = (width, height)


async def _negotiate(
    http: aiohttp.ClientSession, endpoint: str, token: str, pc: RTCPeerConnection, trickle: bool
) -> Session:
    await pc.setLocalDescription(await pc.createOffer())
    await _gathered(pc)
    full_offer = pc.localDescription.sdp
    fragment, candidates = trickle_fragment(full_offer)
    offer = strip_candidates(full_offer) if trickle else full_offer
    async with http.post(
        endpoint,
        data=offer.encode(),
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.text()
        if response.status != 201:
            raise WhipError(response.status, body)
        assert response.content_type == "application/sdp"
        session = Session(
            pc,
            urljoin(endpoint, response.headers["Location"]),
            response.headers["ETag"],
            token,
            response.headers.getall("Link", []),
            candidates,
        )
    if trickle:
        # Trickle before applying the answer, so the server hears of our candidates before our
        # connectivity checks could teach it the same addresses as peer-reflexive ones.
        status, text = await patch(http, session, fragment)
        if status != 204:
            raise WhipError(status, text)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return session


async def patch(
    http: aiohttp.ClientSession,
    session: Session,
    fragment: str,
    *,
    if_match: str | None = "",
    content_type: str = TRICKLE_TYPE,
) -> tuple[int, str]:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {session.token}"}
    if if_match is not None:
        headers["If-Match"] = if_match or session.etag
    async with http.patch(session.url, data=fragment.encode(), headers=headers) as response:
        return response.status, await response.text()


async def publish(
    http: aiohttp.ClientSession,
    endpoint: str,
    token: str,
    tracks: list[MediaStreamTrack],
    *,
    trickle: bool = True,
) -> Session:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    try:
        return await _negotiate(http, endpoint, token, pc, trickle)
    except BaseException:
        await pc.close()
        raise


async def play(
    http: aiohttp.ClientSession,
    endpoint: str,
    token: str,
    *,
    trickle: bool = True,
    kinds: tuple[str, ...] = ("video", "audio"),
) -> Session:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: dict[str, Received] = {}
    tasks: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        record = received.setdefault(track.kind, Received())
        tasks.append(asyncio.ensure_future(_consume(track, record)))

    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    try:
        session = await _negotiate(http, endpoint, token, pc, trickle)
    except BaseException:
        await pc.close()
        raise
    session.received = received
    session.tasks = tasks
    return session


async def delete(http: aiohttp.ClientSession, session: Session) -> int:
    async with http.delete(session.url, headers={"Authorization": f"Bearer {session.token}"}) as r:
        return r.status


async def close(session: Session) -> None:
    for task in session.tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await session.pc.close()
