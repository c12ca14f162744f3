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


def run_loadgen(server: Server, scenario: str, out: Path) -> None:
    """A short load-generator point (2 subscribers or 2 calls) against `server`."""
    subprocess.run(
        [
            sys.executable, "-m", "benchmarks.loadgen", "--scenario", scenario, "--count", "2",
            "--base-url", server.base_url, "--secret", "s" * 40, "--server-pid", str(server.pid),
            "--warmup", "0.3", "--measure", "1.0", "--out", str(out),
        ],
        cwd=REPO,
        check=True,
        timeout=90,
        capture_output=True,
    )


def test_baseline_server_and_load_generator_end_to_end(tmp_path: Path) -> None:
    server = Server("B0", tmp_path, "s" * 40, None, {})
    try:
        server.wait_ready()
        out = tmp_path / "point.json"
        run_loadgen(server, "fanout", out)
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


def _registry_text(rooms: int, hook_observations: int, lag_s: float) -> str:
    registry = CollectorRegistry()
    from prometheus_client import Gauge

    Gauge("finrtc_rooms", "x", registry=registry).set(rooms)
    hook = Histogram("finrtc_hook_seconds", "x", ["hook", "stage"], registry=registry, buckets=(0.001, 0.01))
    for _ in range(hook_observations):
        hook.labels(hook="w", stage="mutate").observe(0.0005)
    lag = Histogram("finrtc_event_loop_lag_seconds", "x", registry=registry, buckets=(0.001, 0.01, 0.1))
    for _ in range(100):
        lag.observe(lag_s)
    return generate_latest(registry).decode()


def test_merged_worker_metrics_are_summed_and_the_worst_loop_reported() -> None:
    from finrtc.cluster.metrics_merge import merge

    front = CollectorRegistry()
    merged = merge({"0": _registry_text(1, 30, 0.0005), "1": _registry_text(2, 50, 0.05)}, front).decode()
    summary = loadgen.metric_summary(None, merged)
    # Every worker's observations count once: not overwritten by the last worker's series.
    assert summary["hooks"]["w/mutate"]["count"] == 80
    lag = summary["event_loop_lag"]
    assert set(lag["per_worker"]) == {"0", "1"}
    assert lag["p99_ms"] == lag["per_worker"]["1"]["p99_ms"] > 10
    assert lag["per_worker"]["0"]["p99_ms"] < 1
    assert summary["per_worker"] == {"0": {"rooms": 1.0}, "1": {"rooms": 2.0}}
    # A single process' exposition: no worker split, lag as before.
    single = loadgen.metric_summary(None, _registry_text(1, 3, 0.0005))
    assert "per_worker" not in single and "per_worker" not in single["event_loop_lag"]
    assert single["hooks"]["w/mutate"]["count"] == 3


def test_smoke_fails_when_a_media_worker_served_nothing() -> None:
    point = _point("F2W2", 2, 60.0, scenario="calls", subscriber_streams=4, connected=4, media_workers=2)
    point["per_worker"] = {"0": {"rooms": 2.0}, "1": {"rooms": 0.0}}
    results = {
        "points": [point],
        "settings": {"variants": ["F2W2"]},
        "direct": [{"latency_ms": {"n": 5}}],
        "micro": {"hook_share_of_encode": 0.05},
    }
    assert any("worker(s) 1 served no room" in problem for problem in smoke_problems(results))
    point["per_worker"]["1"]["rooms"] = 1.0
    assert smoke_problems(results) == []


def test_process_tree_covers_grandchildren_and_their_cpu() -> None:
    script = (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time\\nt=time.process_time()+0.3\\n"
        "while time.process_time() < t: pass\\ntime.sleep(5)'])\n"
        "time.sleep(5)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while len(common.descendants(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.8)
        tree = common.process_tree(child.pid, with_pss=True)
        assert len(tree) == 2
        assert {entry["owner"] for entry in tree} == {"server"}
        assert common.cpu_seconds(child.pid) >= 0.25
        assert all(entry["rss_bytes"] > 0 for entry in tree)
        assert all(entry["pss_bytes"] is None or entry["pss_bytes"] > 0 for entry in tree)
    finally:
        child.kill()
        child.wait()


def test_workers_comparison_ratios() -> None:
    points = []
    for variant, cores_per_call, last_good in (("B0", 0.5, 1), ("F2", 0.4, 2), ("F2W2", 0.45, 4)):
        for count in range(1, last_good + 2):
            p95 = 60.0 if count <= last_good else 400.0
            points.append(
                _point(
                    variant, count, p95, scenario="calls", subscriber_streams=2 * count,
                    connected=2 * count, media_workers=2 if variant == "F2W2" else 1,
                    server={"cpu_cores": cores_per_call * count, "rss_mb_end": 100.0},
                    per_worker={"0": {"rooms": count - count // 2}, "1": {"rooms": count // 2}}
                    if variant == "F2W2" else None,
                )
            )
    table = report.aggregate(points)
    ratios = report.ratios(points, table, {})
    w = ratios["workers"]["F2W2_vs_F2"]
    assert w["calls_at_slo"] == {"F2": 2, "F2W2": 4}
    assert w["R_calls_at_slo"] == 2.0
    assert w["common_calls"] == 3
    assert w["R_cores_per_call_common"] == pytest.approx(0.45 / 0.4)
    assert w["cores_per_call_at_slo"]["F2W2"] == pytest.approx(0.45)
    assert w["per_worker_rooms"]["4"] == {"0": 2, "1": 2}
    assert w["vs_B0"]["R_calls_at_slo_F2W2_B0"] == 4.0
    assert "F1W2_vs_F1" not in ratios["workers"]


def test_finrtc_variants_name_their_worker_count(tmp_path: Path) -> None:
    from benchmarks.variants import PreparedConfig

    config = tmp_path / "f1.yaml"
    config.write_text((REPO / "benchmarks" / "configs" / "f1_no_hooks.yaml").read_text())
    prepared = {"F1": PreparedConfig(config, [], []), "F2": PreparedConfig(config, [], [])}
    for variant, workers in (("F1", "1"), ("F2", "1"), ("F1W2", "2")):
        server = Server(variant, tmp_path, "s" * 40, None, prepared)
        try:
            argv = server.process.args
            assert isinstance(argv, list)
            assert argv[argv.index("--workers") + 1] == workers
            assert server.workers == int(workers)
        finally:
            server.stop()


def test_two_media_workers_each_get_calls(tmp_path: Path) -> None:
    from benchmarks.variants import PreparedConfig

    config = REPO / "benchmarks" / "configs" / "f1_no_hooks.yaml"
    server = Server("F1W2", tmp_path, "s" * 40, None, {"F1": PreparedConfig(config, [], [])})
    try:
        server.wait_ready()
        out = tmp_path / "point.json"
        run_loadgen(server, "calls", out)
    finally:
        server.stop()
    point = json.loads(out.read_text())
    assert point["errors"] == [] and point["connected"] == 4
    assert {w: s["rooms"] for w, s in point["per_worker"].items()} == {"0": 1.0, "1": 1.0}
    processes = point["server"]["by_process"]
    assert {"front", "worker0", "worker1"} <= set(processes)
    assert processes["worker0"]["cpu_cores"] > 0 and processes["worker1"]["cpu_cores"] > 0
    assert point["server"]["pss_mb_end"] is None or point["server"]["pss_mb_end"] > 10
