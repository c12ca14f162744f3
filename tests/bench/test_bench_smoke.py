"""The benchmark harness pieces, run tiny and untimed, so CI notices when the harness breaks.

Nothing here asserts a performance figure: only that each piece measures what it claims to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from benchmarks import clip, common, loadgen, report
from benchmarks.run import evaluate_slo, smoke_problems
from benchmarks.variants import BenchError, Server, loadable_hook_specs, prepare_finrtc_config
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from finrtc.config import HookSpec
from finrtc.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_counter_survives_a_vp8_round_trip() -> None:
    encoder = clip.vp8_encoder()
    decoder = av.CodecContext.create("vp8", "r")
    seen: list[int | None] = []
    for index in (0, 1, 2, 417, 599):
        frame = clip.make_video_frame(index)
        frame.pts = len(seen)
        frame.time_base = Fraction(1, clip.FPS)
        for packet in encoder.encode(frame):
            for decoded in decoder.decode(av.Packet(bytes(packet))):
                seen.append(clip.read_counter_from_frame(decoded))
    assert seen == [0, 1, 2, 417, 599]


def test_counter_rejects_a_damaged_band() -> None:
    y_plane, _, _ = clip.synth_picture(123)
    assert clip.read_counter(y_plane) == 123
    # Flip one block: the check bits no longer match, so no wrong latency can be computed.
    left = 3 * clip.BLOCK_WIDTH
    band = y_plane[clip.BAND_TOP : clip.BAND_TOP + clip.BAND_HEIGHT, left : left + clip.BLOCK_WIDTH]
    band[:] = 255 - band
    assert clip.read_counter(y_plane) is None
    assert clip.read_counter(np.zeros((100, 100), dtype=np.uint8)) is None


def test_clip_is_cached_and_complete() -> None:
    first = clip.load_clip()
    second = clip.load_clip()
    assert len(first.video) == clip.CLIP_FRAMES
    assert first.video[0] == second.video[0]
    # Opus packets of 20 ms covering the clip.
    assert len(first.audio) >= clip.CLIP_FRAMES / clip.FPS * 50 - 2


def test_histogram_quantile_from_a_real_registry() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "finrtc_hook_seconds", "x", ["hook", "stage"], registry=registry, buckets=(0.001, 0.01, 0.1)
    )
    child = histogram.labels(hook="w", stage="mutate")
    for _ in range(90):
        child.observe(0.0005)
    before = common.histograms(
        common.parse_metrics(generate_latest(registry).decode()), "finrtc_hook_seconds"
    )
    for _ in range(100):
        child.observe(0.05)
    after = common.histograms(common.parse_metrics(generate_latest(registry).decode()), "finrtc_hook_seconds")
    key = next(iter(after))
    assert dict(key[1]) == {"hook": "w", "stage": "mutate"}
    # Over the whole life most samples are fast; over the window only slow ones remain.
    whole = common.histogram_quantile(after[key], 0.4)
    window = common.histogram_quantile(common.bucket_delta(after[key], before[key]), 0.5)
    assert whole is not None and whole <= 0.001
    assert window is not None and 0.01 < window <= 0.1


def test_proc_accounting_covers_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert child.pid in common.descendants(os.getpid())
        assert common.rss_bytes(os.getpid()) > common.rss_bytes(child.pid) > 0
        started = common.cpu_seconds(os.getpid())
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:
            pass
        assert common.cpu_seconds(os.getpid()) - started >= 0.1
    finally:
        child.kill()
        child.wait()


def _point(variant: str, count: int, p95: float, fps_min: float = 30.0, **extra: Any) -> dict[str, Any]:
    point = {
        "variant": variant,
        "scenario": "fanout",
        "count": count,
        "subscriber_streams": count,
        "connected": count,
        "errors": [],
        "latency_ms": {"n": 10, "p50": p95 - 5, "p95": p95, "p99": p95 + 5},
        "fps": {"min": fps_min, "mean": fps_min},
        "loss_pct": {"video": 0.0, "audio": 0.0},
        "server": {"cpu_cores": 0.1 * count, "cpu_s_per_stream_s": 0.1, "rss_mb_end": 100 + 2 * count},
        "loadgen_cpu_cores": 0.2,
        "repetition": 0,
        **extra,
    }
    point["slo"] = evaluate_slo(point, 40.0)
    return point


def test_slo_verdicts() -> None:
    assert _point("F1", 1, 80.0)["slo"]["pass"]
    late = _point("F1", 1, 95.0)["slo"]
    assert not late["pass"] and "latency" in late["reasons"][0]
    slow = _point("F1", 1, 60.0, fps_min=20.0)["slo"]
    assert not slow["pass"] and "fps" in slow["reasons"][0]
    lossy = _point("F1", 1, 60.0, loss_pct={"video": 2.5, "audio": 0.0})["slo"]
    assert not lossy["pass"] and "loss" in lossy["reasons"][0]
    deaf = _point("F2", 1, 60.0, metrics={"compliance": {"audio_dropped_s": 1.5}})["slo"]
    assert not deaf["pass"] and deaf["sustained"] and "recognition dropped 1.5 s" in deaf["reasons"][0]
    kept_up = _point("F2", 1, 60.0, metrics={"compliance": {"audio_dropped_s": 0.0}})["slo"]
    assert kept_up["pass"]


def test_compliance_counters_are_read_from_the_server_metrics() -> None:
    before = (
        "finrtc_compliance_audio_dropped_seconds_total 2.0\n"
        'finrtc_compliance_utterances_total{decoded="true"} 1.0\n'
    )
    after = (
        "finrtc_compliance_audio_dropped_seconds_total 2.5\n"
        'finrtc_compliance_utterances_total{decoded="true"} 4.0\n'
        'finrtc_compliance_utterances_total{decoded="false"} 3.0\n'
    )
    assert loadgen.metric_summary(before, after)["compliance"] == {
        "audio_dropped_s": 0.5, "utterances_decoded": 3.0, "utterances_spotted_only": 3.0,
    }
    assert "compliance" not in loadgen.metric_summary(None, "finrtc_frames_in_total 1.0\n")


def test_report_ratios_table_and_plot(tmp_path: Path) -> None:
    points = [
        _point("B0", 1, 60),
        _point("B0", 4, 200),
        _point("F1", 1, 60),
        _point("F1", 4, 70),
        _point("F1", 8, 75),
        _point("F2", 1, 60),
        _point("F2", 4, 70),
        _point("F2", 8, 200),
        _point("F2", 1, 60, scenario="calls", subscriber_streams=2, connected=2),
    ]
    micro = {
        "hook_share_of_encode": 0.05,
        "video": {
            size: {
                "hooks": {"w": {"mean_us": 10.0, "p99_us": 20.0}},
                "post_encode_hooks": {},
                "chain": {"mean_us": 10.0, "p99_us": 20.0},
                "vp8_encode": {"mean_us": 200.0, "p99_us": 300.0},
                "vp8_decode": {"mean_us": 50.0, "p99_us": 60.0},
            }
            for size in ("480p", "720p")
        },
        "audio": {
            "chain": {"mean_us": 1.0},
            "opus_encode": {"mean_us": 100.0},
            "opus_decode": {"mean_us": 20.0},
        },
    }
    results = report.assemble(
        mode="test",
        started=time.time(),
        machine={},
        directs=[{"latency_ms": {"n": 5, "p95": 40.0}}],
        points=points,
        soak=[],
        micro=micro,
        notes=["a note"],
        log=[],
        settings={"repetitions": 1, "variants": ["B0", "F1", "F2"]},
    )
    ratios = results["ratios"]
    assert ratios["R_cap_F2_B0"] == 4.0
    assert ratios["R_cap_F1_B0"] == 8.0
    assert ratios["R_cpu_at_subscribers"] == 4
    assert ratios["rss_mb_per_subscriber_F2"] == pytest.approx(2.0)
    assert ratios["calls_at_slo_F2"] == 1
    assert ratios["calls_at_slo_B0"] is None
    report.write(results, tmp_path, latest=True)
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    table = (tmp_path / "latest.md").read_text()
    assert "| R_cap F2/B0 (subscribers of 1 publisher at SLO) | 4.00 |" in table
    assert json.loads((tmp_path / "latest.json").read_text())["ratios"]["R_cap_F2_B0"] == 4.0
    assert smoke_problems(results) == []


def test_f2_config_skips_hooks_that_are_missing_but_not_broken_ones(tmp_path: Path) -> None:
    config = tmp_path / "f2.yaml"
    config.write_text(
        textwrap.dedent("""
        hooks:
          - use: visible_watermark
          - use: finrtc.hooks.builtin.not_landed_yet:Hook
          - use: a_builtin_that_has_not_landed
        archive: {enabled: false}
    """)
    )
    prepared = prepare_finrtc_config(config, tmp_path, "F2")
    assert prepared.hooks == ["visible_watermark"]
    assert "not_landed_yet" in prepared.notes[0]
    assert "a_builtin_that_has_not_landed" in prepared.notes[1]
    config.write_text("hooks:\n  - use: visible_watermark\n    options: {scale: 99}\n")
    kept, _ = loadable_hook_specs(config)
    from benchmarks.microbench import run_microbench

    with pytest.raises(ConfigError, match="options"):
        run_microbench(kept.hooks, frames=2)


def test_microbench_times_hooks_and_codecs() -> None:
    from benchmarks.microbench import run_microbench

    result = run_microbench([HookSpec(use="visible_watermark")], frames=4)
    video = result["video"]["480p"]
    assert set(video["hooks"]) == {"visible_watermark"}
    assert video["vp8_encode"]["mean_us"] > 0 and video["vp8_decode"]["mean_us"] > 0
    assert result["hook_share_of_encode"] is not None and result["hook_share_of_encode"] > 0
    assert result["audio"]["opus_encode"]["n"] > 0


def test_baseline_server_and_load_generator_end_to_end(tmp_path: Path) -> None:
    server = Server("B0", tmp_path, "s" * 40, None, {})
    try:
        server.wait_ready()
        out = tmp_path / "point.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.loadgen",
                "--scenario",
                "fanout",
                "--count",
                "2",
                "--base-url",
                server.base_url,
                "--secret",
                "s" * 40,
                "--server-pid",
                str(server.pid),
                "--warmup",
                "0.3",
                "--measure",
                "1.0",
                "--out",
                str(out),
            ],
            cwd=REPO,
            check=True,
            timeout=90,
            capture_output=True,
        )
    finally:
        server.stop()
    point = json.loads(out.read_text())
    assert point["errors"] == []
    assert point["connected"] == 2
    assert point["latency_ms"]["n"] > 0 and point["latency_ms"]["p50"] > 0
    assert point["fps"]["mean"] > 0
    assert point["server"]["cpu_s"] > 0 and point["server"]["rss_mb_end"] > 10
    assert "event_loop_lag" in point["metrics"]


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hooks: []\nnot_a_section: 1\n")
    from benchmarks.variants import PreparedConfig

    server = Server("F1", tmp_path, "s" * 40, None, {"F1": PreparedConfig(bad, [], [])})
    with pytest.raises(BenchError, match="exited with code"):
        server.wait_ready()
    server.stop()
