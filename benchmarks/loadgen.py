"""The load generator: WHIP publishers of the pre-encoded clip and WHEP subscribers, one process.

Run by `benchmarks.run` on the other core than the server. Publishers hand aiortc `av.Packet`s,
so aiortc only packetizes them (no encode CPU here). A few subscribers per publisher are probes:
they decode video and read the counter stamped into the picture, giving publisher→subscriber
latency on this process' clock. The others drain: their encoded frames are counted as they leave
the jitter buffer and never decoded, so the load generator can drive many more streams than it
could decode. Loss comes from each subscriber's RTP receive statistics.

Scenarios:
  fanout  P publishers, each watched by N subscribers.
  calls   N two-party calls: agent and customer each publish and subscribe to the other.
  direct  publisher → subscriber peer-to-peer without a server: the latency reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import queue
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from benchmarks import clip as clip_module
from benchmarks.common import (
    bucket_delta,
    counter_total,
    cpu_seconds,
    cpu_seconds_by_thread,
    histogram_quantile,
    histograms,
    install_uvloop,
    parse_metrics,
    percentile,
    pin_ice_to_loopback,
    process_tree,
    rss_bytes,
    system_busy_seconds,
)

# The label a multi-worker server's merged /metrics puts on each worker's series
# (finrtc.cluster.metrics_merge.WORKER_LABEL; not imported so B0 runs without finrtc's cluster).
WORKER_LABEL = "media_worker"

CONNECT_TIMEOUT_S = 30.0
SETUP_CONCURRENCY = 4
RSS_SAMPLE_INTERVAL_S = 0.5
RSS_TIMELINE_STEP_S = 5.0
LAG_INTERVAL_S = 0.05


class PacketTrack(MediaStreamTrack):
    """Plays pre-encoded packets in real time, looping; logs when each video frame was sent."""

    def __init__(
        self,
        kind: str,
        packets: list[bytes],
        ticks: int,
        time_base: Fraction,
        period_s: float,
        send_log: list[float] | None = None,
        first_packet: int = 0,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._packets = packets
        self._first = first_packet
        self._ticks = ticks
        self._time_base = time_base
        self._period = period_s
        self._count = 0
        self._start: float | None = None
        self.send_log = send_log

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        due = self._start + self._count * self._period
        if due > now:
            await asyncio.sleep(due - now)
        packet = av.Packet(self._packets[(self._first + self._count) % len(self._packets)])
        packet.pts = self._count * self._ticks
        packet.time_base = self._time_base
        if self.send_log is not None:
            self.send_log.append(time.perf_counter())
        self._count += 1
        return packet


@dataclass
class Publisher:
    room: str
    identity: str
    role: str
    # Where in the clip this publisher's audio starts, as a fraction: a call's customer starts
    # half a clip after its agent, so the two speak in turns (see benchmarks/clip.py).
    audio_phase: float = 0.0
    send_log: list[float] = field(default_factory=list)
    pc: RTCPeerConnection | None = None
    location: str | None = None


@dataclass
class Subscriber:
    room: str
    target: Publisher
    identity: str
    role: str
    probe: bool
    video_times: list[float] = field(default_factory=list)
    audio_frames: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)
    unreadable: int = 0
    pc: RTCPeerConnection | None = None
    location: str | None = None
    first_frame: asyncio.Event = field(default_factory=asyncio.Event)
    last_absolute: int | None = None
    consumer: asyncio.Future[None] | None = None

    def on_counter(self, counter: int, arrived: float) -> None:
        log = self.target.send_log
        newest = len(log) - 1
        if newest < 0:
            return
        frames = clip_module.CLIP_FRAMES
        if self.last_absolute is None:
            absolute = newest - ((newest - counter) % frames)
        else:
            # Frames only move forward: unwrap the looping counter by continuity.
            absolute = self.last_absolute + ((counter - self.last_absolute) % frames)
            if absolute > newest:
                absolute = newest - ((newest - counter) % frames)
        if absolute < 0:
            return
        self.last_absolute = absolute
        self.latencies.append((arrived, arrived - log[absolute]))


class DrainQueue(queue.Queue[Any]):
    """Replaces a receiver's decoder queue: counts complete encoded frames instead of decoding."""

    def __init__(self, on_frame: Callable[[], None]) -> None:
        super().__init__()
        self._on_frame = on_frame

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
            return
        self._on_frame()


