"""The track pipeline: decode once → hook chain → encode once per output codec → fan out.

One pipeline per published track. aiortc decodes in its own thread; a reader task moves decoded
frames into a small bounded queue (video drops the oldest frame when the worker is behind, so
latency stays bounded); a worker task runs the hook chain and the shared encoders in an executor,
one frame at a time, then hands the same `av.Packet` to every subscriber of that codec and every
packet listener (the archive) on the event loop.

Video has at most one shared encoder per output codec: VP8 (what the archive and the post-encode
hooks receive, and VP8 viewers) and H.264 for viewers that only decode H.264. Each is created when
the first track needing it arrives (the archive, or a viewer of that codec) and released when the
last viewer of a codec the archive does not use leaves; the publisher's codec (VP8 or H.264) does
not matter, frames are decoded once either way.

All pts leaving the pipeline are on the room's session clock (0 = session start), so audio and
video of every participant can be aligned by the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from numpy.typing import NDArray

from finrtc import metrics
from finrtc.config import MediaConfig
from finrtc.hooks.chain import HookChain
from finrtc.hooks.contract import AudioChunk, VideoFrame
from finrtc.media.clock import TrackClock
from finrtc.media.encoder import (
    AUDIO_RATE,
    VIDEO_CLOCK,
    VIDEO_ENCODERS,
    AudioEncoder,
    AvPacket,
    VideoEncoder,
)
from finrtc.media.forwarder import ForwardedTrack
from finrtc.model import EncodedPacket, MediaKind, TrackInfo
from finrtc.room_events import ServerEvent, TrackResumed, TrackStalled

log = logging.getLogger(__name__)

# No frame for this long marks the track as stalled (an interruption the archive records).
STALL_AFTER_S = 2.0
# Ask the publisher for a keyframe at most this often.
UPSTREAM_PLI_INTERVAL_S = 1.0

# The codec of the encoder whose packets the archive and the post-encode hooks (hash chain) get.
ARCHIVE_VIDEO_CODEC = "vp8"

PacketListener = Callable[[EncodedPacket], None]
EventPublisher = Callable[[ServerEvent], object]


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A decoded frame stamped when it left the decoder (queueing must not shift its time)."""

    frame: av.VideoFrame | av.AudioFrame
    session_time: float
    wall_clock: float


@dataclass(eq=False)
class _VideoOutput:
    """One shared video encoder of a track and the viewers it feeds. Keyframe requests (a
    viewer's PLI, a join) are per output: an H.264 viewer's PLI never costs the VP8 archive a
    keyframe."""

    codec: str
    encoder: VideoEncoder
    subscribers: set[ForwardedTrack] = field(default_factory=set)
    keyframe_requested: bool = False
    last_forced_keyframe: float = 0.0
    last_keyframe_media: float | None = None


@dataclass(frozen=True, slots=True)
class _Encoded:
    packet: AvPacket
    encoded: EncodedPacket | None
    # None for audio: every subscriber of the track.
    output: _VideoOutput | None = None


def plane_views(frame: av.VideoFrame) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """Writable numpy views (height, width) onto the frame's yuv420p planes, padding excluded."""
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        views.append(rows[:, : plane.width])
    return views[0], views[1], views[2]


