"""Real encoded media for archive tests: VP8 frames of a moving pattern and 20 ms Opus frames of a
sine tone, produced by PyAV's libvpx / libopus encoders and wrapped as `EncodedPacket`s on one
session clock (0 = session start)."""

from __future__ import annotations

import fractions
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from finrtc.model import EncodedPacket, MediaKind, Role, TrackInfo

VIDEO_TB = (1, 90_000)
AUDIO_TB = (1, 48_000)
AUDIO_FRAME = 960  # 20 ms at 48 kHz


def track(room: str, session: str, track_id: str, kind: MediaKind,
          participant: str = "agent-1", role: Role = Role.AGENT) -> TrackInfo:
    return TrackInfo(room, session, participant, role, track_id, kind)


class VideoSource:
    """A live VP8 encoder; `force_keyframe()` makes the next frame a keyframe (like the lead's
    shared encoder does on `on_keyframe_needed`)."""

    def __init__(self, track_id: str, width: int = 160, height: int = 120, fps: int = 25,
                 keyframe_interval: int = 250) -> None:
        self.track_id = track_id
        self.width, self.height, self.fps = width, height, fps
        self.encoder = av.CodecContext.create("libvpx", "w")
        self.encoder.width = width
        self.encoder.height = height
        self.encoder.pix_fmt = "yuv420p"
        self.encoder.time_base = fractions.Fraction(1, 90_000)
        self.encoder.bit_rate = 300_000
        self.encoder.gop_size = keyframe_interval
        self.encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        self.index = 0
        self.sequence = 0
        self._force = False
        self._base = np.tile(np.linspace(30, 200, width, dtype=np.uint8), (height, 1))

    def force_keyframe(self) -> None:
        self._force = True

    def next_packets(self, wall0: float, pts_offset: int = 0) -> list[EncodedPacket]:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        luma = self._base.copy()
        x = (self.index * 6) % self.width
        luma[:, x : x + 12] = 235
        frame.planes[0].update(np.ascontiguousarray(luma).tobytes())
        chroma = np.full((self.height // 2) * (self.width // 2), 128, np.uint8).tobytes()
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        pts = self.index * 90_000 // self.fps
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, 90_000)
        if self._force:
            frame.pict_type = av.video.frame.PictureType.I
            self._force = False
        self.index += 1
        out = []
        for packet in self.encoder.encode(frame):
            assert packet.pts is not None
            session_pts = packet.pts + pts_offset
            out.append(EncodedPacket(
                track_id=self.track_id, kind=MediaKind.VIDEO, sequence=self.sequence,
                data=bytes(packet), pts=session_pts, time_base=VIDEO_TB,
                keyframe=bool(packet.is_keyframe), wall_clock=wall0 + session_pts / 90_000,
                duration=90_000 // self.fps,
            ))
            self.sequence += 1
        return out


class AudioSource:
    def __init__(self, track_id: str, channels: int = 2, frequency: float = 440.0) -> None:
        self.track_id = track_id
        self.channels = channels
        self.frequency = frequency
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.sample_rate = 48_000
        self.encoder.layout = "stereo" if channels == 2 else "mono"
        self.encoder.format = "s16"
        self.encoder.time_base = fractions.Fraction(1, 48_000)
        self.encoder.bit_rate = 32_000
        self.index = 0
        self.sequence = 0

    def next_packets(self, wall0: float, pts_offset: int = 0) -> list[EncodedPacket]:
        start = self.index * AUDIO_FRAME
        t = (np.arange(AUDIO_FRAME) + start) / 48_000
        tone = (np.sin(2 * np.pi * self.frequency * t) * 8000).astype(np.int16)
        samples = np.repeat(tone[:, None], self.channels, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="s16",
            layout="stereo" if self.channels == 2 else "mono",
        )
        frame.sample_rate = 48_000
        frame.pts = start
        frame.time_base = fractions.Fraction(1, 48_000)
        self.index += 1
        out = []
        for packet in self.encoder.encode(frame):
            # Our session clock, not libopus' pre-skip-shifted one: one packet per 20 ms.
            session_pts = self.sequence * AUDIO_FRAME + pts_offset
            out.append(EncodedPacket(
                track_id=self.track_id, kind=MediaKind.AUDIO, sequence=self.sequence,
                data=bytes(packet), pts=session_pts, time_base=AUDIO_TB, keyframe=True,
                wall_clock=wall0 + session_pts / 48_000, duration=AUDIO_FRAME,
            ))
            self.sequence += 1
        return out


@dataclass
class Call:
    video: VideoSource | None
    audio: AudioSource | None
    wall0: float = 1_790_000_000.0

    def packets(self, seconds: float, *, skip: Callable[[float], bool] | None = None
                ) -> Iterator[EncodedPacket]:
        """Interleaved packets in session-time order for `seconds` of media.

        `skip(media_time)` drops generated media (to simulate a stalled track / a gap).
        """
        video_next = 0.0
        audio_next = 0.0
        step_v = 1 / self.video.fps if self.video else float("inf")
        while True:
            use_video = self.video is not None and (self.audio is None or video_next <= audio_next)
            now = video_next if use_video else audio_next
            if now >= seconds:
                return
            if use_video:
                assert self.video is not None
                produced = self.video.next_packets(self.wall0)
                video_next += step_v
            else:
                assert self.audio is not None
                produced = self.audio.next_packets(self.wall0)
                audio_next += AUDIO_FRAME / 48_000
            for packet in produced:
                if skip is None or not skip(packet.media_time):
                    yield packet