def _receiver_queue_attribute() -> str:
    return "_RTCRtpReceiver__decoder_queue"


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def add_publisher_tracks(pc: RTCPeerConnection, publisher: Publisher, clip: clip_module.Clip) -> None:
    video = PacketTrack(
        "video",
        clip.video,
        90000 // clip_module.FPS,
        clip_module.VIDEO_TIME_BASE,
        1.0 / clip_module.FPS,
        publisher.send_log,
    )
    audio = PacketTrack(
        "audio",
        clip.audio,
        clip_module.AUDIO_SAMPLES_PER_PACKET,
        clip_module.AUDIO_TIME_BASE,
        clip_module.AUDIO_SAMPLES_PER_PACKET / clip_module.AUDIO_RATE,
        first_packet=int(publisher.audio_phase * len(clip.audio)),
    )
    pc.addTransceiver(video, direction="sendonly")
    pc.addTransceiver(audio, direction="sendonly")


def add_subscriber_transceivers(pc: RTCPeerConnection, subscriber: Subscriber) -> None:
    video = pc.addTransceiver("video", direction="recvonly")
    audio = pc.addTransceiver("audio", direction="recvonly")

    def count_audio() -> None:
        subscriber.audio_frames += 1

    loop = asyncio.get_running_loop()
    setattr(audio.receiver, _receiver_queue_attribute(), DrainQueue(count_audio))
    if not subscriber.probe:

        def count_video() -> None:
            # Runs on the event loop thread (called from the RTP handler), so no lock is needed.
            subscriber.video_times.append(time.perf_counter())
            if not subscriber.first_frame.is_set():
                loop.call_soon(subscriber.first_frame.set)

        setattr(video.receiver, _receiver_queue_attribute(), DrainQueue(count_video))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video" and subscriber.probe:
            subscriber.consumer = asyncio.ensure_future(consume_probe(track, subscriber))


async def consume_probe(track: MediaStreamTrack, subscriber: Subscriber) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        arrived = time.perf_counter()
        if not isinstance(frame, av.VideoFrame):
            continue
        subscriber.video_times.append(arrived)
        subscriber.first_frame.set()
        counter = clip_module.read_counter_from_frame(frame)
        if counter is None:
            subscriber.unreadable += 1
        else:
            subscriber.on_counter(counter, arrived)


