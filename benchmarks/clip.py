"""The pre-encoded test clip: VP8 640x480@30 with a frame counter stamped into the picture + Opus.

The audio is one side of a conversation: sales-script speech (Debian flite) for the first half of
the clip and room-level silence for the second. The load generator starts a call's customer half
a clip later than its agent, so the two take turns like people do, and the server's speech
recognition works on what a real call gives it (each party speaks about half of the time). A
constant tone instead looks like one endless utterance to the recognizer's endpointer.

Publishers send these packets as they are, so the load generator spends no encode CPU. The
counter is drawn as large black/white blocks in a band at the bottom of the picture: they survive
the server's decode + re-encode (and the watermark hooks, which stay out of that band), so a
subscriber can read which source frame it is looking at and compute latency on one clock.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from finrtc.compliance.testing import silence, synthesize, to_48k_stereo

WIDTH = 640
HEIGHT = 480
FPS = 30
VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_TIME_BASE = Fraction(1, 48000)
AUDIO_RATE = 48000
AUDIO_SAMPLES_PER_PACKET = 960  # 20 ms
# 20 s of distinct counters: the subscriber unwraps the counter across loops by continuity.
CLIP_FRAMES = 600
GOP_FRAMES = 30
VIDEO_BITRATE = 800_000
AUDIO_BITRATE = 32_000

COUNTER_BITS = 12
CHECK_BITS = 4
BLOCKS = COUNTER_BITS + CHECK_BITS
BLOCK_WIDTH = WIDTH // BLOCKS
BAND_TOP = 400
BAND_HEIGHT = 64
LUMA_BLACK = 16
LUMA_WHITE = 235
CACHE_VERSION = 5
# Spoken in the first half of the clip, in this order (about 8 s with flite's slt voice).
SCRIPT_LINES = (
    "Hello, my name is Alice Brown.",
    "Please note that returns are not guaranteed.",
    "I understand and agree.",
)
SILENCE_NOISE = 20.0  # int16 amplitude of the silent half: a quiet room, not digital zero


def _check(value: int) -> int:
    """CRC-4 (x^4 + x + 1) of the counter: any single flipped block is detected."""
    crc = 0
    for shift in range(COUNTER_BITS - 1, -1, -1):
        feedback = ((value >> shift) & 1) ^ (crc >> 3)
        crc = (crc << 1) & 0xF
        if feedback:
            crc ^= 0x3
    return crc


def counter_bits(value: int) -> list[int]:
    word = (value << CHECK_BITS) | _check(value)
    return [(word >> (BLOCKS - 1 - i)) & 1 for i in range(BLOCKS)]


def stamp_counter(y_plane: NDArray[np.uint8], value: int) -> None:
    for i, bit in enumerate(counter_bits(value)):
        left = i * BLOCK_WIDTH
        y_plane[BAND_TOP : BAND_TOP + BAND_HEIGHT, left : left + BLOCK_WIDTH] = (
            LUMA_WHITE if bit else LUMA_BLACK
        )


def read_counter(y_plane: NDArray[np.uint8]) -> int | None:
    """The counter in a decoded Y plane, or None when the band is unreadable (corrupt frame)."""
    if y_plane.shape[0] < BAND_TOP + BAND_HEIGHT or y_plane.shape[1] < WIDTH:
        return None
    # Sample the middle of each block so ringing at block edges cannot flip a bit.
    band = y_plane[BAND_TOP + 16 : BAND_TOP + BAND_HEIGHT - 16, : BLOCKS * BLOCK_WIDTH]
    means = band.reshape(band.shape[0], BLOCKS, BLOCK_WIDTH)[:, :, 8 : BLOCK_WIDTH - 8].mean(axis=(0, 2))
    word = 0
    for mean in means:
        word = (word << 1) | int(mean > 128)
    value = word >> CHECK_BITS
    if (word & ((1 << CHECK_BITS) - 1)) != _check(value):
        return None
    return value


def read_counter_from_frame(frame: av.VideoFrame) -> int | None:
    plane = frame.planes[0]
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        return read_counter(np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8))
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(frame.height, plane.line_size)
    return read_counter(rows[:, : frame.width])


def synth_picture(index: int) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """A moving, smooth picture (so the encoder has realistic work) with the counter band."""
    x = np.arange(WIDTH, dtype=np.float32)[None, :]
    yy = np.arange(HEIGHT, dtype=np.float32)[:, None]
    phase = index * 0.15
    luma = 128 + 60 * np.sin(x / 37.0 + phase) * np.cos(yy / 29.0 - phase * 0.7)
    # A bright square moving across, like a head moving in front of a camera.
    cx = int((index * 6) % (WIDTH - 120))
    luma[120:240, cx : cx + 120] = 200
    y_plane = np.clip(luma, 16, 235).astype(np.uint8)
    stamp_counter(y_plane, index)
    u_plane = np.full((HEIGHT // 2, WIDTH // 2), 128, dtype=np.uint8)
    v_plane = np.full((HEIGHT // 2, WIDTH // 2), 128, dtype=np.uint8)
    u_plane[:, :] = (128 + 30 * np.sin(index * 0.05)).astype(np.uint8)
    return y_plane, u_plane, v_plane


def make_video_frame(index: int) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for plane, data in zip(frame.planes, synth_picture(index), strict=True):
        target = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        target[: data.shape[0], : data.shape[1]] = data
    return frame


def vp8_encoder(
    width: int = WIDTH, height: int = HEIGHT, bitrate: int = VIDEO_BITRATE
) -> av.VideoCodecContext:
    """A realtime libvpx encoder that emits exactly one packet per frame (no lag, no alt-ref)."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = width
    codec.height = height
    codec.bit_rate = bitrate
    codec.pix_fmt = "yuv420p"
    codec.framerate = Fraction(FPS, 1)
    codec.time_base = Fraction(1, FPS)
    codec.gop_size = GOP_FRAMES
    # One thread: the per-frame cost on one core, like aiortc's encoder at this size. Auto threads
    # only add waiting on a busy 2-core machine.
    codec.thread_count = 1
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "auto-alt-ref": "0",
        "error-resilient": "1",
    }
    return codec


