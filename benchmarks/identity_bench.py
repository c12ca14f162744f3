"""Benchmark of identity checks: CPU per sampled 640x480 frame, share of a call's CPU at the
default sampling, and liveness decision latency after the action; every figure also as a ratio
to the VP8 640x480 encode measured in the same run (finrtc's encoder settings, one thread).

Pictures: the synthetic head (scikit-image's astronaut, warped/eyes closed). CPU times are
thread CPU seconds (`time.thread_time`), medians over `--repeat` passes of `--frames` calls.

Latency: a real-time feed (30 fps of media time paced by the wall clock) through the identity
hook with its background analysis thread; the head turns / blinks at a known media time and the
latency is the media time of the first frame whose sample shows it minus that time, plus the
wall time until the decision event is published.

Voice: flite's slt voice (one real speaker) saying two sentences; the numpy speaker encoder's
CPU per second of speech, and the media worker's cost per second of 48 kHz audio (resampling
and the energy VAD that collect the speech).

Run: python -m benchmarks.identity_bench [--frames 40] [--repeat 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from benchmarks.clip import vp8_encoder
from finrtc.hooks.contract import HookContext, VideoFrame
from finrtc.identity.analysis import FaceAnalyzer, rgb_from_yuv420
from finrtc.identity.models import FaceModels
from finrtc.identity.service import IdentityHook, IdentitySession
from finrtc.identity.settings import IdentityConfig
from finrtc.identity.testing import base_head, eyes_closed, turned
from finrtc.identity.voice import VoicedAudio, read_wav, shared_encoder, to_mono_16k, voiced
from finrtc.model import MediaKind, Role, Severity, TrackInfo

FPS = 30
TRACK = TrackInfo("bench", "s1", "carol", Role.CUSTOMER, "v0", MediaKind.VIDEO)


def yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    h, w = rgb.shape[:2]
    y = np.ascontiguousarray(i420[:h])
    chroma = i420[h:].reshape(-1)
    u = np.ascontiguousarray(chroma[: (h // 2) * (w // 2)].reshape(h // 2, w // 2))
    v = np.ascontiguousarray(chroma[(h // 2) * (w // 2) :].reshape(h // 2, w // 2))
    return y, u, v


def cpu_per_call(function: Any, calls: int) -> float:
    function(0)  # warm-up
    started = time.thread_time()
    for index in range(calls):
        function(index + 1)
    return (time.thread_time() - started) / calls


def measure_costs(frames: int) -> dict[str, float]:
    models = FaceModels()
    pictures = [base_head()[0], turned(0.3), turned(-0.3), eyes_closed()]
    planes = [yuv(p) for p in pictures]
    grays = [y for y, _, _ in planes]

    encoder = vp8_encoder(640, 480)
    av_frames = []
    for rgb in pictures:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        av_frames.append(frame)
    clock = itertools.count()

    def encode(index: int) -> None:
        frame = av_frames[index % len(av_frames)]
        frame.pts = next(clock)
        frame.time_base = Fraction(1, FPS)
        encoder.encode(frame)

    untracked = FaceAnalyzer(models)

    def detect_full(index: int) -> None:
        untracked._last = None  # every call searches the whole frame
        untracked.analyze(grays[index % 4], None)

    tracked = FaceAnalyzer(models)
    tracked.analyze(grays[0], None)

    def landmarks_tracked(index: int) -> None:
        tracked.analyze(grays[index % 4], None)

    embedder = FaceAnalyzer(models)
    embedder.analyze(grays[0], None)
    rgbs = [rgb_from_yuv420(*p) for p in planes]

    def embedding(index: int) -> None:
        embedder.analyze(grays[index % 4], rgbs[index % 4])

    def frame_path(index: int) -> None:
        y, u, v = planes[index % 4]
        np.array(y, copy=True)
        rgb_from_yuv420(y, u, v)

    return {
        "vp8_encode_480p_s": cpu_per_call(encode, frames * 2),
        "detect_full_frame_and_landmarks_s": cpu_per_call(detect_full, frames),
        "tracked_detect_and_landmarks_s": cpu_per_call(landmarks_tracked, frames),
        "tracked_landmarks_and_embedding_s": cpu_per_call(embedding, max(5, frames // 4)),
        "media_worker_copy_and_rgb_s": cpu_per_call(frame_path, frames * 2),
    }


def flite_speech() -> np.ndarray:
    import subprocess

    text = ("Please confirm that you understand the risks of this investment product and agree to the "
            "terms. My name is on the application form and I was born in the city where I still live.")
    done = subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", "/dev/stdout"],
                          capture_output=True, check=True, timeout=60)
    return read_wav(done.stdout)


def measure_voice(repeat: int) -> dict[str, float]:
    """CPU seconds per second of audio: the embedding, and the media worker's collection."""
    speech = voiced(flite_speech())
    encoder = shared_encoder()
    seconds = speech.size / 16000
    encoder.embed_utterance(speech)  # warm-up
    costs = []
    for _ in range(repeat):
        started = time.thread_time()
        encoder.embed_utterance(speech)
        costs.append((time.thread_time() - started) / seconds)
    pcm = np.clip(np.repeat(speech, 3) * 32767, -32768, 32767).astype(np.int16)
    stereo = np.repeat(pcm[:, None], 2, axis=1)
    chunks = [stereo[i : i + 960] for i in range(0, stereo.shape[0] - 960, 960)]
    collector = VoicedAudio(1000.0)
    started = time.thread_time()
    for chunk in chunks:
        collector.feed(to_mono_16k(chunk, 48000))
    collect = (time.thread_time() - started) / (len(chunks) * 0.02)
    return {"voice_embedding_per_audio_s": statistics.median(costs),
            "voice_collect_per_audio_s": collect, "voice_speech_s": seconds}


