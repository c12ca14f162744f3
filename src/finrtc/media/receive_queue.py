"""Bounded hand-overs around aiortc's decoder thread: encoded frames in, decoded frames out.

Out: aiortc's decoder thread passes every decoded frame to the event loop with
`run_coroutine_threadsafe(queue.put(frame))` into an unbounded `asyncio.Queue`. When the server
is overloaded the event loop falls behind, and every pending hand-over holds a decoded picture
(460 KB at 640x480): measured, an overloaded server grew to 1.5 GB and 4.5 s of latency instead
of dropping frames. Here `put` stores the frame at once, in the decoder thread, in a short
buffer that drops its oldest entry when full; the coroutine aiortc schedules only wakes the
reader. Memory and added latency stay bounded whatever the event loop's lag, and the drops are
counted (`finrtc_frames_dropped_total`).

In: aiortc queues every reassembled encoded frame for its decoder thread in an unbounded
`queue.Queue`. A decoder thread starved of CPU falls behind the network, and every frame waiting
there is latency that the bound on the way out cannot take back. Here, when more than a few
video frames wait, the decoder skips to the newest keyframe among them, or, with none, drops
the backlog, asks the publisher for a keyframe (PLI) and drops delta frames until it comes: a
delta frame without its references decodes to a corrupt picture. Audio keeps the newest 5 s.

The queue also remembers the Opus payload of the frame it handed out last, so the decoded
frame can carry it (`frame.opaque`) to a pipeline that forwards the publisher's Opus unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from finrtc.media import aiortc_patches

# Decoded frames waiting for the pipeline's reader. Video: about 130 ms (460 KB a frame at 480p);
# a late picture is worth less than a current one. Audio: 5 s (4 KB a frame), so a stall of the
# event loop never cuts speech out of the record; only real overload does, and is counted.
VIDEO_CAPACITY = 4
AUDIO_CAPACITY = 250
# Encoded frames waiting for the decoder thread before it sheds them: 200 ms of video at 30 fps;
# audio, 5 s (Opus frames decode on their own, so the oldest simply go).
VIDEO_BACKLOG = 6
AUDIO_BACKLOG = 250


H264_IDR = 5
H264_NAL_TYPE_MASK = 0x1F


def h264_has_idr(data: bytes) -> bool:
    """Whether an Annex B access unit (what aiortc's depacketizer hands its decoder: every NAL
    unit after a 00 00 00 01 start code) holds an IDR slice, i.e. decodes on its own."""
    position = data.find(b"\x00\x00\x01")
    while position != -1 and position + 3 < len(data):
        if data[position + 3] & H264_NAL_TYPE_MASK == H264_IDR:
            return True
        position = data.find(b"\x00\x00\x01", position + 3)
    return False


def is_keyframe(item: tuple[Any, Any]) -> bool:
    """Whether a queued (codec, encoded frame) decodes on its own."""
    codec, frame = item
    data: bytes = frame.data
    mime = codec.mimeType.lower()
    if mime == "video/h264":
        return h264_has_idr(data)
    if mime != "video/vp8":
        # A codec without a check here: shedding keeps the newest frame rather than wait for a
        # keyframe it cannot recognise.
        return True
    # RFC 6386 9.1: bit 0 of a VP8 frame's first byte is 0 for a key frame.
    return bool(data) and not data[0] & 0x01


class EncodedFrameQueue:
    """The subset of `queue.Queue` aiortc uses for its decoder input: `put((codec, frame))` on
    the event loop, `get()` in the decoder thread, `put(None)` to stop it. Bounded as above."""

    def __init__(
        self,
        kind: str,
        decode_error: threading.Event | None = None,
        on_drop: Callable[[int], None] | None = None,
        backlog: int | None = None,
    ) -> None:
        self._video = kind == "video"
        self._backlog = backlog if backlog is not None else VIDEO_BACKLOG if self._video else AUDIO_BACKLOG
        if self._backlog < 1:
            raise ValueError("backlog must be at least 1")
        # aiortc's receiver sends a PLI for the next packet while this event is set.
        self._decode_error = decode_error
        self._on_drop = on_drop
        self._items: deque[Any] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._awaiting_keyframe = False
        # Frames kept by the last skip to a keyframe: they decode from it, so they are not shed
        # again (that would throw the keyframe's work away) until the decoder has taken them.
        self._kept = 0
        self.dropped = 0
        # Payload of the frame `get` handed out last (read in the decoder thread only).
        self.last_payload: bytes | None = None

    def put(self, item: Any) -> None:
        if item is not None and not item[1].data:
            # A "frame" of padding-only packets (Chromium probes bandwidth with them). PyAV takes
            # an empty packet for end of stream: the decoder would be flushed and answer every
            # later frame with EOF, for the rest of the call.
            return
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def qsize(self) -> int:
        with self._ready:
            return len(self._items)

    def get(self) -> Any:
        with self._ready:
            while True:
                while not self._items:
                    self._ready.wait()
                if len(self._items) > self._backlog and not self._kept:
                    self._shed()
                    if not self._items:
                        continue
                item = self._items.popleft()
                self._kept = max(self._kept - 1, 0)
                if item is None:
                    self.last_payload = None
                    return None
                if self._awaiting_keyframe:
                    if not is_keyframe(item):
                        self._count_drops(1)
                        continue
                    self._awaiting_keyframe = False
                self.last_payload = item[1].data
                return item

    def _count_drops(self, count: int) -> None:
        if count:
            self.dropped += count
            if self._on_drop is not None:
                self._on_drop(count)

    def _shed(self) -> None:
        """Called with the lock held and more than `backlog` frames waiting."""
        items = self._items
        stop = items[-1] is None  # the end marker stays, last
        frames = len(items) - stop
        if not self._video:
            drop = max(frames - self._backlog, 0)
        else:
            newest_key = next((i for i in range(frames - 1, -1, -1) if is_keyframe(items[i])), None)
            if newest_key is not None:
                # The oldest frame may be the keyframe itself: decoding on from it is then the
                # quickest way back to the present.
                drop = newest_key
                self._awaiting_keyframe = False
                self._kept = frames - newest_key
            else:
                drop = frames
                self._awaiting_keyframe = True
                if self._decode_error is not None:
                    self._decode_error.set()
        for _ in range(drop):
            items.popleft()
        self._count_drops(drop)


class LatestFramesQueue:
    """The subset of `asyncio.Queue` aiortc uses (`put` from its decoder thread, `get` in
    `RemoteStreamTrack.recv`), bounded, keeping the newest frames."""

    def __init__(
        self,
        capacity: int,
        on_drop: Callable[[], None] | None = None,
        encoded: EncodedFrameQueue | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._on_drop = on_drop
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self.dropped = 0
        # The decoder thread's input: an audio frame is tagged with the payload it came from
        # (aiortc's Opus decoder turns one packet into exactly one frame).
        self._encoded = encoded

    def _store(self, item: Any) -> None:
        dropped = False
        with self._lock:
            # The end-of-stream marker (None) is never dropped and nothing queues after it.
            if item is not None and len(self._items) >= self._capacity and self._items[0] is not None:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
        if dropped and self._on_drop is not None:
            self._on_drop()

    def put(self, item: Any) -> Any:
        """Store now (any thread); the returned coroutine, run on the loop, wakes the reader."""
        if self._encoded is not None and isinstance(item, av.AudioFrame):
            item.opaque = self._encoded.last_payload
        self._store(item)
        return self._wake()

    def put_nowait(self, item: Any) -> None:
        """Loop-side store."""
        self._store(item)
        self._ready.set()

    async def _wake(self) -> None:
        self._ready.set()

    async def get(self) -> Any:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                # Cleared under the lock: a frame stored after this point schedules a wake-up
                # that runs after the clear, so it cannot be missed.
                self._ready.clear()
            await self._ready.wait()

    def qsize(self) -> int:
        with self._lock:
            return len(self._items)

    def empty(self) -> bool:
        return self.qsize() == 0


def install(
    receiver: RTCRtpReceiver, kind: str, on_drop: Callable[[int], None] | None = None
) -> tuple[EncodedFrameQueue, LatestFramesQueue]:
    """Bound a receiver's queues on both sides of its decoder thread; call before the receiver
    starts (first media). `on_drop` gets the number of frames each drop lost."""
    encoded = EncodedFrameQueue(kind, aiortc_patches.decoder_error_flag(receiver), on_drop)
    aiortc_patches.set_decoder_queue(receiver, encoded)
    capacity = VIDEO_CAPACITY if kind == "video" else AUDIO_CAPACITY
    decoded = LatestFramesQueue(
        capacity,
        None if on_drop is None else lambda: on_drop(1),
        encoded if kind == "audio" else None,
    )
    aiortc_patches.set_decoded_queue(receiver, decoded)
    return encoded, decoded