class Signaling:
    """WHIP / WHEP over HTTP against the server under test."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, secret: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.secret = secret

    def token(self, room: str, identity: str, role: str) -> str:
        from finrtc.auth import mint_token
        from finrtc.model import Role

        return mint_token(self.secret, room=room, identity=identity, role=Role(role))

    async def exchange(self, path: str, pc: RTCPeerConnection, room: str, identity: str, role: str) -> str:
        # aiortc does not trickle: setLocalDescription returns once gathering is complete.
        await pc.setLocalDescription(await pc.createOffer())
        headers = {
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {self.token(room, identity, role)}",
        }
        async with self.session.post(
            self.base_url + path,
            data=pc.localDescription.sdp,
            headers=headers,
        ) as response:
            body = await response.text()
            if response.status != 201:
                raise RuntimeError(f"POST {path} → {response.status}: {body[:300]}")
            location = response.headers.get("Location", "")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        return location

    async def delete(self, location: str | None, room: str, identity: str, role: str) -> None:
        if not location:
            return
        url = location if location.startswith("http") else self.base_url + location
        headers = {"Authorization": f"Bearer {self.token(room, identity, role)}"}
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with self.session.delete(url, headers=headers) as response:
                await response.read()


async def publish(signaling: Signaling, publisher: Publisher, clip: clip_module.Clip) -> None:
    pc = new_pc()
    publisher.pc = pc
    add_publisher_tracks(pc, publisher, clip)
    publisher.location = await signaling.exchange(
        f"/whip/{publisher.room}",
        pc,
        publisher.room,
        publisher.identity,
        publisher.role,
    )


async def subscribe(signaling: Signaling, subscriber: Subscriber) -> None:
    pc = new_pc()
    subscriber.pc = pc
    add_subscriber_transceivers(pc, subscriber)
    subscriber.location = await signaling.exchange(
        f"/whep/{subscriber.room}?participant={subscriber.target.identity}",
        pc,
        subscriber.room,
        subscriber.identity,
        subscriber.role,
    )


async def connect_direct(publisher: Publisher, subscriber: Subscriber, clip: clip_module.Clip) -> None:
    publisher.pc = new_pc()
    subscriber.pc = new_pc()
    add_publisher_tracks(publisher.pc, publisher, clip)
    add_subscriber_transceivers(subscriber.pc, subscriber)
    await publisher.pc.setLocalDescription(await publisher.pc.createOffer())
    await subscriber.pc.setRemoteDescription(publisher.pc.localDescription)
    await subscriber.pc.setLocalDescription(await subscriber.pc.createAnswer())
    await publisher.pc.setRemoteDescription(subscriber.pc.localDescription)


def plan(
    scenario: str, count: int, publishers: int, probe_limit: int
) -> tuple[list[Publisher], list[Subscriber]]:
    pubs: list[Publisher] = []
    subs: list[Subscriber] = []
    if scenario in ("fanout", "direct"):
        for p in range(publishers):
            publisher = Publisher(room=f"bench-fan-{p}", identity=f"pub-{p}", role="agent")
            pubs.append(publisher)
            for s in range(count):
                subs.append(
                    Subscriber(
                        room=publisher.room,
                        target=publisher,
                        identity=f"sub-{p}-{s}",
                        role="observer",
                        probe=s < probe_limit,
                    )
                )
    elif scenario == "calls":
        for c in range(count):
            room = f"bench-call-{c}"
            agent = Publisher(room=room, identity=f"agent-{c}", role="agent")
            customer = Publisher(room=room, identity=f"customer-{c}", role="customer", audio_phase=0.5)
            pubs.extend((agent, customer))
            # Each party's viewer runs under its own identity: WHIP and WHEP are separate sessions.
            subs.append(Subscriber(room, customer, f"agent-{c}-view", "agent", probe=2 * c < probe_limit))
            subs.append(
                Subscriber(room, agent, f"customer-{c}-view", "customer", probe=2 * c + 1 < probe_limit)
            )
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return pubs, subs


async def gather_limited(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> list[str]:
    semaphore = asyncio.Semaphore(limit)
    errors: list[str] = []

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            try:
                await job()
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")

    await asyncio.gather(*(run(job) for job in jobs))
    return errors


async def inbound_counts(subs: list[Subscriber]) -> dict[str, list[tuple[int, int]]]:
    """(packetsReceived, packetsLost) per subscriber and kind."""
    result: dict[str, list[tuple[int, int]]] = {"video": [], "audio": []}
    for subscriber in subs:
        per_kind = {"video": (0, 0), "audio": (0, 0)}
        if subscriber.pc is not None:
            report = await subscriber.pc.getStats()
            for stats in report.values():
                if getattr(stats, "type", "") == "inbound-rtp" and stats.kind in per_kind:
                    received, lost = per_kind[stats.kind]
                    per_kind[stats.kind] = (
                        received + stats.packetsReceived,
                        lost + stats.packetsLost,
                    )
        for kind in per_kind:
            result[kind].append(per_kind[kind])
    return result


async def measure_loop_lag(lags: list[float]) -> None:
    """Appends how late (ms) a 50 ms timer fires, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_INTERVAL_S
        await asyncio.sleep(LAG_INTERVAL_S)
        lags.append(max(0.0, loop.time() - due) * 1000)


