"""Turns raw points into the results file: aggregates over repetitions, ratios, table and plot."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks.common import percentile

VARIANT_ORDER = ("B0", "F1", "F2", "F1W2", "F2W2")
COLORS = {"B0": "#d62728", "F1": "#1f77b4", "F2": "#2ca02c", "F1W2": "#17becf", "F2W2": "#9467bd"}
# (single-worker variant, two-worker variant): the `--workers 1` vs `--workers 2` comparison.
WORKER_PAIRS = (("F2", "F2W2"), ("F1", "F1W2"))
# The per-point figures aggregated over repetitions: name → how to read it from a point.
FIELDS: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "cpu_cores": lambda p: p.get("server", {}).get("cpu_cores"),
    "cpu_s_per_stream_s": lambda p: p.get("server", {}).get("cpu_s_per_stream_s"),
    "rss_mb": lambda p: p.get("server", {}).get("rss_mb_end"),
    "latency_p50_ms": lambda p: p.get("latency_ms", {}).get("p50"),
    "latency_p95_ms": lambda p: p.get("latency_ms", {}).get("p95"),
    "latency_p99_ms": lambda p: p.get("latency_ms", {}).get("p99"),
    "added_p95_ms": lambda p: p.get("slo", {}).get("added_p95_ms"),
    "fps_min": lambda p: p.get("fps", {}).get("min"),
    "fps_mean": lambda p: p.get("fps", {}).get("mean"),
    "loss_video_pct": lambda p: (p.get("loss_pct") or {}).get("video"),
    "loss_audio_pct": lambda p: (p.get("loss_pct") or {}).get("audio"),
    "event_loop_lag_p99_ms": lambda p: ((p.get("metrics") or {}).get("event_loop_lag") or {}).get("p99_ms"),
    "loadgen_cpu_cores": lambda p: p.get("loadgen_cpu_cores"),
    "foreign_cpu_cores": lambda p: p.get("foreign_cpu_cores"),
    "loadgen_loop_lag_p99_ms": lambda p: (p.get("loadgen_loop_lag_ms") or {}).get("p99"),
}


def spread(values: Iterable[float | None]) -> dict[str, float | None] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {
        "median": percentile(present, 0.5),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def median_of(entry: dict[str, Any], name: str) -> float | None:
    value = entry.get(name)
    return None if value is None else value["median"]


def aggregate(points: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """scenario → variant → count(str) → {field: spread, slo_pass: k/n, hooks_p99_ms: …}."""
    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for point in points:
        grouped.setdefault((point["scenario"], point["variant"], point["count"]), []).append(point)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for (scenario, variant, count), group in sorted(grouped.items()):
        entry: dict[str, Any] = {name: spread(read(p) for p in group) for name, read in FIELDS.items()}
        entry["slo_pass"] = f"{sum(p['slo']['pass'] for p in group)}/{len(group)}"
        entry["sustained"] = f"{sum(p['slo'].get('sustained', False) for p in group)}/{len(group)}"
        entry["subscriber_streams"] = group[0].get("subscriber_streams")
        hooks: dict[str, list[float]] = {}
        for point in group:
            for hook, stats in ((point.get("metrics") or {}).get("hooks") or {}).items():
                if stats.get("p99_ms") is not None:
                    hooks.setdefault(hook, []).append(stats["p99_ms"])
        entry["hooks_p99_ms"] = {hook: percentile(v, 0.5) for hook, v in hooks.items()}
        encode: dict[str, list[float]] = {}
        for point in group:
            for kind, stats in ((point.get("metrics") or {}).get("encode") or {}).items():
                if stats.get("p99_ms") is not None:
                    encode.setdefault(kind, []).append(stats["p99_ms"])
        entry["encode_p99_ms"] = {kind: percentile(v, 0.5) for kind, v in encode.items()}
        threads: dict[str, list[float]] = {}
        for point in group:
            for name, cores in ((point.get("server") or {}).get("cpu_cores_by_thread") or {}).items():
                threads.setdefault(name, []).append(cores)
        entry["cpu_cores_by_thread"] = {name: percentile(v, 0.5) for name, v in threads.items()}
        # Multi-worker servers: where the tree's CPU and memory sit (front, worker0, worker1, and
        # each worker's recognizer), and how many rooms / participants each worker held.
        processes: dict[str, dict[str, list[float]]] = {}
        for point in group:
            for name, stats in ((point.get("server") or {}).get("by_process") or {}).items():
                for key in ("cpu_cores", "rss_mb", "pss_mb"):
                    if stats.get(key) is not None:
                        processes.setdefault(name, {}).setdefault(key, []).append(stats[key])
        entry["by_process"] = {
            name: {key: percentile(values, 0.5) for key, values in stats.items()}
            for name, stats in processes.items()
        }
        split: dict[str, dict[str, list[float]]] = {}
        for point in group:
            for worker, stats in (point.get("per_worker") or {}).items():
                for key in ("rooms", "participants"):
                    if stats.get(key) is not None:
                        split.setdefault(worker, {}).setdefault(key, []).append(stats[key])
        entry["per_worker"] = {
            worker: {key: percentile(values, 0.5) for key, values in stats.items()}
            for worker, stats in sorted(split.items())
        }
        entry["pss_mb"] = spread((p.get("server") or {}).get("pss_mb_end") for p in group)
        result.setdefault(scenario, {}).setdefault(variant, {})[str(count)] = entry
    return result


def capacity(
    points: list[dict[str, Any]], scenario: str, variant: str, criterion: str = "pass"
) -> dict[str, Any] | None:
    """Largest load meeting `criterion` ("pass": the SLO, or "sustained") before the first
    miss, per repetition, and its median."""
    reps: dict[int, list[dict[str, Any]]] = {}
    for point in points:
        if point["scenario"] == scenario and point["variant"] == variant:
            reps.setdefault(point.get("repetition", 0), []).append(point)
    if not reps:
        return None
    per_rep = []
    bounded = []
    for rep_points in reps.values():
        best = 0
        broke = False
        for point in sorted(rep_points, key=lambda p: p["count"]):
            if not point["slo"].get(criterion, False):
                broke = True
                break
            best = point["count"]
        per_rep.append(best)
        bounded.append(broke)
    return {
        "median": percentile(per_rep, 0.5),
        "per_repetition": per_rep,
        # False: never broke within the sweep, so the figure is a lower bound.
        "slo_broken_within_sweep": all(bounded),
    }


def rss_slope(entries: dict[str, Any]) -> float | None:
    """MB per added subscriber: least-squares slope of median RSS against subscriber count."""
    pairs = [(int(count), median_of(e, "rss_mb")) for count, e in entries.items()]
    xy = [(x, y) for x, y in pairs if y is not None]
    if len(xy) < 2:
        return None
    mean_x = sum(x for x, _ in xy) / len(xy)
    mean_y = sum(y for _, y in xy) / len(xy)
    denominator = sum((x - mean_x) ** 2 for x, _ in xy)
    if denominator == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in xy) / denominator


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def ratios(points: list[dict[str, Any]], table: dict[str, Any], micro: dict[str, Any]) -> dict[str, Any]:
    caps = {v: capacity(points, "fanout", v) for v in VARIANT_ORDER}
    calls = {v: capacity(points, "calls", v) for v in VARIANT_ORDER}
    caps_sustained = {v: capacity(points, "fanout", v, "sustained") for v in VARIANT_ORDER}
    calls_sustained = {v: capacity(points, "calls", v, "sustained") for v in VARIANT_ORDER}

    def cap(variant: str, source: dict[str, dict[str, Any] | None]) -> float | None:
        found = source.get(variant)
        return None if found is None else found["median"]

    fanout = table.get("fanout", {})
    # The fan-out ratios compare B0, F1 and F2 (multi-worker variants run the calls sweep only).
    fanout_variants = ("B0", "F1", "F2")
    common = (
        set.intersection(*(set(fanout.get(v, {})) for v in fanout_variants))
        if all(v in fanout for v in fanout_variants)
        else set()
    )
    cpu_at = max((int(c) for c in common), default=None)

    def cpu(variant: str) -> float | None:
        if cpu_at is None:
            return None
        return median_of(fanout[variant][str(cpu_at)], "cpu_s_per_stream_s")

    at8 = fanout.get("F2", {}).get("8")
    calls_at_slo = {v: cap(v, calls) for v in VARIANT_ORDER}
    return {
        "R_cap_F2_B0": _ratio(cap("F2", caps), cap("B0", caps)),
        "R_cap_F1_B0": _ratio(cap("F1", caps), cap("B0", caps)),
        "R_cpu_F2_B0": _ratio(cpu("F2"), cpu("B0")),
        "R_cpu_F1_B0": _ratio(cpu("F1"), cpu("B0")),
        "R_cpu_at_subscribers": cpu_at,
        "hook_share_of_encode": micro.get("hook_share_of_encode"),
        "calls_at_slo_F2": cap("F2", calls),
        "calls_at_slo_F1": cap("F1", calls),
        "calls_at_slo_B0": cap("B0", calls),
        "calls_at_slo_F2W2": cap("F2W2", calls),
        "calls_at_slo_F1W2": cap("F1W2", calls),
        "workers": workers_comparison(points, table, calls_at_slo),
        "rss_mb_per_subscriber_F2": rss_slope(fanout.get("F2", {})),
        "rss_mb_per_subscriber_F1": rss_slope(fanout.get("F1", {})),
        "rss_mb_per_subscriber_B0": rss_slope(fanout.get("B0", {})),
        "subscribers_at_slo": {v: cap(v, caps) for v in VARIANT_ORDER},
        "calls_at_slo": calls_at_slo,
        # The same figures at the `sustained` bar (every frame delivered, no queueing collapse).
        "R_cap_sustained_F2_B0": _ratio(cap("F2", caps_sustained), cap("B0", caps_sustained)),
        "R_cap_sustained_F1_B0": _ratio(cap("F1", caps_sustained), cap("B0", caps_sustained)),
        "subscribers_sustained": {v: cap(v, caps_sustained) for v in VARIANT_ORDER},
        "calls_sustained": {v: cap(v, calls_sustained) for v in VARIANT_ORDER},
        "added_p95_ms_at_8_subscribers_F2": None if at8 is None else median_of(at8, "added_p95_ms"),
        "capacity_detail": {
            "fanout": caps,
            "calls": calls,
            "fanout_sustained": caps_sustained,
            "calls_sustained": calls_sustained,
        },
    }


def cores_per_call(table: dict[str, Any], variant: str, calls: float | None) -> float | None:
    """Median server cores per call of `variant` at `calls` concurrent calls."""
    if not calls:
        return None
    entry = table.get("calls", {}).get(variant, {}).get(str(int(calls)))
    cores = None if entry is None else median_of(entry, "cpu_cores")
    return None if cores is None else cores / calls


def workers_comparison(
    points: list[dict[str, Any]], table: dict[str, Any], calls_at_slo: dict[str, float | None]
) -> dict[str, Any]:
    """`--workers 1` vs `--workers 2` in the calls sweep: capacity and CPU per call, as ratios
    W2/W1 (and against B0 when it ran). `cores_per_call_at_slo`: at each variant's own calls-at-
    SLO point; `cores_per_call_common`: at the largest call count both variants measured (same
    load, so the ratio is the multi-worker overhead or saving)."""
    calls_table = table.get("calls", {})
    result: dict[str, Any] = {}
    b0_common_counts = set(calls_table.get("B0", {}))
    for single, multi in WORKER_PAIRS:
        if single not in calls_table or multi not in calls_table:
            continue
        sustained_single = capacity(points, "calls", single, "sustained")
        sustained_multi = capacity(points, "calls", multi, "sustained")
        common = set(calls_table[single]) & set(calls_table[multi])
        common_at = max((int(c) for c in common), default=None)
        at_slo = {v: cores_per_call(table, v, calls_at_slo.get(v)) for v in (single, multi)}
        at_common = {v: cores_per_call(table, v, common_at) for v in (single, multi)}
        entry: dict[str, Any] = {
            "calls_at_slo": {single: calls_at_slo.get(single), multi: calls_at_slo.get(multi)},
            "R_calls_at_slo": _ratio(calls_at_slo.get(multi), calls_at_slo.get(single)),
            "calls_sustained": {
                single: None if sustained_single is None else sustained_single["median"],
                multi: None if sustained_multi is None else sustained_multi["median"],
            },
            "cores_per_call_at_slo": at_slo,
            "R_cores_per_call_at_slo": _ratio(at_slo[multi], at_slo[single]),
            "common_calls": common_at,
            "cores_per_call_common": at_common,
            "R_cores_per_call_common": _ratio(at_common[multi], at_common[single]),
            "per_worker_rooms": {
                count: {w: stats.get("rooms") for w, stats in (e.get("per_worker") or {}).items()}
                for count, e in sorted(calls_table[multi].items(), key=lambda item: int(item[0]))
            },
        }
        if "B0" in calls_table:
            b0_at = max((int(c) for c in common & b0_common_counts), default=None)
            b0_slo = cores_per_call(table, "B0", calls_at_slo.get("B0"))
            entry["vs_B0"] = {
                "calls_at_slo_B0": calls_at_slo.get("B0"),
                f"R_calls_at_slo_{single}_B0": _ratio(calls_at_slo.get(single), calls_at_slo.get("B0")),
                f"R_calls_at_slo_{multi}_B0": _ratio(calls_at_slo.get(multi), calls_at_slo.get("B0")),
                "cores_per_call_at_slo_B0": b0_slo,
                "common_calls": b0_at,
                "cores_per_call_common_B0": cores_per_call(table, "B0", b0_at),
                f"R_cores_per_call_common_{single}_B0": _ratio(
                    cores_per_call(table, single, b0_at), cores_per_call(table, "B0", b0_at)
                ),
                f"R_cores_per_call_common_{multi}_B0": _ratio(
                    cores_per_call(table, multi, b0_at), cores_per_call(table, "B0", b0_at)
                ),
            }
        result[f"{multi}_vs_{single}"] = entry
    return result


def soak_summary(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = []
    for point in points:
        timeline = point.get("server", {}).get("rss_timeline_mb") or []
        growth = None
        if len(timeline) >= 2:
            growth = timeline[-1][1] - timeline[0][1]
        summary.append(
            {
                "variant": point["variant"],
                "subscribers": point["count"],
                "seconds": point.get("window_s"),
                "rss_mb_start": timeline[0][1] if timeline else None,
                "rss_mb_end": timeline[-1][1] if timeline else None,
                "rss_growth_mb": growth,
                "slo": point["slo"],
                "latency_ms": point.get("latency_ms"),
            }
        )
    return summary


def assemble(
    *,
    mode: str,
    started: float,
    machine: dict[str, Any],
    directs: list[dict[str, Any]],
    points: list[dict[str, Any]],
    soak: list[dict[str, Any]],
    micro: dict[str, Any],
    notes: list[str],
    log: list[str],
    settings: dict[str, Any],
) -> dict[str, Any]:
    table = aggregate(points)
    return {
        "ratios": ratios(points, table, micro),
        "mode": mode,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "settings": settings,
        "notes": notes,
        "direct": directs,
        "direct_p95_ms": spread(d.get("latency_ms", {}).get("p95") for d in directs),
        "table": table,
        "micro": micro,
        "soak": soak_summary(soak),
        "points": points,
        "log": log,
    }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def headline(results: dict[str, Any]) -> str:
    r = results["ratios"]
    caps = r["subscribers_at_slo"]
    sus = r["subscribers_sustained"]
    f = _fmt
    workers = [
        f"{name.replace('_vs_', ' vs ')}: calls at SLO {f(w['calls_at_slo'][multi], '.0f')} vs "
        f"{f(w['calls_at_slo'][single], '.0f')} (×{f(w['R_calls_at_slo'], '.2f')}), cores/call at "
        f"{f(w['common_calls'], '.0f')} calls {f(w['cores_per_call_common'][multi], '.3f')} vs "
        f"{f(w['cores_per_call_common'][single], '.3f')} (×{f(w['R_cores_per_call_common'], '.2f')})"
        for name, w in (r.get("workers") or {}).items()
        for multi, single in [name.split("_vs_")]
    ]
    return "\n".join(
        [
            f"R_cap F2/B0 = {f(r['R_cap_F2_B0'], '.2f')}   "
            f"R_cap F1/B0 = {f(r['R_cap_F1_B0'], '.2f')}   "
            f"(subscribers at SLO: B0 {f(caps['B0'], '.0f')}, F1 {f(caps['F1'], '.0f')}, "
            f"F2 {f(caps['F2'], '.0f')})",
            f"R_cpu F2/B0 = {f(r['R_cpu_F2_B0'], '.3f')}   "
            f"R_cpu F1/B0 = {f(r['R_cpu_F1_B0'], '.3f')}   "
            f"(CPU-s per subscriber-stream-s at {f(r['R_cpu_at_subscribers'], '.0f')} subscribers)",
            f"hook chain share of VP8 480p encode = {f(r['hook_share_of_encode'], '.3f')}   "
            f"calls at SLO: F2 {f(r['calls_at_slo_F2'], '.0f')}, "
            f"F1 {f(r['calls_at_slo_F1'], '.0f')}, B0 {f(r['calls_at_slo_B0'], '.0f')}   "
            f"RSS per subscriber F2 = {f(r['rss_mb_per_subscriber_F2'], '.2f')} MB",
            f"sustained (no collapse): subscribers B0 {f(sus['B0'], '.0f')}, "
            f"F1 {f(sus['F1'], '.0f')}, F2 {f(sus['F2'], '.0f')}; "
            f"calls B0 {f(r['calls_sustained']['B0'], '.0f')}, "
            f"F1 {f(r['calls_sustained']['F1'], '.0f')}, F2 {f(r['calls_sustained']['F2'], '.0f')}",
            *workers,
        ]
    )


def share_passes(micro: dict[str, Any]) -> str:
    """" (passes 0.061–0.072)" when the micro-benchmark ran more than once."""
    passes = [share for share in micro.get("hook_share_of_encode_passes") or [] if share is not None]
    if len(passes) < 2:
        return ""
    return f" (passes {min(passes):.3f}–{max(passes):.3f})"


def markdown(results: dict[str, Any]) -> str:
    r = results["ratios"]
    caps = r["subscribers_at_slo"]
    sus = r["subscribers_sustained"]
    f = _fmt
    machine = results["machine"]
    lines = [
        f"Run {results['started_utc']} ({results['mode']} mode, "
        f"{results['settings']['repetitions']} repetition(s), "
        f"commit {str(machine.get('git_commit'))[:10]}"
        f"{' + local changes' if machine.get('git_dirty') else ''}, "
        f"{machine.get('cpu_model')}, {machine.get('cpus_usable')} cores).",
        "",
        "| Ratio | Value | Target |",
        "|---|---|---|",
        f"| R_cap F2/B0 (subscribers of 1 publisher at SLO) | {f(r['R_cap_F2_B0'], '.2f')} | ≥ 4.0 |",
        f"| R_cap F1/B0 | {f(r['R_cap_F1_B0'], '.2f')} | |",
        f"| subscribers at SLO B0 / F1 / F2 | {f(caps['B0'], '.0f')} / {f(caps['F1'], '.0f')} / "
        f"{f(caps['F2'], '.0f')} | |",
        f"| R_cap sustained F2/B0 (all frames, no collapse; added p95 ≤ "
        f"{results['settings'].get('slo', {}).get('sustained_added_p95_ms', 200):.0f} ms) "
        f"| {f(r['R_cap_sustained_F2_B0'], '.2f')} | |",
        f"| R_cap sustained F1/B0 | {f(r['R_cap_sustained_F1_B0'], '.2f')} | |",
        f"| subscribers sustained B0 / F1 / F2 | {f(sus['B0'], '.0f')} / {f(sus['F1'], '.0f')} / "
        f"{f(sus['F2'], '.0f')} | |",
        f"| R_cpu F2/B0 (CPU-s per subscriber-stream-s at "
        f"{f(r['R_cpu_at_subscribers'], '.0f')} subs) | {f(r['R_cpu_F2_B0'], '.3f')} "
        "| lower is better |",
        f"| R_cpu F1/B0 | {f(r['R_cpu_F1_B0'], '.3f')} | |",
        f"| hook chain / VP8 480p encode (means, median pass; per-frame medians) "
        f"| {f(r['hook_share_of_encode'], '.3f')}; "
        f"{f(results['micro'].get('hook_share_of_encode_p50'), '.3f')}{share_passes(results['micro'])} "
        "| ≤ 0.10 |",
        f"| two-party calls at SLO, F2 (F1, B0) | {f(r['calls_at_slo_F2'], '.0f')} "
        f"({f(r['calls_at_slo_F1'], '.0f')}, {f(r['calls_at_slo_B0'], '.0f')}) | ≥ 4 |",
        f"| RSS per added subscriber, F2 | {f(r['rss_mb_per_subscriber_F2'], '.2f')} MB | ≤ 3 MB |",
        f"| p95 added latency at 8 subscribers, F2 "
        f"| {f(r['added_p95_ms_at_8_subscribers_F2'], '.0f')} ms | ≤ 50 ms |",
        "",
        f"Direct peer-to-peer p95 (the latency reference): "
        f"{f(median_of({'x': results['direct_p95_ms']}, 'x'), '.0f')} ms.",
        "",
        "| Variant | Load | Server cores | CPU-s / stream-s | RSS MB | p50 / p95 / p99 ms "
        "| added p95 ms | fps min | loss % | loop lag p99 ms | other load (cores) | SLO met "
        "| sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, label in (("fanout", "subs"), ("calls", "calls")):
        for variant in VARIANT_ORDER:
            for count, e in sorted(
                results["table"].get(scenario, {}).get(variant, {}).items(),
                key=lambda item: int(item[0]),
            ):
                lines.append(
                    f"| {variant} | {count} {label} | {_fmt(median_of(e, 'cpu_cores'), '.2f')} "
                    f"| {_fmt(median_of(e, 'cpu_s_per_stream_s'), '.4f')} "
                    f"| {_fmt(median_of(e, 'rss_mb'), '.0f')} "
                    f"| {_fmt(median_of(e, 'latency_p50_ms'), '.0f')} / "
                    f"{_fmt(median_of(e, 'latency_p95_ms'), '.0f')} / "
                    f"{_fmt(median_of(e, 'latency_p99_ms'), '.0f')} "
                    f"| {_fmt(median_of(e, 'added_p95_ms'), '.0f')} "
                    f"| {_fmt(median_of(e, 'fps_min'), '.1f')} "
                    f"| {_fmt(median_of(e, 'loss_video_pct'), '.2f')} "
                    f"| {_fmt(median_of(e, 'event_loop_lag_p99_ms'), '.1f')} "
                    f"| {_fmt(median_of(e, 'foreign_cpu_cores'), '.2f')} | {e['slo_pass']} "
                    f"| {e['sustained']} |"
                )
    hooks_rows = []
    for variant in ("F2", "F1"):
        for count, e in sorted(
            results["table"].get("fanout", {}).get(variant, {}).items(),
            key=lambda item: int(item[0]),
        ):
            for hook, p99 in sorted(e["hooks_p99_ms"].items()):
                hooks_rows.append(f"| {variant} | {count} subs | {hook} | {_fmt(p99, '.3f')} |")
    if hooks_rows:
        lines += [
            "",
            "| Variant | Load | Hook / stage | p99 ms (server histogram) |",
            "|---|---|---|---|",
            *hooks_rows,
        ]
    lines += workers_markdown(results)
    thread_rows = []
    for variant in ("F2", "F2W2", "F1", "F1W2"):
        for count, e in sorted(
            results["table"].get("calls", {}).get(variant, {}).items(), key=lambda item: int(item[0])
        ):
            shares = sorted((e.get("cpu_cores_by_thread") or {}).items(), key=lambda item: -item[1])
            if shares:
                shown = ", ".join(f"{name} {cores:.2f}" for name, cores in shares if cores >= 0.01)
                thread_rows.append(f"| {variant} | {count} calls | {shown} |")
    if thread_rows:
        lines += [
            "",
            "| Variant | Load | Server CPU by thread (cores, median; unnamed threads: event loop and "
            "aiortc decoders) |",
            "|---|---|---|",
            *thread_rows,
        ]
    micro = results["micro"]
    lines += ["", "| Micro-benchmark (µs, mean / p99) | 480p | 720p |", "|---|---|---|"]
    video = micro["video"]
    names = sorted(set(video["480p"]["hooks"]) | set(video["480p"]["post_encode_hooks"]))

    def hook_stats(name: str) -> Callable[[str], Any]:
        def read(size: str) -> Any:
            return video[size]["hooks"].get(name) or video[size]["post_encode_hooks"].get(name)

        return read

    rows: list[tuple[str, Callable[[str], Any]]] = [(f"hook {n}", hook_stats(n)) for n in names]
    rows += [
        ("hook chain (frame hooks)", lambda size: video[size]["chain"]),
        ("VP8 encode (finrtc default settings)", lambda size: video[size]["vp8_encode"]),
        ("VP8 decode", lambda size: video[size]["vp8_decode"]),
        ("VP8 encode, aiortc stock settings (B0)", lambda size: video[size].get("vp8_encode_aiortc_stock")),
        (
            "VP8 encode, same speed fixed (negative cpu-used)",
            lambda size: video[size].get("vp8_encode_fixed_speed"),
        ),
    ]
    for label, read in rows:
        cells = []
        for size in ("480p", "720p"):
            stats = read(size)
            cells.append(
                "—" if not stats else f"{_fmt(stats['mean_us'], '.0f')} / {_fmt(stats['p99_us'], '.0f')}"
            )
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    audio = micro["audio"]
    lines.append(
        "| audio 20 ms: chain / Opus encode / Opus decode "
        f"| {_fmt(audio['chain']['mean_us'], '.0f')} / "
        f"{_fmt(audio['opus_encode']['mean_us'], '.0f')} / "
        f"{_fmt(audio['opus_decode']['mean_us'], '.0f')} | |"
    )
    for soak in results.get("soak", []):
        lines.append("")
        slo = soak["slo"]
        verdict = (
            "SLO met"
            if slo["pass"]
            else "SLO missed but sustained"
            if slo.get("sustained")
            else "collapsed (frames lost or queued)"
        )
        lines.append(
            f"Soak {soak['variant']}, {soak['subscribers']} subscribers, "
            f"{_fmt(soak['seconds'], '.0f')} s: RSS {_fmt(soak['rss_mb_start'], '.0f')} → "
            f"{_fmt(soak['rss_mb_end'], '.0f')} MB "
            f"(growth {_fmt(soak['rss_growth_mb'], '.1f')} MB), "
            f"{verdict}."
        )
    if results.get("notes"):
        lines += ["", "Notes:", *(f"- {note}" for note in results["notes"])]
    return "\n".join(lines) + "\n"


def workers_markdown(results: dict[str, Any]) -> list[str]:
    """The `--workers 1` vs `--workers 2` section: ratios, then where each W2 point's load went."""
    comparison = results["ratios"].get("workers") or {}
    if not comparison:
        return []
    f = _fmt
    lines = [
        "",
        "| Workers (calls sweep, same cores) | W1 | W2 | W2 / W1 |",
        "|---|---|---|---|",
    ]
    for name, w in comparison.items():
        multi, single = name.split("_vs_")
        lines += [
            f"| {single} → {multi}: calls at SLO | {f(w['calls_at_slo'][single], '.0f')} "
            f"| {f(w['calls_at_slo'][multi], '.0f')} | {f(w['R_calls_at_slo'], '.2f')} |",
            f"| {single} → {multi}: calls sustained | {f(w['calls_sustained'][single], '.0f')} "
            f"| {f(w['calls_sustained'][multi], '.0f')} "
            f"| {f(_ratio(w['calls_sustained'][multi], w['calls_sustained'][single]), '.2f')} |",
            f"| {single} → {multi}: server cores per call at its calls at SLO "
            f"| {f(w['cores_per_call_at_slo'][single], '.3f')} "
            f"| {f(w['cores_per_call_at_slo'][multi], '.3f')} "
            f"| {f(w['R_cores_per_call_at_slo'], '.2f')} |",
            f"| {single} → {multi}: server cores per call at {f(w['common_calls'], '.0f')} calls "
            f"| {f(w['cores_per_call_common'][single], '.3f')} "
            f"| {f(w['cores_per_call_common'][multi], '.3f')} "
            f"| {f(w['R_cores_per_call_common'], '.2f')} |",
        ]
        b0 = w.get("vs_B0")
        if b0:
            lines.append(
                f"| B0 baseline: calls at SLO {f(b0['calls_at_slo_B0'], '.0f')}; {single}/B0 "
                f"{f(b0[f'R_calls_at_slo_{single}_B0'], '.2f')}, {multi}/B0 "
                f"{f(b0[f'R_calls_at_slo_{multi}_B0'], '.2f')}; cores/call at "
                f"{f(b0['common_calls'], '.0f')} calls B0 {f(b0['cores_per_call_common_B0'], '.3f')}, "
                f"{single}/B0 {f(b0[f'R_cores_per_call_common_{single}_B0'], '.2f')}, {multi}/B0 "
                f"{f(b0[f'R_cores_per_call_common_{multi}_B0'], '.2f')} | | | |"
            )
    rows = []
    for variant in ("F2W2", "F1W2"):
        for count, e in sorted(
            results["table"].get("calls", {}).get(variant, {}).items(), key=lambda item: int(item[0])
        ):
            per_worker = (e.get("per_worker") or {}).items()
            split = " / ".join(f"w{worker} {f(stats.get('rooms'), '.0f')}" for worker, stats in per_worker)
            procs = e.get("by_process") or {}
            cells = ", ".join(
                f"{name} {f(stats.get('cpu_cores'), '.2f')} c / {f(stats.get('pss_mb'), '.0f')} MB"
                for name, stats in sorted(procs.items())
                if "/" not in name or name.endswith("/recognizer")
            )
            rows.append(f"| {variant} | {count} calls | {split or '—'} | {cells or '—'} |")
    if rows:
        lines += [
            "",
            "| Variant | Load | rooms per media worker (median) | CPU cores / PSS by process "
            "(median; a worker includes its recognizer) |",
            "|---|---|---|---|",
            *rows,
        ]
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = (
        ("fanout", "cpu_cores", "server CPU (cores)", "subscribers of 1 publisher"),
        ("fanout", "latency_p95_ms", "p95 latency (ms)", "subscribers of 1 publisher"),
        ("calls", "cpu_cores", "server CPU (cores)", "concurrent two-party calls"),
        ("calls", "latency_p95_ms", "p95 latency (ms)", "concurrent two-party calls"),
    )
    direct = median_of({"x": results["direct_p95_ms"]}, "x")
    for axis, (scenario, name, ylabel, xlabel) in zip(axes.flat, panels, strict=True):
        for variant in VARIANT_ORDER:
            entries = results["table"].get(scenario, {}).get(variant, {})
            xs, ys, low, high = [], [], [], []
            for count, e in sorted(entries.items(), key=lambda item: int(item[0])):
                stats = e.get(name)
                if stats is None:
                    continue
                xs.append(int(count))
                ys.append(stats["median"])
                low.append(stats["median"] - stats["min"])
                high.append(stats["max"] - stats["median"])
            if xs:
                axis.errorbar(
                    xs,
                    ys,
                    yerr=[low, high],
                    marker="o",
                    capsize=3,
                    label=variant,
                    color=COLORS[variant],
                    linestyle="--" if variant.endswith("W2") else "-",
                )
        if name == "latency_p95_ms" and direct is not None:
            axis.axhline(direct + 50, color="grey", linestyle="--", label="SLO (direct p95 + 50 ms)")
            axis.set_yscale("log")
        if name == "cpu_cores":
            axis.set_ylim(bottom=0)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.suptitle(
        f"finrtc benchmark {results['started_utc']} ({results['mode']}): "
        "median, bars = min..max over repetitions"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(results: dict[str, Any], out_dir: Path, latest: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stem = out_dir / f"bench-{stamp}-{results['mode']}"
    files = {"json": f"{stem}.json", "png": f"{stem}.png", "md": f"{stem}.md"}
    results["files"] = files
    plot(results, Path(files["png"]))
    Path(files["md"]).write_text(markdown(results), encoding="utf-8")
    Path(files["json"]).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    if latest:
        for kind, source in files.items():
            shutil.copyfile(source, out_dir / f"latest.{kind}")


README_START = "<!-- bench:latest:start -->"
README_END = "<!-- bench:latest:end -->"


def update_readme(readme: Path, table_markdown: str) -> bool:
    """Replaces the latest-results section of benchmarks/README.md; False if the markers are gone."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(README_START)
    end = text.find(README_END)
    if start < 0 or end < start:
        return False
    updated = text[: start + len(README_START)] + "\n" + table_markdown + text[end:]
    readme.write_text(updated, encoding="utf-8")
    return True
