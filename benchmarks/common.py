"""Shared pieces of the harness: loopback ICE pinning, /proc accounting, Prometheus scraping."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def pin_ice_to_loopback() -> None:
    """aioice skips 127.0.0.1 when gathering host candidates; every peer here is on loopback."""
    import aioice.ice

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_only


def install_uvloop() -> None:
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# ---------------------------------------------------------------------------------------------
# /proc accounting


def _stat_fields(pid: int, tid: str | None = None) -> list[str] | None:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """`root` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found = [root]
    index = 0
    while index < len(found):
        found.extend(children.get(found[index], []))
        index += 1
    return found


def _own_and_reaped_ticks(fields: list[str]) -> int:
    # Fields (1-based in proc(5)): 14 utime, 15 stime, 16 cutime, 17 cstime; we dropped 2.
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) of `root`, its live descendants at any depth (a multi-worker
    server's media workers and their recognizer processes) and every child they reaped: a
    reaped process's time sits in its parent's cutime/cstime, and it is no longer in the tree,
    so nothing is counted twice."""
    total = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += _own_and_reaped_ticks(fields)
    return total / CLOCK_TICKS


def cpu_seconds_by_thread(root: int) -> dict[str, float]:
    """CPU time of `root`'s process tree per native thread name, numbered suffixes folded
    ("finrtc-media_0" and "finrtc-media_1" count as "finrtc-media"). finrtc names its own threads
    (finrtc.threads); aiortc's decoders and the event loop keep the process name."""
    totals: dict[str, float] = {}
    for pid in descendants(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as handle:
                    name = handle.read().strip()
            except OSError:
                continue
            fields = _stat_fields(pid, tid)
            if fields is None:
                continue
            key = name.rstrip("0123456789").rstrip("_-") or name
            totals[key] = totals.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


def rss_bytes(root: int) -> int:
    total = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[21]) * PAGE_SIZE
    return total


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of one process (shared pages split between their users), from
    /proc/PID/smaps_rollup; None when the kernel or permissions do not give it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_role(pid: int, root: int) -> str:
    """What a process of a server's tree is: "front" (the root of a multi-worker server, or the
    whole single-process server), "worker<N>" (`finrtc worker --worker-id N`), "recognizer"
    (a speech-recognition process: its main thread is named finrtc-asr), "mp-tracker"
    (multiprocessing's resource tracker), else its command name."""
    argv = _cmdline(pid)
    if "worker" in argv and "--worker-id" in argv:
        index = argv.index("--worker-id")
        if index + 1 < len(argv):
            return f"worker{argv[index + 1]}"
    if pid == root:
        return "front"
    if any("resource_tracker" in part for part in argv):
        return "mp-tracker"
    comm = _comm(pid)
    if comm.startswith("finrtc-asr"):
        return "recognizer"
    return comm or "?"


def process_tree(root: int, with_pss: bool = False) -> list[dict[str, Any]]:
    """One entry per live process of `root`'s tree: pid, parent, role, owning media worker
    (`owner`: "front", "worker0", …, the nearest worker-or-root ancestor; a single-process
    server's root is "server"), CPU seconds
    (own + reaped children), RSS bytes and, when asked (it walks page tables), PSS bytes."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        stats[pid] = fields
        parents[pid] = int(fields[1])
    roles = {pid: process_role(pid, root) for pid in stats}
    if root in roles and not any(role.startswith("worker") for role in roles.values()):
        roles[root] = "server"  # a single-process server: no front listener

    def owner_of(pid: int) -> str:
        # The nearest ancestor (or self) that is the root or a media worker.
        while pid in roles and pid != root and not roles[pid].startswith("worker"):
            pid = parents[pid]
        return roles.get(pid, roles.get(root, "front"))

    entries = []
    for pid, fields in stats.items():
        entry: dict[str, Any] = {
            "pid": pid,
            "ppid": parents[pid],
            "role": roles[pid],
            "owner": owner_of(pid),
            "cpu_s": _own_and_reaped_ticks(fields) / CLOCK_TICKS,
            "rss_bytes": int(fields[21]) * PAGE_SIZE,
        }
        if with_pss:
            entry["pss_bytes"] = pss_bytes(pid)
        entries.append(entry)
    return entries


def system_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (not idle, not waiting for I/O)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def cpu_affinity_plan() -> tuple[list[int] | None, list[int] | None]:
    """Cores for (server, load generator): different cores when there are at least two."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cores) < 2:
        return None, None
    half = len(cores) // 2
    return cores[:half], cores[half:]


# ---------------------------------------------------------------------------------------------
# Prometheus text


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append(Sample(sample.name, dict(sample.labels), float(sample.value)))
    return samples


HistogramKey = tuple[str, tuple[tuple[str, str], ...]]


def histograms(samples: Iterable[Sample], name: str) -> dict[HistogramKey, dict[float, float]]:
    """Cumulative bucket counts of histogram `name`, keyed by its non-`le` labels."""
    result: dict[HistogramKey, dict[float, float]] = {}
    for sample in samples:
        if sample.name != f"{name}_bucket":
            continue
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        key = (name, tuple(sorted(labels.items())))
        result.setdefault(key, {})[float(sample.labels["le"])] = sample.value
    return result


def counter_total(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """Sum of counter `name` (the `_total` sample) over series matching `labels`; None if absent."""
    values = [
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def bucket_delta(after: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    before = before or {}
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def histogram_quantile(buckets: dict[float, float], quantile: float) -> float | None:
    """Prometheus-style quantile (linear within a bucket) of cumulative bucket counts."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = quantile * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            width = count - previous_count
            fraction = (rank - previous_count) / width if width > 0 else 1.0
            return previous_bound + (bound - previous_bound) * fraction
        previous_bound, previous_count = bound, count
    return previous_bound


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