async def scrape(session: aiohttp.ClientSession | None, base_url: str | None) -> str | None:
    if session is None or not base_url:
        return None
    try:
        async with session.get(base_url.rstrip("/") + "/metrics") as response:
            return await response.text() if response.status == 200 else None
    except (TimeoutError, aiohttp.ClientError):
        return None


def _quantiles_ms(buckets: dict[float, float]) -> dict[str, float | None]:
    p50 = histogram_quantile(buckets, 0.50)
    p99 = histogram_quantile(buckets, 0.99)
    return {"p50_ms": None if p50 is None else p50 * 1000, "p99_ms": None if p99 is None else p99 * 1000}


def _window_buckets(
    samples_before: list[Any], samples_after: list[Any], name: str, group: Callable[[dict[str, str]], str]
) -> dict[str, dict[float, float]]:
    """Bucket counts of histogram `name` over the window, summed over the series `group` maps
    to one key. A multi-worker server's /metrics repeats every series once per media worker
    (label media_worker): grouping without that label sums the workers, which is right for
    "how long does a hook take" (every observation counts once)."""
    start = histograms(samples_before, name)
    merged: dict[str, dict[float, float]] = {}
    for key, buckets in histograms(samples_after, name).items():
        target = merged.setdefault(group(dict(key[1])), {})
        for le, count in bucket_delta(buckets, start.get(key)).items():
            target[le] = target.get(le, 0.0) + count
    return merged


def per_worker_split(samples: list[Any]) -> dict[str, dict[str, float]]:
    """Rooms and participants per media worker, from a merged exposition (`finrtc_rooms` /
    `finrtc_participants` carry media_worker="0", "1", …; the front's `finrtc_worker_*` gauges
    are the same figures as its router saw them). Empty for a single-process server."""
    split: dict[str, dict[str, float]] = {}
    for sample in samples:
        worker = sample.labels.get(WORKER_LABEL)
        if worker is None or worker == "front":
            continue
        entry = split.setdefault(worker, {})
        if sample.name == "finrtc_rooms":
            entry["rooms"] = entry.get("rooms", 0.0) + sample.value
        elif sample.name == "finrtc_participants":
            entry["participants"] = entry.get("participants", 0.0) + sample.value
        elif sample.name == "finrtc_worker_rooms":
            entry["router_rooms"] = sample.value
        elif sample.name == "finrtc_worker_participants":
            entry["router_participants"] = sample.value
    return {worker: entry for worker, entry in sorted(split.items()) if entry}


