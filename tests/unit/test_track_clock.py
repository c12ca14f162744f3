from __future__ import annotations

import itertools
import random

from finrtc.media.clock import SLEW, TrackClock


def run(
    clock: TrackClock,
    frames: int,
    rate: float,
    fps: float,
    start: float,
    jitter: float = 0.0,
    first_extra: float = 0.0,
) -> list[tuple[float, float]]:
    """Frames with RTP time i/fps arriving at start + i/(fps*rate) + network jitter."""
    out = []
    rng = random.Random(7)
    for i in range(frames):
        rtp = i / fps
        arrival = start + rtp / rate + 0.05 + rng.random() * jitter + (first_extra if i == 0 else 0.0)
        out.append((clock.media_time(rtp, arrival), arrival))
    return out


def test_media_time_is_monotonic_and_follows_arrival_of_least_delayed_frames() -> None:
    results = run(TrackClock(), 600, rate=1.0, fps=30, start=2.0, jitter=0.04, first_extra=0.5)
    media = [m for m, _ in results]
    assert all(b >= a for a, b in itertools.pairwise(media))
    # A late first frame shifted the anchor by 0.5 s; after catching up the error is tiny.
    tail_error = [arrival - m for m, arrival in results[-60:]]
    assert max(tail_error) < 0.1 and min(tail_error) > -0.01


def test_a_slow_publisher_clock_is_tracked_within_the_slew_rate() -> None:
    # The publisher's RTP clock runs 20 % slow: a fixed anchor would drift 1 s per 5 s.
    results = run(TrackClock(), 300, rate=0.8, fps=30, start=0.0)
    error = [arrival - m for m, arrival in results]
    # The least-delay window lags a 20 % rate error by WINDOW_S * 0.25; real clocks drift ppm.
    assert max(error[-30:]) < 0.15


def test_audio_and_video_anchor_alike() -> None:
    audio = run(TrackClock(), 250, rate=0.85, fps=50, start=1.0, jitter=0.02)
    video = run(TrackClock(), 150, rate=0.85, fps=30, start=1.0, jitter=0.03, first_extra=0.3)
    assert abs((audio[-1][1] - audio[-1][0]) - (video[-1][1] - video[-1][0])) < 0.1


def test_jumps_re_anchor_immediately() -> None:
    clock = TrackClock()
    clock.media_time(0.0, 1.0)
    assert abs(clock.media_time(100.0, 1.05) - 1.05) < 0.01
    assert SLEW < 0.5


def test_audio_clock_without_slew_keeps_its_sample_time() -> None:
    clock = TrackClock(slew=0.0)
    media = [clock.media_time(i * 0.02, 1.0 + i * 0.025) for i in range(200)]
    # Samples arrive 25 % late; audio time still advances exactly 20 ms per chunk.
    assert all(abs((b - a) - 0.02) < 1e-9 for a, b in itertools.pairwise(media))