@dataclass(frozen=True)
class Clip:
    video: list[bytes]
    audio: list[bytes]


def _encode_video() -> list[bytes]:
    codec = vp8_encoder()
    packets: list[bytes] = []
    for index in range(CLIP_FRAMES):
        frame = make_video_frame(index)
        frame.pts = index
        frame.time_base = Fraction(1, FPS)
        if index % GOP_FRAMES == 0:
            frame.pict_type = av.video.frame.PictureType.I
        packets.extend(bytes(packet) for packet in codec.encode(frame))
    packets.extend(bytes(packet) for packet in codec.encode(None))
    if len(packets) != CLIP_FRAMES:
        raise RuntimeError(f"the VP8 encoder produced {len(packets)} packets for {CLIP_FRAMES} frames")
    return packets


def conversation_pcm() -> NDArray[np.int16]:
    """48 kHz mono int16 for the whole clip: script speech, then quiet room noise."""
    total = int(CLIP_FRAMES / FPS * AUDIO_RATE)
    half = total // 2
    with tempfile.TemporaryDirectory(prefix="finrtc-clip-") as tmp:
        parts = [part for line in SCRIPT_LINES for part in (synthesize(line, Path(tmp)), silence(0.5))]
    # One channel of the 48 kHz stereo resampling the compliance tests use.
    speech = to_48k_stereo(np.concatenate(parts))[:, 0]
    if len(speech) > half:
        raise RuntimeError(f"the script lines last {len(speech) / AUDIO_RATE:.1f} s, more than half the clip")
    rng = np.random.default_rng(7)
    pcm = np.rint(rng.normal(0.0, SILENCE_NOISE, total)).astype(np.int16)
    pcm[: len(speech)] = speech
    return pcm


def _encode_audio() -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = AUDIO_BITRATE
    codec.time_base = AUDIO_TIME_BASE
    pcm = conversation_pcm()
    total = len(pcm)
    packets: list[bytes] = []
    for start in range(0, total - AUDIO_SAMPLES_PER_PACKET + 1, AUDIO_SAMPLES_PER_PACKET):
        chunk = pcm[start : start + AUDIO_SAMPLES_PER_PACKET]
        stereo = np.repeat(chunk[None, :], 2, axis=0).T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = AUDIO_TIME_BASE
        packets.extend(bytes(packet) for packet in codec.encode(frame))
    return packets


def _cache_path() -> Path:
    key = hashlib.sha256(
        f"{CACHE_VERSION}:{WIDTH}x{HEIGHT}@{FPS}:{CLIP_FRAMES}:{GOP_FRAMES}:{VIDEO_BITRATE}:"
        f"{AUDIO_BITRATE}:{av.__version__}:{SCRIPT_LINES}:{SILENCE_NOISE}".encode()
    ).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"finrtc-bench-clip-{key}.bin"


def _write(path: Path, clip: Clip) -> None:
    parts = [struct.pack("<II", len(clip.video), len(clip.audio))]
    for packet in (*clip.video, *clip.audio):
        parts.append(struct.pack("<I", len(packet)))
        parts.append(packet)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(b"".join(parts))
    temporary.replace(path)


def _read(path: Path) -> Clip:
    data = path.read_bytes()
    n_video, n_audio = struct.unpack_from("<II", data, 0)
    offset = 8
    packets: list[bytes] = []
    for _ in range(n_video + n_audio):
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        packets.append(data[offset : offset + length])
        offset += length
    return Clip(packets[:n_video], packets[n_video:])


def load_clip() -> Clip:
    """The clip, encoded once per machine and cached in the temp folder."""
    path = _cache_path()
    if path.exists():
        try:
            clip = _read(path)
            if len(clip.video) == CLIP_FRAMES and clip.audio:
                return clip
        except (OSError, struct.error):
            pass
    clip = Clip(_encode_video(), _encode_audio())
    _write(path, clip)
    return clip