def metric_summary(before: str | None, after: str | None) -> dict[str, Any]:
    """Per-hook / encode p99 and event-loop lag over the window, from the server's histograms.

    Works on one process' exposition and on a front listener's merged one (every worker's
    series labelled media_worker): hook and encode histograms are summed over the workers,
    event-loop lag is reported per worker and as the worst worker's p99 (each worker has its
    own loop; summing would hide the one that is late)."""
    if after is None:
        return {}
    samples_after = parse_metrics(after)
    samples_before = parse_metrics(before) if before else []
    summary: dict[str, Any] = {"hooks": {}, "encode": {}, "event_loop_lag": None}
    for name, target, label in (
        ("finrtc_hook_seconds", "hooks", "hook"),
        ("finrtc_encode_seconds", "encode", "kind"),
    ):

        def tag_of(labels: dict[str, str], label: str = label) -> str:
            tag = labels.get(label, "?")
            return f"{tag}/{labels['stage']}" if "stage" in labels else tag

        for tag, delta in _window_buckets(samples_before, samples_after, name, tag_of).items():
            count = max(delta.values()) if delta else 0.0
            summary[target][tag] = {"count": int(count), **_quantiles_ms(delta)}
    # Whether speech recognition kept up (F2): audio it had to drop is audio compliance cannot
    # vouch for, so such a point does not meet the SLO however fast the media was.
    dropped = counter_total(samples_after, "finrtc_compliance_audio_dropped_seconds_total")
    if dropped is not None:
        before_dropped = counter_total(samples_before, "finrtc_compliance_audio_dropped_seconds_total")
        compliance: dict[str, float] = {"audio_dropped_s": dropped - (before_dropped or 0.0)}
        for decoded in ("true", "false"):
            now = counter_total(samples_after, "finrtc_compliance_utterances_total", decoded=decoded)
            then = counter_total(samples_before, "finrtc_compliance_utterances_total", decoded=decoded)
            if now is not None:
                key = "utterances_decoded" if decoded == "true" else "utterances_spotted_only"
                compliance[key] = now - (then or 0.0)
        summary["compliance"] = compliance
    split = per_worker_split(samples_after)
    if split:
        summary["per_worker"] = split
    lag = _window_buckets(
        samples_before,
        samples_after,
        "finrtc_event_loop_lag_seconds",
        lambda labels: labels.get(WORKER_LABEL, ""),
    )
    if lag:
        workers = {worker: _quantiles_ms(buckets) for worker, buckets in lag.items() if worker}
        merged: dict[float, float] = {}
        for buckets in lag.values():
            for le, count in buckets.items():
                merged[le] = merged.get(le, 0.0) + count
        entry: dict[str, Any] = _quantiles_ms(merged)
        if workers:
            # The worst worker: a call on a late loop is late, whatever the other loops do.
            entry["all_workers_p99_ms"] = entry["p99_ms"]
            worst = [q["p99_ms"] for q in workers.values() if q["p99_ms"] is not None]
            entry["p99_ms"] = max(worst) if worst else None
            medians = [q["p50_ms"] for q in workers.values() if q["p50_ms"] is not None]
            entry["p50_ms"] = max(medians) if medians else None
            entry["per_worker"] = workers
        summary["event_loop_lag"] = entry
    else:
        gauges = [s.value for s in samples_after if s.name == "finrtc_event_loop_lag_seconds"]
        if gauges:
            summary["event_loop_lag"] = {"last_ms": max(gauges) * 1000}
    return summary


