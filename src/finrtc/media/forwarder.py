"""Subscriber tracks: hand the shared encoded packets to one subscriber's RTCRtpSender.

aiortc's sender only packetizes when `recv()` returns an `AvPacket`, so the per-subscriber cost
is packetization and SRTP, never an encode. Each subscriber has its own bounded queue: one that
falls behind loses packets up to the next keyframe (video) or its oldest audio, and never slows
the others or grows memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from finrtc import metrics
from finrtc.media.encoder import AvPacket
from finrtc.model import MediaKind


class ForwardedTrack(MediaStreamTrack):
    def __init__(
        self,
        kind: MediaKind,
        max_packets: int,
        request_keyframe: Callable[[str], None] | None = None,
        *,
        codec: str | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind.value
        self.media_kind = kind
        # The codec negotiated with this viewer: which shared encoder of the track feeds it.
        self.codec = codec or ("vp8" if kind is MediaKind.VIDEO else "opus")
        self._queue: asyncio.Queue[AvPacket | None] = asyncio.Queue(max_packets)
        self._request_keyframe = request_keyframe
        # A video subscriber can only start decoding at a keyframe.
        self._waiting_for_keyframe = kind is MediaKind.VIDEO
        self._ended = False
        self.delivered = 0
        self.dropped = 0
        self._drop_counter = metrics.SUBSCRIBER_DROPS.labels(kind=kind.value)

    def set_keyframe_requester(self, request_keyframe: Callable[[str], None]) -> None:
        self._request_keyframe = request_keyframe

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._waiting_for_keyframe

    def offer(self, packet: AvPacket, keyframe: bool) -> None:
        """Called on the event loop by the track pipeline for every encoded packet."""
        if self._ended:
            return
        if self._waiting_for_keyframe:
            if not keyframe:
                self._drop(1)
                return
            self._waiting_for_keyframe = False
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self._overflow(packet, keyframe)

    def _overflow(self, packet: AvPacket, keyframe: bool) -> None:
        if self.media_kind is MediaKind.VIDEO:
            # Decoding needs every packet since the last keyframe: discard the backlog and resume
            # at the next keyframe (or this one).
            self._drop(self._clear())
            if keyframe:
                self._queue.put_nowait(packet)
                return
            self._drop(1)
            self._waiting_for_keyframe = True
            if self._request_keyframe is not None:
                self._request_keyframe("subscriber_overflow")
        else:
            self._queue.get_nowait()
            self._drop(1)
            self._queue.put_nowait(packet)

    def _clear(self) -> int:
        cleared = 0
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                cleared += 1
        return cleared

    def _drop(self, count: int) -> None:
        if count:
            self.dropped += count
            self._drop_counter.inc(count)

    def request_keyframe(self, source: str) -> None:
        if self._request_keyframe is not None:
            self._request_keyframe(source)

    async def recv(self) -> AvPacket:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        self.delivered += 1
        return packet

    def end(self) -> None:
        """The publisher left: let the sender finish cleanly."""
        if self._ended:
            return
        self._ended = True
        self._clear()
        self._queue.put_nowait(None)

    @property
    def queued(self) -> int:
        return self._queue.qsize()
