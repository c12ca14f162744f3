"""Benchmark of the sealed archive: sealing cost per segment and verify time of a long archive.

A 2-second GOP of real VP8 (640x480, 30 fps, finrtc's default 800 kbit/s, libvpx realtime) and
100 real 20 ms Opus packets are encoded once, then replayed with shifted timestamps to synthesize
an archive of any length cheaply. The recording goes through `SessionRecorder` exactly as in the
server (bounded queue, writer thread, fsync'ed local storage); `offer()` is timed per call.

Run: python -m benchmarks.archive_bench [--minutes 60] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fractions
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from finrtc.archive.keys import (
    Signer,
    generate_keys,
    load_archive_private_key,
    load_archive_public_key,
    load_verify_key,
)
from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.settings import ArchiveConfig
from finrtc.archive.storage import LocalStorage
from finrtc.archive.verify import VerifyOptions, verify_session
from finrtc.model import EncodedPacket, MediaKind, Role, TrackInfo

WIDTH, HEIGHT, FPS = 640, 480, 30


def encode_gop(seconds: float) -> tuple[list[EncodedPacket], list[EncodedPacket]]:
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90_000)
    encoder.bit_rate = 800_000
    encoder.gop_size = int(seconds * FPS)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(1)
    # A camera-like picture: gradient, a moving bar, light sensor noise (pure noise would make
    # libvpx overshoot the bitrate several times and the numbers meaningless).
    base = np.tile(np.linspace(40, 200, WIDTH), (HEIGHT, 1))
    video = []
    for index in range(int(seconds * FPS)):
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        picture = base + rng.normal(0, 2, (HEIGHT, WIDTH))
        x = (index * 8) % WIDTH
        picture[:, x : x + 24] = 230
        luma = np.clip(picture, 0, 255).astype(np.uint8)
        frame.planes[0].update(np.ascontiguousarray(luma).tobytes())
        chroma = np.full((HEIGHT // 2) * (WIDTH // 2), 128, np.uint8).tobytes()
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frame.pts = index * 90_000 // FPS
        frame.time_base = fractions.Fraction(1, 90_000)
        for packet in encoder.encode(frame):
            video.append(
                EncodedPacket(
                    "cam",
                    MediaKind.VIDEO,
                    len(video),
                    bytes(packet),
                    int(packet.pts or 0),
                    (1, 90_000),
                    bool(packet.is_keyframe),
                    0.0,
                    90_000 // FPS,
                )
            )
    audio_encoder = av.CodecContext.create("libopus", "w")
    audio_encoder.sample_rate, audio_encoder.layout, audio_encoder.format = 48_000, "stereo", "s16"
    audio_encoder.time_base = fractions.Fraction(1, 48_000)
    audio_encoder.bit_rate = 32_000
    audio = []
    for index in range(int(seconds * 50)):
        t = (np.arange(960) + index * 960) / 48_000
        tone = (np.sin(2 * np.pi * 220 * t) * 6000 + rng.normal(0, 800, 960)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone[:, None], 2, 1).reshape(1, -1).copy(), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48_000, index * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        for packet in audio_encoder.encode(frame):
            audio.append(
                EncodedPacket(
                    "mic",
                    MediaKind.AUDIO,
                    len(audio),
                    bytes(packet),
                    len(audio) * 960,
                    (1, 48_000),
                    True,
                    0.0,
                    960,
                )
            )
    return video, audio


def interleave(video: list[EncodedPacket], audio: list[EncodedPacket]) -> list[EncodedPacket]:
    return sorted(video + audio, key=lambda p: p.media_time)


def run(minutes: float, directory: Path, segment_seconds: float) -> dict[str, Any]:
    video, audio = encode_gop(segment_seconds)
    gop = interleave(video, audio)
    gop_video = sum(1 for p in gop if p.kind is MediaKind.VIDEO)
    gop_audio = len(gop) - gop_video
    segments = int(minutes * 60 / segment_seconds)
    paths = generate_keys(directory / "keys")
    signer = Signer.from_file(paths.signer_key)
    config = ArchiveConfig(segment_seconds=segment_seconds)
    storage = LocalStorage(directory / "archive")
    recorder = SessionRecorder.create(
        config,
        directory,
        "bench",
        "s1",
        "default",
        None,
        signer,
        [load_archive_public_key(paths.archive_pub)],
        storage=storage,
    )
    recorder.add_track(
        TrackInfo("bench", "s1", "p", Role.AGENT, "cam", MediaKind.VIDEO), width=WIDTH, height=HEIGHT
    )
    recorder.add_track(TrackInfo("bench", "s1", "p", Role.AGENT, "mic", MediaKind.AUDIO))
    asyncio.run(recorder.start())
    offer_times: list[float] = []
    wall0 = time.time()
    started = time.perf_counter()
    limit = config.queue_packets // 2
    for k in range(segments):
        shift = k * segment_seconds
        for packet in gop:
            is_video = packet.kind is MediaKind.VIDEO
            per_gop = gop_video if is_video else gop_audio
            rate = 90_000 if is_video else 48_000
            shifted = dataclasses.replace(
                packet,
                pts=packet.pts + int(shift * rate),
                sequence=packet.sequence + k * per_gop,
                wall_clock=wall0 + shift + packet.media_time,
            )
            # Replay as fast as the writer keeps up (no drops): the queue is the only buffer.
            while recorder.backlog > limit:
                time.sleep(0.001)
            t0 = time.perf_counter()
            recorder.offer(shifted)
            offer_times.append(time.perf_counter() - t0)
        if k % 100 == 0:
            print(f"recording: {k}/{segments} segments", file=sys.stderr, flush=True)
    asyncio.run(recorder.close())
    record_seconds = time.perf_counter() - started
    seals = sorted(recorder.seal_seconds)
    size = sum(p.stat().st_size for p in (directory / "archive").rglob("*") if p.is_file())
    session = directory / "archive" / "bench" / "s1"
    verify_key = load_verify_key(paths.signer_pub)
    archive_key = load_archive_private_key(paths.archive_key)
    results: dict[str, Any] = {
        "media_minutes": minutes,
        "video_kbps": sum(len(p.data) for p in video) * 8 / segment_seconds / 1000,
        "audio_kbps": sum(len(p.data) for p in audio) * 8 / segment_seconds / 1000,
        "segment_seconds": segment_seconds,
        "segments": recorder.segments_sealed,
        "archive_bytes": size,
        "packets": len(offer_times),
        "dropped": recorder.dropped_packets,
        "offer_us_mean": statistics.fmean(offer_times) * 1e6,
        "offer_us_p99": sorted(offer_times)[int(len(offer_times) * 0.99)] * 1e6,
        "seal_ms_mean": statistics.fmean(seals) * 1000,
        "seal_ms_p50": seals[len(seals) // 2] * 1000,
        "seal_ms_p95": seals[int(len(seals) * 0.95)] * 1000,
        "record_wall_seconds": record_seconds,
        "writer_realtime_factor": minutes * 60 / record_seconds,
    }
    for label, key in (("verify_structure", None), ("verify_content", archive_key)):
        t0 = time.perf_counter()
        report = verify_session(LocalStorage(session), "", verify_key, key, VerifyOptions())
        results[f"{label}_seconds"] = time.perf_counter() - t0
        results[f"{label}_exit"] = report.exit_code
    t0 = time.perf_counter()
    report = verify_session(
        LocalStorage(session), "", verify_key, archive_key, VerifyOptions(segment=segments // 2)
    )
    results["verify_single_segment_seconds"] = time.perf_counter() - t0
    results["verify_single_segment_exit"] = report.exit_code
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic archive")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="finrtc-archive-bench-"))
    try:
        results = run(args.minutes, directory, args.segment_seconds)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
