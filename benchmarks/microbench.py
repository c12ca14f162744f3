"""Micro-benchmark: the hook chain alone against the codec work it rides on.

Each configured hook (from the F2 config file) runs on its own and then the whole chain runs, on
640x480 and 1280x720 frames and on 20 ms audio chunks, through `load_hooks` + `HookChain` exactly
as a track pipeline builds them. The codec cost is a VP8 decode + encode of the same frames
(libvpx realtime with finrtc's default speed and bitrate) and an Opus decode + encode of the
same chunks. `hook_share_of_encode` = chain time per 480p frame / VP8 480p encode time.

Run alone: python -m benchmarks.microbench [--config FILE] [--frames N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from benchmarks.clip import vp8_encoder
from benchmarks.common import percentile
from finrtc.config import HookSpec, VideoEncodingConfig
from finrtc.hooks.chain import HookChain, HookFactory
from finrtc.hooks.contract import AudioChunk, HookEvent, Stage, VideoFrame
from finrtc.hooks.loader import load_hooks
from finrtc.model import EncodedPacket, MediaKind, Role, TrackInfo

SIZES = {"480p": (640, 480), "720p": (1280, 720)}


def synth_planes(width: int, height: int, index: int) -> tuple[NDArray[np.uint8], ...]:
    x = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    phase = index * 0.15
    luma = 128 + 60 * np.sin(x / 37.0 + phase) * np.cos(yy / 29.0 - phase * 0.7)
    side = height // 4
    left = int((index * 6) % (width - side))
    luma[height // 4 : height // 4 + side, left : left + side] = 200
    y_plane = np.clip(luma, 16, 235).astype(np.uint8)
    u_plane = np.full((height // 2, width // 2), 120, dtype=np.uint8)
    v_plane = np.full((height // 2, width // 2), 136, dtype=np.uint8)
    return y_plane, u_plane, v_plane


def to_av_frame(planes: Sequence[NDArray[np.uint8]], width: int, height: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, data in zip(frame.planes, planes, strict=True):
        target = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        target[: data.shape[0], : data.shape[1]] = data
    return frame


def summarize(samples: list[float]) -> dict[str, float | None]:
    micro = [s * 1e6 for s in samples]
    return {
        "n": len(micro),
        "mean_us": sum(micro) / len(micro) if micro else None,
        "p50_us": percentile(micro, 0.5),
        "p99_us": percentile(micro, 0.99),
    }


def time_calls(call: Callable[[int], None], count: int, warmup: int = 3) -> list[float]:
    for index in range(warmup):
        call(index)
    samples = []
    for index in range(count):
        started = time.perf_counter()
        call(index)
        samples.append(time.perf_counter() - started)
    return samples


def _track(kind: MediaKind) -> TrackInfo:
    return TrackInfo(
        room="bench-micro",
        session_id="micro-session",
        participant="agent-1",
        role=Role.AGENT,
        track_id=f"micro-{kind.value}",
        kind=kind,
    )


def _chain(factories: list[HookFactory], kind: MediaKind, events: list[HookEvent]) -> HookChain:
    return HookChain(_track(kind), factories, events.append)


def video_bench(factories: list[HookFactory], frames: int) -> dict[str, Any]:
    return {
        label: video_bench_size(factories, frames, width, height) for label, (width, height) in SIZES.items()
    }


def video_bench_size(factories: list[HookFactory], frames: int, width: int, height: int) -> dict[str, Any]:
    encoding = VideoEncodingConfig()
    sources = [synth_planes(width, height, i) for i in range(frames)]

    def time_chain(
        chain: HookChain,
        w: int = width,
        h: int = height,
        sources: list[tuple[NDArray[np.uint8], ...]] = sources,
    ) -> dict[str, Any]:
        elapsed: list[float] = []
        for index in range(frames + 3):
            # The copy stands in for the decoder's fresh frame; it is not timed.
            y, u, v = (plane.copy() for plane in sources[index % len(sources)])
            frame = VideoFrame(y, u, v, w, h, index / 30.0, time.time(), index)
            started = time.perf_counter()
            chain.run_video(frame)
            elapsed.append(time.perf_counter() - started)
        return summarize(elapsed[3:])

    per_hook: dict[str, Any] = {}
    events: list[HookEvent] = []
    video_factories = [f for f in factories if f.handles(MediaKind.VIDEO)]
    frame_factories = [f for f in video_factories if f.hook_class.stage is not Stage.POST_ENCODE]
    for factory in frame_factories:
        chain = _chain([factory], MediaKind.VIDEO, events)
        per_hook[factory.name] = time_chain(chain)
        chain.close()
    chain = _chain(frame_factories, MediaKind.VIDEO, events)
    chain_stats = time_chain(chain)
    chain.close()

    encoder = vp8_encoder(width, height, encoding.bitrate_bps)
    encoder.options = {**encoder.options, "cpu-used": str(encoding.cpu_used)}
    av_frames = [to_av_frame(p, width, height) for p in sources]
    encoded: list[bytes] = []
    clock = itertools.count()

    def encode(
        index: int,
        encoder: av.VideoCodecContext = encoder,
        av_frames: list[av.VideoFrame] = av_frames,
        clock: Iterator[int] = clock,
    ) -> None:
        frame = av_frames[index % len(av_frames)]
        # pts must keep rising across the untimed warm-up calls too.
        frame.pts = next(clock)
        frame.time_base = Fraction(1, 30)
        encoded.extend(bytes(p) for p in encoder.encode(frame))

    encode_samples = time_calls(encode, frames)
    decoder = av.CodecContext.create("vp8", "r")

    def decode(index: int, decoder: Any = decoder) -> None:
        decoder.decode(av.Packet(encoded[index % len(encoded)]))

    decode_samples = time_calls(decode, len(encoded))

    # What B0 pays per subscriber and frame: aiortc's own VP8 encoder with its stock settings
    # (cpu-used -6, denoiser on, 500 kb/s), packetization included.
    from aiortc.codecs.vpx import Vp8Encoder

    stock = Vp8Encoder()
    stock_clock = itertools.count()

    def encode_stock(index: int) -> None:
        frame = av_frames[index % len(av_frames)]
        frame.pts = next(stock_clock)
        frame.time_base = Fraction(1, 30)
        stock.encode(frame)

    stock_samples = time_calls(encode_stock, frames)

    # libvpx VP8 treats a positive cpu-used as *adaptive* speed (it may spend the frame's time
    # budget); the negative value is the same speed, fixed. Measured side by side.
    fixed = vp8_encoder(width, height, encoding.bitrate_bps)
    fixed.options = {**fixed.options, "cpu-used": str(-abs(encoding.cpu_used))}
    fixed_clock = itertools.count()

    def encode_fixed(index: int) -> None:
        frame = av_frames[index % len(av_frames)]
        frame.pts = next(fixed_clock)
        frame.time_base = Fraction(1, 30)
        fixed.encode(frame)

    fixed_samples = time_calls(encode_fixed, frames)

    post: dict[str, Any] = {}
    post_factories = [f for f in video_factories if f.hook_class.stage is Stage.POST_ENCODE]
    for factory in post_factories:
        chain = _chain([factory], MediaKind.VIDEO, events)

        def run_packet(index: int, chain: HookChain = chain) -> None:
            data = encoded[index % len(encoded)]
            chain.run_packet(
                EncodedPacket(
                    "micro-video",
                    MediaKind.VIDEO,
                    index,
                    data,
                    index * 3000,
                    (1, 90000),
                    index == 0,
                    time.time(),
                    3000,
                )
            )

        post[factory.name] = summarize(time_calls(run_packet, frames))
        chain.close()

    encode_stats = summarize(encode_samples)
    decode_stats = summarize(decode_samples)
    return {
        "hooks": per_hook,
        "post_encode_hooks": post,
        "chain": chain_stats,
        "vp8_encode": encode_stats,
        "vp8_decode": decode_stats,
        "vp8_encode_aiortc_stock": summarize(stock_samples),
        "vp8_encode_fixed_speed": summarize(fixed_samples),
        "cpu_used": encoding.cpu_used,
        "chain_share_of_encode": (
            chain_stats["mean_us"] / encode_stats["mean_us"]
            if chain_stats["mean_us"] is not None and encode_stats["mean_us"]
            else None
        ),
        # Medians ignore periodic heavy frames (e.g. a detector every Nth frame) and noise.
        "chain_share_of_encode_p50": (
            chain_stats["p50_us"] / encode_stats["p50_us"]
            if chain_stats["p50_us"] is not None and encode_stats["p50_us"]
            else None
        ),
        "chain_share_of_codec": (
            chain_stats["mean_us"] / (encode_stats["mean_us"] + decode_stats["mean_us"])
            if chain_stats["mean_us"] is not None and encode_stats["mean_us"] and decode_stats["mean_us"]
            else None
        ),
    }


def audio_bench(factories: list[HookFactory], chunks: int) -> dict[str, Any]:
    samples_per_chunk = 960
    t = np.arange(samples_per_chunk * chunks, dtype=np.float32) / 48000
    pcm = (0.2 * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16)
    events: list[HookEvent] = []
    audio_factories = [
        f for f in factories if f.handles(MediaKind.AUDIO) and f.hook_class.stage is not Stage.POST_ENCODE
    ]

    def chunk_at(index: int) -> AudioChunk:
        start = (index % chunks) * samples_per_chunk
        mono = pcm[start : start + samples_per_chunk]
        return AudioChunk(np.stack([mono, mono], axis=1).copy(), 48000, index * 0.02, time.time(), index)

    def timed_chain(chain: HookChain) -> dict[str, float | None]:
        prepared = [chunk_at(i) for i in range(chunks)]
        return summarize(time_calls(lambda i: chain.run_audio(prepared[i % chunks]), chunks))

    per_hook = {}
    for factory in audio_factories:
        chain = _chain([factory], MediaKind.AUDIO, events)
        per_hook[factory.name] = timed_chain(chain)
        chain.close()
    chain = _chain(audio_factories, MediaKind.AUDIO, events)
    chain_stats = timed_chain(chain)
    chain.close()

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.bit_rate = 32000
    encoder.time_base = Fraction(1, 48000)
    packets: list[bytes] = []
    clock = itertools.count()

    def encode(index: int) -> None:
        chunk = chunk_at(index)
        frame = av.AudioFrame.from_ndarray(chunk.samples.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = next(clock) * samples_per_chunk
        frame.time_base = Fraction(1, 48000)
        packets.extend(bytes(p) for p in encoder.encode(frame))

    encode_stats = summarize(time_calls(encode, chunks))
    decoder = av.CodecContext.create("opus", "r")

    def decode(index: int) -> None:
        decoder.decode(av.Packet(packets[index % len(packets)]))

    decode_stats = summarize(time_calls(decode, len(packets)))
    return {
        "hooks": per_hook,
        "chain": chain_stats,
        "opus_encode": encode_stats,
        "opus_decode": decode_stats,
    }


def run_microbench(
    hook_specs: list[HookSpec], frames: int = 120, base_dir: Path | None = None
) -> dict[str, Any]:
    factories = load_hooks(hook_specs, base_dir)
    video = video_bench(factories, frames)
    audio = audio_bench(factories, max(frames, 50))
    return {
        "hooks": [f.name for f in factories],
        "video": video,
        "audio": audio,
        "hook_share_of_encode": video["480p"]["chain_share_of_encode"],
        "hook_share_of_encode_p50": video["480p"]["chain_share_of_encode_p50"],
    }


def main() -> None:
    from benchmarks.variants import DEFAULT_F2_CONFIG, loadable_hook_specs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_F2_CONFIG)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    config, _notes = loadable_hook_specs(args.config)
    print(json.dumps(run_microbench(config.hooks, args.frames, args.config.parent), indent=2))


if __name__ == "__main__":
    main()