def measure_latency(action: str) -> dict[str, float]:
    """One challenge with a single action performed 1 s after the first prompt."""
    config = IdentityConfig(enabled=True)
    models = FaceModels()
    media = {"now": 0.0}
    published: list[tuple[str, dict[str, Any], float]] = []

    def publish(event_type: str, data: dict[str, Any], severity: Severity, audience: Any) -> None:
        published.append((event_type, data, time.perf_counter()))

    session = IdentitySession("bench", config, models, publish, lambda: media["now"])
    hook = IdentityHook(HookContext(TRACK, "identity", lambda event: None), session)
    rest = yuv(base_head()[0])
    acting = yuv(turned(0.35) if action == "turn_left" else eyes_closed())
    second = "blink" if action == "turn_left" else "turn_left"
    session.start_challenge("carol", [action, second])
    prompted_at: float | None = None
    action_at: float | None = None
    start = time.perf_counter()
    for index in itertools.count():
        now = index / FPS
        media["now"] = now
        # Real time: the analysis thread gets the wall time it would get in a call.
        delay = start + now - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if prompted_at is None and any(e[0] == "identity.liveness_prompt" for e in published):
            prompted_at = now
        acting_now = action_at is not None and now - action_at < (0.25 if action == "blink" else 0.8)
        if prompted_at is not None and action_at is None and now >= prompted_at + 1.0:
            action_at, acting_now = now, True
        y, u, v = acting if acting_now else rest
        hook.process_video(VideoFrame(y, u, v, 640, 480, now, time.time(), index).read_only())
        done = [e for e in published if e[0] == "identity.liveness_action"]
        if done or now > 15:
            break
    hook.close()
    if not done or action_at is None:
        raise RuntimeError(f"{action} was not detected: {[e[0] for e in published]}")
    detected = done[0][1]["detected_media_time"]
    wall_action = start + action_at
    return {
        "media_latency_s": round(detected - action_at, 4),
        "wall_latency_s": round(done[0][2] - wall_action, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    passes = [measure_costs(args.frames) for _ in range(args.repeat)]
    costs = {key: statistics.median(p[key] for p in passes) for key in passes[0]}
    encode = costs["vp8_encode_480p_s"]
    voice = measure_voice(args.repeat)
    config = IdentityConfig()
    # CPU seconds per second of a 30 fps call, at the default sampling of each phase.
    challenge_load = config.challenge_fps * costs["tracked_detect_and_landmarks_s"]
    # Deciding: `match_samples` embeddings `match_interval_s` apart; then one round per re-check.
    match_load = (1.0 / config.match_interval_s) * costs["tracked_landmarks_and_embedding_s"]
    recheck_load = (
        config.match_samples / config.recheck_interval_s * costs["tracked_landmarks_and_embedding_s"]
    )
    codec_load = FPS * encode
    latencies = {
        action: [measure_latency(action) for _ in range(max(1, args.repeat // 2 + 1))]
        for action in ("turn_left", "blink")
    }
    result = {
        "benchmark": "identity",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "frames": args.frames,
        "repeat": args.repeat,
        "passes": passes,
        "median_cpu_s": costs,
        "ratio_to_vp8_encode": {key: round(value / encode, 3) for key, value in costs.items()},
        "defaults": {"challenge_fps": config.challenge_fps, "match_interval_s": config.match_interval_s},
        "cpu_s_per_call_second": {
            "vp8_encode_30fps": round(codec_load, 4),
            "liveness_challenge": round(challenge_load, 4),
            "face_match_deciding": round(match_load, 4),
            "face_match_rechecking": round(recheck_load, 4),
        },
        "share_of_encode_cpu": {
            "liveness_challenge": round(challenge_load / codec_load, 3),
            "face_match_deciding": round(match_load / codec_load, 3),
            "face_match_rechecking": round(recheck_load / codec_load, 3),
        },
        "voice": {
            "speech_s": round(voice["voice_speech_s"], 2),
            "median_cpu_s_per_audio_s": {
                "embedding": round(voice["voice_embedding_per_audio_s"], 4),
                "media_worker_collect": round(voice["voice_collect_per_audio_s"], 5),
            },
            # One audio-second of embedding (resp. collection) in VP8 480p frame encodes.
            "ratio_to_vp8_encode": {
                "embedding_per_audio_s": round(voice["voice_embedding_per_audio_s"] / encode, 3),
                "collect_per_audio_s": round(voice["voice_collect_per_audio_s"] / encode, 3),
            },
            # An enrolment (voice_enrol_s of speech) runs once, as does each verification.
            "enrolment_cpu_s": round(config.voice_enrol_s * voice["voice_embedding_per_audio_s"], 3),
            "verification_cpu_s": round(config.voice_verify_s * voice["voice_embedding_per_audio_s"], 3),
            "collect_share_of_encode_cpu": round(voice["voice_collect_per_audio_s"] / codec_load, 4),
        },
        "liveness_latency": {
            action: {
                "runs": runs,
                "median_media_latency_s": statistics.median(r["media_latency_s"] for r in runs),
                "median_wall_latency_s": statistics.median(r["wall_latency_s"] for r in runs),
            }
            for action, runs in latencies.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"identity-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    summary = ("ratio_to_vp8_encode", "share_of_encode_cpu", "voice", "liveness_latency")
    print(json.dumps({key: result[key] for key in summary}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
