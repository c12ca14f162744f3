"""Synthetic media sources for real aiortc peers: a moving test pattern and a tone."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

VIDEO_CLOCK = 90_000


class PatternVideoTrack(MediaStreamTrack):
    """640x480 frames: a gradient with a moving bright bar, at `fps`."""

    kind = "video"

    def __init__(
        self, width: int = 640, height: int = 480, fps: int = 30, luma: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0
        base = np.tile(np.linspace(40, 200, width, dtype=np.uint8), (height, 1))
        self._base = luma if luma is not None else base
        self.sent = 0

    def make_frame(self, index: int) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        y = self._base.copy()
        x = (index * 8) % self.width
        y[:, x : x + 16] = 230
        frame.planes[0].update(np.ascontiguousarray(y).tobytes())
        chroma = np.full((self.height // 2) * (self.width // 2), 128, np.uint8).tobytes()
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        return frame

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count / self.fps
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = self.make_frame(self._count)
        frame.pts = int(self._count * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        self.sent += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """48 kHz stereo s16 sine tone in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, samples: np.ndarray | None = None) -> None:
        super().__init__()
        self.frequency = frequency
        self._start: float | None = None
        self._count = 0
        self._samples = samples

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count * 0.02
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = 960
        if self._samples is not None:
            start = (self._count * n) % max(len(self._samples) - n, 1)
            mono = self._samples[start : start + n]
            if len(mono) < n:
                mono = np.pad(mono, (0, n - len(mono)))
        else:
            t = (np.arange(n) + self._count * n) / 48000
            mono = (8000 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16)
        stereo = np.repeat(mono.astype(np.int16)[:, None], 2, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = self._count * n
        frame.time_base = fractions.Fraction(1, 48000)
        self._count += 1
        return frame


class OpusPacketTrack(MediaStreamTrack):
    """Pre-encoded mono Opus (what browsers send by default; a tone in 20 ms packets), handed to
    aiortc as `av.Packet`s so its sender only packetizes: the payloads on the wire are exactly
    `payloads`, in a loop."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, packets: int = 50) -> None:
        super().__init__()
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate, codec.layout, codec.format = 48000, "mono", "s16"
        codec.bit_rate = 32_000
        codec.time_base = fractions.Fraction(1, 48000)
        codec.open()
        self.payloads: list[bytes] = []
        index = 0
        while len(self.payloads) < packets:
            t = (np.arange(960) + index * 960) / 48000
            mono = (8000 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, index * 960
            self.payloads.extend(bytes(packet) for packet in codec.encode(frame))
            index += 1
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._count * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self.payloads[self._count % len(self.payloads)])
        packet.pts = self._count * 960
        packet.time_base = fractions.Fraction(1, 48000)
        self._count += 1
        return packet