def copy_video_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A private copy: decoders may keep the frames they return as references."""
    copy = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for source, target in zip(plane_views(frame), plane_views(copy), strict=True):
        np.copyto(target, source)
    return copy


class TrackPipeline:
    def __init__(
        self,
        track: TrackInfo,
        source: MediaStreamTrack,
        chain: HookChain,
        executor: Executor,
        media: MediaConfig,
        session_clock: Callable[[], float],
        publish_event: EventPublisher,
        *,
        frames_are_private: bool,
        request_upstream_keyframe: Callable[[], None] | None = None,
        on_media_lost: Callable[[], None] | None = None,
    ) -> None:
        self.track = track
        self.kind = track.kind
        self._source = source
        self._chain = chain
        self._executor = executor
        self._media = media
        self._clock = session_clock
        self._publish_event = publish_event
        self._frames_are_private = frames_are_private
        self._request_upstream = request_upstream_keyframe
        self._on_media_lost = on_media_lost
        self._queue: asyncio.Queue[_Arrival | None] = asyncio.Queue(
            media.pipeline_queue_frames if track.kind is MediaKind.VIDEO else 50
        )
        self._subscribers: set[ForwardedTrack] = set()
        self._packet_listeners: list[PacketListener] = []
        self._end_listeners: list[Callable[[bool], None]] = []
        # Video: one shared encoder per output codec, created on demand (_ensure_output).
        self._outputs: dict[str, _VideoOutput] = {}
        self._audio_encoder = AudioEncoder(media.audio.bitrate_bps) if track.kind is MediaKind.AUDIO else None
        # Forward the publisher's Opus (frames tagged with it by receive_queue) when nothing
        # changes the audio.
        self._forward_audio = media.audio.passthrough and not chain.has_mutators
        self._track_clock = TrackClock() if track.kind is MediaKind.VIDEO else TrackClock(slew=0.0)
        self._index = 0
        self._sequence = 0
        self._last_upstream_pli = 0.0
        self._last_frame_at = time.monotonic()
        self._reader: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()
        self.clean_end = True
        self.frames_in = 0
        self.frames_dropped = 0
        self.packets_out = 0
        self._frames_in = metrics.FRAMES_IN.labels(kind=track.kind.value)
        self._frames_dropped = metrics.FRAMES_DROPPED.labels(kind=track.kind.value)
        self._packets_out = metrics.PACKETS_OUT.labels(kind=track.kind.value)
        self._encode_seconds = metrics.ENCODE_SECONDS.labels(kind=track.kind.value)

    # ---- wiring -------------------------------------------------------------------------

    def start(self) -> None:
        if self.kind is MediaKind.AUDIO:
            metrics.ENCODERS.labels(kind=self.kind.value, codec="opus").inc()
        elif self._wants_listeners():
            self._ensure_output(ARCHIVE_VIDEO_CODEC)
        metrics.PUBLISHED_TRACKS.labels(kind=self.kind.value).inc()
        self._reader = asyncio.create_task(self._read(), name=f"read:{self.track.track_id}")
        self._worker = asyncio.create_task(self._work(), name=f"work:{self.track.track_id}")

    def _ensure_output(self, codec: str) -> _VideoOutput:
        output = self._outputs.get(codec)
        if output is None:
            encoder_type = VIDEO_ENCODERS.get(codec)
            if encoder_type is None:
                raise ValueError(f"no shared encoder for video codec {codec!r}")
            video = self._media.video
            output = _VideoOutput(codec, encoder_type(video.bitrate_bps, video.cpu_used, threads=1))
            self._outputs[codec] = output
            metrics.ENCODERS.labels(kind=self.kind.value, codec=codec).inc()
        return output

    def _release_unused_output(self, output: _VideoOutput) -> None:
        if output.subscribers or (output.codec == ARCHIVE_VIDEO_CODEC and self._wants_listeners()):
            return
        if self._outputs.pop(output.codec, None) is output:
            metrics.ENCODERS.labels(kind=self.kind.value, codec=output.codec).dec()

    @property
    def encoder_codecs(self) -> list[str]:
        """The live shared encoders of this track, by codec (video: VP8 and/or H.264)."""
        if self.kind is MediaKind.AUDIO:
            return ["opus"]
        return sorted(self._outputs)

    def add_subscriber(self, subscriber: ForwardedTrack) -> None:
        codec = subscriber.codec
        subscriber.set_keyframe_requester(lambda source: self.request_keyframe(source, codec))
        if self.ended.is_set():
            subscriber.end()
            return
        self._subscribers.add(subscriber)
        metrics.SUBSCRIBED_TRACKS.labels(kind=self.kind.value).inc()
        if self.kind is MediaKind.VIDEO:
            self._ensure_output(codec).subscribers.add(subscriber)
            self.request_keyframe("subscriber_joined", codec)

    def remove_subscriber(self, subscriber: ForwardedTrack) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            metrics.SUBSCRIBED_TRACKS.labels(kind=self.kind.value).dec()
            output = self._outputs.get(subscriber.codec)
            if output is not None:
                output.subscribers.discard(subscriber)
                self._release_unused_output(output)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def add_packet_listener(self, listener: PacketListener) -> None:
        """Receives every EncodedPacket on the event loop (the archive): the VP8 output's."""
        self._packet_listeners.append(listener)
        if self.kind is MediaKind.VIDEO and not self.ended.is_set():
            self._ensure_output(ARCHIVE_VIDEO_CODEC)

    def add_end_listener(self, listener: Callable[[bool], None]) -> None:
        """Called once with clean=True (publisher left) or False (media vanished)."""
        self._end_listeners.append(listener)

    def request_keyframe(self, source: str, codec: str = ARCHIVE_VIDEO_CODEC) -> None:
        """From a subscriber (PLI/FIR, join, overflow) or the archive (segment boundary):
        rate-limited keyframe on the shared encoder of that codec."""
        if self.kind is not MediaKind.VIDEO:
            return
        output = self._outputs.get(codec)
        if output is None:
            return
        now = time.monotonic()
        if now - output.last_forced_keyframe < self._media.video.keyframe_min_interval_s:
            metrics.KEYFRAME_REQUESTS.labels(source=source, outcome="rate_limited").inc()
            output.keyframe_requested = True  # served at the end of the interval by the worker
            return
        metrics.KEYFRAME_REQUESTS.labels(source=source, outcome="forced").inc()
        output.keyframe_requested = True
        # Our decoder may itself be waiting for a keyframe if the publisher's stream broke.
        if now - self._last_frame_at > 1.0:
            self._ask_upstream()

    def _ask_upstream(self) -> None:
        now = time.monotonic()
        if self._request_upstream is not None and now - self._last_upstream_pli >= UPSTREAM_PLI_INTERVAL_S:
            self._last_upstream_pli = now
            metrics.UPSTREAM_PLI.inc()
            self._request_upstream()

    # ---- tasks ----------------------------------------------------------------------------

    async def _read(self) -> None:
        stalled_since: float | None = None
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(self._source.recv(), STALL_AFTER_S)
                except TimeoutError:
                    silent_for = time.monotonic() - self._last_frame_at
                    if silent_for >= self._media.publisher_timeout_s and self._on_media_lost is not None:
                        self.clean_end = False
                        self._on_media_lost()
                        return
                    if stalled_since is None:
                        stalled_since = self._clock() - STALL_AFTER_S
                        self._publish_event(
                            TrackStalled(
                                participant=self.track.participant,
                                track_id=self.track.track_id,
                                kind=self.kind,
                                since_media_time=stalled_since,
                            )
                        )
                        self._ask_upstream()
                    continue
                if not isinstance(frame, av.VideoFrame | av.AudioFrame):
                    continue
                self._last_frame_at = time.monotonic()
                if stalled_since is not None:
                    self._publish_event(
                        TrackResumed(
                            participant=self.track.participant,
                            track_id=self.track.track_id,
                            kind=self.kind,
                            gap_s=round(self._clock() - stalled_since, 3),
                        )
                    )
                    stalled_since = None
                self.frames_in += 1
                self._frames_in.inc()
                if self._queue.full():
                    # Behind: the oldest frame is the least useful one.
                    self._queue.get_nowait()
                    self.frames_dropped += 1
                    self._frames_dropped.inc()
                self._queue.put_nowait(_Arrival(frame, self._clock(), time.time()))
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            self.clean_end = False
            raise
        finally:
            if not self._queue.full():
                self._queue.put_nowait(None)
            else:
                self._queue.get_nowait()
                self._queue.put_nowait(None)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            finished = False
            while not finished:
                item = await self._queue.get()
                if item is None:
                    break
                # Audio chunks are small: take everything already queued in one executor hop.
                batch = [item]
                while self.kind is MediaKind.AUDIO and not self._queue.empty() and len(batch) < 25:
                    queued = self._queue.get_nowait()
                    if queued is None:
                        finished = True
                        break
                    batch.append(queued)
                # Snapshot on the loop: viewers come and go while the worker encodes.
                outputs = list(self._outputs.values())
                try:
                    # The copied context carries room/participant into the worker's log lines.
                    results = await loop.run_in_executor(
                        self._executor, contextvars.copy_context().run, self._process_batch, batch, outputs
                    )
                except Exception:
                    # A broken frame (odd format, encoder error) must not end the track.
                    log.exception("track %s: frame processing failed", self.track.track_id)
                    continue
                self._fan_out(results)
        finally:
            await self._finish()

    def _fan_out(self, results: list[_Encoded]) -> None:
        for result in results:
            keyframe = bool(result.packet.is_keyframe) if self.kind is MediaKind.VIDEO else True
            subscribers = self._subscribers if result.output is None else result.output.subscribers
            for subscriber in subscribers:
                subscriber.offer(result.packet, keyframe)
            if result.encoded is not None:
                for listener in self._packet_listeners:
                    listener(result.encoded)
            self.packets_out += 1
            self._packets_out.inc()

    # ---- worker-thread side ------------------------------------------------------------

    def _media_time(self, pts: int | None, time_base: object, arrival: float) -> float:
        if pts is None or time_base is None:
            return arrival
        return self._track_clock.media_time(float(pts * time_base), arrival)  # type: ignore[operator]

    def _wants_listeners(self) -> bool:
        return bool(self._packet_listeners) or self._chain.has_post_encode_hooks

    def _process_batch(self, batch: list[_Arrival], outputs: list[_VideoOutput]) -> list[_Encoded]:
        results: list[_Encoded] = []
        for item in batch:
            if isinstance(item.frame, av.VideoFrame):
                results.extend(self._process_video(item.frame, item.session_time, item.wall_clock, outputs))
            else:
                results.extend(self._process_audio(item.frame, item.session_time, item.wall_clock))
        return results

    def _process_video(
        self, frame: av.VideoFrame, arrival: float, wall_clock: float, outputs: list[_VideoOutput]
    ) -> list[_Encoded]:
        media_time = self._media_time(frame.pts, frame.time_base, arrival)
        if self._chain.has_frame_hooks:
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            elif not self._frames_are_private:
                frame = copy_video_frame(frame)
            y, u, v = plane_views(frame)
            self._chain.run_video(
                VideoFrame(y, u, v, frame.width, frame.height, media_time, wall_clock, self._index)
            )
        self._index += 1
        pts = round(media_time * VIDEO_CLOCK)
        results: list[_Encoded] = []
        for output in outputs:
            # The same (watermarked) frame goes to each codec's encoder: decoded and hooked once.
            keyframe = output.keyframe_requested and (
                time.monotonic() - output.last_forced_keyframe >= self._media.video.keyframe_min_interval_s
            )
            if (
                output.last_keyframe_media is None
                or media_time - output.last_keyframe_media >= self._media.video.keyframe_interval_s
            ):
                keyframe = True
            if keyframe:
                output.keyframe_requested = False
                output.last_forced_keyframe = time.monotonic()
                output.last_keyframe_media = media_time
            started = time.perf_counter()
            packets = output.encoder.encode(frame, pts, keyframe)
            self._encode_seconds.observe(time.perf_counter() - started)
            if output.codec == ARCHIVE_VIDEO_CODEC:
                results.extend(self._wrap(packets, wall_clock, (1, VIDEO_CLOCK), output))
            else:
                results.extend(_Encoded(packet, None, output) for packet in packets)
        return results

    def _process_audio(self, frame: av.AudioFrame, arrival: float, wall_clock: float) -> list[_Encoded]:
        assert self._audio_encoder is not None
        media_time = self._media_time(frame.pts, frame.time_base, arrival)
        pts = round(media_time * AUDIO_RATE)
        packets: list[AvPacket] = []
        started = time.perf_counter()
        hook_time = 0.0
        for prepared in self._audio_encoder.prepare(frame, pts):
            if self._chain.has_frame_hooks:
                hook_started = time.perf_counter()
                samples = np.frombuffer(memoryview(prepared.planes[0]), np.int16)[
                    : prepared.samples * 2
                ].reshape(-1, 2)
                chunk_time = (prepared.pts or 0) / AUDIO_RATE
                self._chain.run_audio(AudioChunk(samples, AUDIO_RATE, chunk_time, wall_clock, self._index))
                hook_time += time.perf_counter() - hook_started
            self._index += 1
            # `prepared is frame`: 20 ms at 48 kHz stereo, stamped without resampling, so the
            # publisher's packet covers exactly these samples.
            payload = frame.opaque if self._forward_audio and prepared is frame else None
            if isinstance(payload, bytes) and payload:
                packets.append(self._audio_encoder.forward(payload, prepared))
            else:
                packets.extend(self._audio_encoder.encode_prepared(prepared))
        self._encode_seconds.observe(time.perf_counter() - started - hook_time)
        return self._wrap(packets, wall_clock, (1, AUDIO_RATE))

    def _wrap(
        self,
        packets: list[AvPacket],
        wall_clock: float,
        time_base: tuple[int, int],
        output: _VideoOutput | None = None,
    ) -> list[_Encoded]:
        results = []
        wants = self._wants_listeners()
        for packet in packets:
            encoded = None
            if wants:
                self._sequence += 1
                encoded = EncodedPacket(
                    track_id=self.track.track_id,
                    kind=self.kind,
                    sequence=self._sequence,
                    data=bytes(packet),
                    pts=int(packet.pts or 0),
                    time_base=time_base,
                    keyframe=bool(packet.is_keyframe) if self.kind is MediaKind.VIDEO else True,
                    wall_clock=wall_clock,
                    duration=int(packet.duration or 0),
                )
                self._chain.run_packet(encoded)
            results.append(_Encoded(packet, encoded, output))
        return results

    # ---- end ------------------------------------------------------------------------------

    async def _finish(self) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        for subscriber in list(self._subscribers):
            subscriber.end()
            self.remove_subscriber(subscriber)
        for listener in self._end_listeners:
            try:
                listener(self.clean_end)
            except Exception:
                log.exception("track %s: end listener failed", self.track.track_id)
        if self.kind is MediaKind.AUDIO:
            metrics.ENCODERS.labels(kind=self.kind.value, codec="opus").dec()
        for output in list(self._outputs.values()):
            self._outputs.pop(output.codec, None)
            metrics.ENCODERS.labels(kind=self.kind.value, codec=output.codec).dec()
        metrics.PUBLISHED_TRACKS.labels(kind=self.kind.value).dec()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._executor, self._chain.close)

    async def stop(self, clean: bool = True) -> None:
        """Stop reading (publisher left or room closed) and wait until the worker has drained."""
        if not clean:
            self.clean_end = False
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            if clean:
                self.clean_end = True
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._finish()