def by_process(start: list[dict[str, Any]], end: list[dict[str, Any]], window: float) -> dict[str, Any]:
    """The server tree's CPU (cores over the window), RSS and PSS (MB, at the end) by what owns
    it: "front", "worker0", "worker1", … (each worker with its recognizer processes), and by role
    within it ("worker0/recognizer"). A process that started inside the window counts from 0.
    `pss_mb` is None when any process of the group had no readable PSS."""
    before = {p["pid"]: p["cpu_s"] for p in start}
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    pss: dict[str, float | None] = {}
    processes: dict[str, int] = {}
    for process in end:
        keys = [process["owner"]]
        if process["role"] != process["owner"]:
            keys.append(f"{process['owner']}/{process['role']}")
        own_pss = process.get("pss_bytes")
        for key in keys:
            cpu[key] = cpu.get(key, 0.0) + (process["cpu_s"] - before.get(process["pid"], 0.0)) / window
            rss[key] = rss.get(key, 0.0) + process["rss_bytes"] / 2**20
            known = pss.get(key, 0.0)
            pss[key] = None if known is None or own_pss is None else known + own_pss / 2**20
            processes[key] = processes.get(key, 0) + 1
    return {
        key: {
            "cpu_cores": round(cpu[key], 4),
            "rss_mb": round(rss[key], 1),
            "pss_mb": None if pss[key] is None else round(pss[key] or 0.0, 1),
            "processes": processes[key],
        }
        for key in sorted(cpu)
    }


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    clip = clip_module.load_clip()
    pubs, subs = plan(args.scenario, args.count, args.publishers, args.probe_limit)
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "count": args.count,
        "publishers": len(pubs),
        "subscriber_streams": len(subs),
        "probes": sum(s.probe for s in subs),
        "warmup_s": args.warmup,
        "measure_s": args.measure,
        "errors": [],
    }
    timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S)
    session = aiohttp.ClientSession(timeout=timeout) if args.scenario != "direct" else None
    signaling = Signaling(session, args.base_url, args.secret) if session else None
    setup_started = time.perf_counter()
    try:
        if signaling is None:
            errors = await gather_limited(
                [functools.partial(connect_direct, s.target, s, clip) for s in subs],
                SETUP_CONCURRENCY,
            )
        else:
            errors = await gather_limited(
                [functools.partial(publish, signaling, p, clip) for p in pubs],
                SETUP_CONCURRENCY,
            )
            errors += await gather_limited(
                [functools.partial(subscribe, signaling, s) for s in subs],
                SETUP_CONCURRENCY,
            )
        result["errors"].extend(errors)
        waiting = [asyncio.wait_for(s.first_frame.wait(), CONNECT_TIMEOUT_S) for s in subs]
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        result["connected"] = sum(1 for outcome in outcomes if not isinstance(outcome, BaseException))
        result["setup_s"] = time.perf_counter() - setup_started
        await asyncio.sleep(args.warmup)

        own_pid = os.getpid()
        window_start = time.perf_counter()
        server_cpu_start = cpu_seconds(args.server_pid) if args.server_pid else None
        threads_start = cpu_seconds_by_thread(args.server_pid) if args.server_pid else {}
        tree_start = process_tree(args.server_pid) if args.server_pid else []
        own_cpu_start = cpu_seconds(own_pid)
        busy_start = system_busy_seconds()
        metrics_start = await scrape(session, args.base_url)
        stats_start = await inbound_counts(subs)
        lags: list[float] = []
        lag_task = asyncio.ensure_future(measure_loop_lag(lags))
        rss_samples: list[int] = []
        rss_timeline: list[tuple[float, float]] = []
        deadline = window_start + args.measure
        while (now := time.perf_counter()) < deadline:
            if args.server_pid:
                rss_samples.append(rss_bytes(args.server_pid))
                if not rss_timeline or now - window_start - rss_timeline[-1][0] >= RSS_TIMELINE_STEP_S:
                    rss_timeline.append((round(now - window_start, 2), round(rss_samples[-1] / 2**20, 2)))
            await asyncio.sleep(min(RSS_SAMPLE_INTERVAL_S, max(0.0, deadline - now)))
        window_end = time.perf_counter()
        server_cpu_end = cpu_seconds(args.server_pid) if args.server_pid else None
        threads_end = cpu_seconds_by_thread(args.server_pid) if args.server_pid else {}
        # PSS walks every page table: read once, after the window, so it costs the window nothing.
        tree_end = process_tree(args.server_pid, with_pss=True) if args.server_pid else []
        own_cpu_end = cpu_seconds(own_pid)
        busy_end = system_busy_seconds()
        metrics_end = await scrape(session, args.base_url)
        stats_end = await inbound_counts(subs)
        window = window_end - window_start
        lag_task.cancel()

        latencies = [lat * 1000 for s in subs for (t, lat) in s.latencies if window_start <= t <= window_end]
        fps = [sum(window_start <= t <= window_end for t in s.video_times) / window for s in subs]
        loss: dict[str, float | None] = {}
        for kind in ("video", "audio"):
            received = sum(e[0] - b[0] for b, e in zip(stats_start[kind], stats_end[kind], strict=True))
            lost = sum(max(0, e[1] - b[1]) for b, e in zip(stats_start[kind], stats_end[kind], strict=True))
            loss[kind] = 100.0 * lost / (received + lost) if received + lost > 0 else None
        result.update(
            {
                "window_s": window,
                "latency_ms": {
                    "n": len(latencies),
                    "p50": percentile(latencies, 0.50),
                    "p95": percentile(latencies, 0.95),
                    "p99": percentile(latencies, 0.99),
                    "max": max(latencies) if latencies else None,
                },
                "fps": {
                    "min": min(fps) if fps else None,
                    "median": percentile(fps, 0.5),
                    "mean": sum(fps) / len(fps) if fps else None,
                },
                "audio_pps_mean": (
                    sum(s.audio_frames for s in subs) / len(subs) / max(window_end - setup_started, 1e-9)
                    if subs
                    else None
                ),
                "unreadable_frames": sum(s.unreadable for s in subs),
                "loss_pct": loss,
                "loadgen_cpu_cores": (own_cpu_end - own_cpu_start) / window,
                # A late event loop here means the latency figures include our own queueing.
                "loadgen_loop_lag_ms": {
                    "p50": percentile(lags, 0.5),
                    "p99": percentile(lags, 0.99),
                    "max": max(lags) if lags else None,
                },
                # Everything else on the machine: a shared machine makes the point noisy.
                "foreign_cpu_cores": max(
                    0.0,
                    (busy_end - busy_start)
                    - (own_cpu_end - own_cpu_start)
                    - ((server_cpu_end or 0.0) - (server_cpu_start or 0.0) if args.server_pid else 0.0),
                )
                / window,
            }
        )
        if server_cpu_start is not None and server_cpu_end is not None:
            cpu = server_cpu_end - server_cpu_start
            result["server"] = {
                "cpu_s": cpu,
                "cpu_cores": cpu / window,
                "cpu_s_per_stream_s": cpu / (window * len(subs)) if subs else None,
                "rss_mb_end": rss_samples[-1] / 2**20 if rss_samples else None,
                "rss_mb_max": max(rss_samples) / 2**20 if rss_samples else None,
                "rss_timeline_mb": rss_timeline,
                # Where the server's CPU went, in cores, by native thread name (threads that
                # ended inside the window are missing).
                "cpu_cores_by_thread": {
                    name: round((threads_end[name] - threads_start.get(name, 0.0)) / window, 4)
                    for name in sorted(threads_end)
                    if threads_end[name] - threads_start.get(name, 0.0) > 0
                },
            }
        if tree_end:
            result["server"]["by_process"] = by_process(tree_start, tree_end, window)
            pss = [p["pss_bytes"] for p in tree_end if p.get("pss_bytes") is not None]
            result["server"]["pss_mb_end"] = sum(pss) / 2**20 if len(pss) == len(tree_end) else None
        result["metrics"] = metric_summary(metrics_start, metrics_end)
        if "per_worker" in result["metrics"]:
            result["per_worker"] = result["metrics"]["per_worker"]
    finally:
        if signaling is not None:
            await asyncio.gather(
                *(signaling.delete(s.location, s.room, s.identity, s.role) for s in subs),
                *(signaling.delete(p.location, p.room, p.identity, p.role) for p in pubs),
            )
        for pc in [*(s.pc for s in subs), *(p.pc for p in pubs)]:
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        if session is not None:
            await session.close()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="finrtc benchmark load generator")
    parser.add_argument("--scenario", choices=("fanout", "calls", "direct"), required=True)
    parser.add_argument("--count", type=int, default=1, help="subscribers per publisher, or calls")
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--probe-limit", type=int, default=4)
    parser.add_argument("--base-url", default="")
    parser.add_argument("--secret", default="")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--measure", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.scenario == "direct" and (args.count != 1 or args.publishers != 1):
        parser.error("the direct scenario is one publisher and one subscriber (--count 1)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pin_ice_to_loopback()
    install_uvloop()
    result = asyncio.run(run_scenario(args))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
