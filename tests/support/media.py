"""Synthetic media sources for real aiortc peers: a moving test pattern, a tone, pre-encoded Opus."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

VIDEO_CLOCK = 90_000


class Pacer:
    """Hands out item numbers 0, 1, 2 ... at `interval_s` apart in real time, like a camera or a
    microphone: item N is due `N * interval_s` after the first."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._start: float | None = None
        self.count = 0

    async def next(self) -> int:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.count * self.interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.count += 1
        return self.count - 1


def tone(frequency: float, index: int, samples: int = 960) -> np.ndarray:
    """Mono 48 kHz s16 sine, the `index`-th chunk of `samples`."""
    t = (np.arange(samples) + index * samples) / 48000
    return (8000 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


class PatternVideoTrack(MediaStreamTrack):
    """640x480 frames: a gradient with a moving bright bar, at `fps`."""

    kind = "video"

    def __init__(
        self, width: int = 640, height: int = 480, fps: int = 30, luma: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._pacer = Pacer(1 / fps)
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
        index = await self._pacer.next()
        frame = self.make_frame(index)
        frame.pts = int(index * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """48 kHz stereo s16 sine tone in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, samples: np.ndarray | None = None) -> None:
        super().__init__()
        self.frequency = frequency
        self._pacer = Pacer(0.02)
        self._samples = samples

    async def recv(self) -> av.AudioFrame:
        index = await self._pacer.next()
        n = 960
        if self._samples is not None:
            start = (index * n) % max(len(self._samples) - n, 1)
            mono = self._samples[start : start + n]
            if len(mono) < n:
                mono = np.pad(mono, (0, n - len(mono)))
        else:
            mono = tone(self.frequency, index, n)
        stereo = np.repeat(mono.astype(np.int16)[:, None], 2, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = index * n
        frame.time_base = fractions.Fraction(1, 48000)
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
            mono = tone(frequency, index)
            frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, index * 960
            self.payloads.extend(bytes(packet) for packet in codec.encode(frame))
            index += 1
        self._pacer = Pacer(0.02)

    async def recv(self) -> av.Packet:
        index = await self._pacer.next()
        packet = av.Packet(self.payloads[index % len(self.payloads)])
        packet.pts = index * 960
        packet.time_base = fractions.Fraction(1, 48000)
        return packet
