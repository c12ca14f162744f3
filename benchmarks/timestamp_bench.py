"""Benchmark of RFC 3161 trusted timestamps (issue 16) against a real TSA (`openssl ts -reply`
behind HTTP on 127.0.0.1, tests/support/tsa.py).

1. Stamping cost per segment, client side: the same replayed recording (real VP8 640x480 +
   Opus, `benchmarks.archive_bench.encode_gop`) sealed with and without a stamper. Reported: the
   time the recorder's writer thread spends handing a record over (`sealed()`), the stamper
   thread's CPU per token (request, answer check, store) and its wall time per round trip, and
   the seal time per segment with / without stamping, as ratios.
2. A 10 s TSA outage mid-call: a session paced to the wall clock, the TSA process stopped after
   8 s and restarted 10 s later. Reported: records whose first attempt failed, records verify
   calls stamped late (over 1 s) and by how much, and that the session still verifies.
3. Verify time of a 1-hour session (1800 segments of 2 s) with every token against verify of
   the same session without `--tsa-cert`, in the same run, structure-only and with content.

Run: python -m benchmarks.timestamp_bench [--minutes 60] [--out benchmarks/results/...json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.tsa import TsaPki, TsaProcess, make_tsa_pki

from benchmarks.archive_bench import encode_gop, interleave
from finrtc.archive.keys import (
    Signer,
    generate_keys,
    load_archive_private_key,
    load_archive_public_key,
    load_verify_key,
)
from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.settings import ArchiveConfig, TimestampingConfig
from finrtc.archive.stamper import SessionStamps, TimestampService, attach
from finrtc.archive.storage import LocalStorage
from finrtc.archive.timestamping import load_tsa_certificates
from finrtc.archive.verify import VerifyOptions, verify_session
from finrtc.archive.verify_stamps import StampOptions
from finrtc.model import EncodedPacket, MediaKind, Role, TrackInfo

SEGMENT_S = 2.0


class TimedStamps:
    """Measures what the recorder's writer thread pays per record for the hand-over."""

    def __init__(self, inner: SessionStamps) -> None:
        self.inner = inner
        self.handover_s: list[float] = []

    def extra_fields(self, record_type: str) -> dict[str, Any]:
        return self.inner.extra_fields(record_type)

    def sealed(self, name: str, digest: str) -> None:
        started = time.perf_counter()
        self.inner.sealed(name, digest)
        self.handover_s.append(time.perf_counter() - started)


def new_recorder(directory: Path, session: str, signer: Signer, recipient: Any
                 ) -> SessionRecorder:
    config = ArchiveConfig(segment_seconds=SEGMENT_S)
    recorder = SessionRecorder.create(
        config, directory, "bench", session, "default", None, signer, [recipient],
        storage=LocalStorage(directory / "archive"),
    )
    recorder.add_track(TrackInfo("bench", session, "p", Role.AGENT, "cam", MediaKind.VIDEO),
                       width=640, height=480)
    recorder.add_track(TrackInfo("bench", session, "p", Role.AGENT, "mic", MediaKind.AUDIO))
    return recorder


def replay(recorder: SessionRecorder, gop: list[EncodedPacket], segments: int, *,
           realtime: bool = False, at: dict[float, Any] | None = None) -> None:
    gop_video = sum(1 for p in gop if p.kind is MediaKind.VIDEO)
    gop_audio = len(gop) - gop_video
    wall0 = time.time()
    started = time.monotonic()
    pending = sorted((at or {}).items())
    limit = recorder.config.queue_packets // 2
    for k in range(segments):
        shift = k * SEGMENT_S
        for packet in gop:
            video = packet.kind is MediaKind.VIDEO
            rate = 90_000 if video else 48_000
            shifted = dataclasses.replace(
                packet, pts=packet.pts + int(shift * rate),
                sequence=packet.sequence + k * (gop_video if video else gop_audio),
                wall_clock=wall0 + shift + packet.media_time,
            )
            media_time = shift + packet.media_time
            if realtime:
                time.sleep(max(0.0, media_time - (time.monotonic() - started)))
            while pending and media_time >= pending[0][0]:
                pending.pop(0)[1]()
            while recorder.backlog > limit:
                time.sleep(0.001)
            recorder.offer(shifted)
    asyncio.run(recorder.close())


def service_for(process: TsaProcess, pki: TsaPki, **extra: Any) -> TimestampService:
    config = TimestampingConfig(enabled=True, url=process.url, ca_file=str(pki.ca_cert),
                                **{"close_wait_s": 120.0, "retry_max_s": 1.0, **extra})
    service = TimestampService(config, load_tsa_certificates(pki.ca_cert))
    service.start()
    return service


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def cost(directory: Path, gop: list[EncodedPacket], pki: TsaPki, process: TsaProcess,
         keys: Any, segments: int) -> dict[str, Any]:
    signer = Signer.from_file(keys.signer_key)
    recipient = load_archive_public_key(keys.archive_pub)
    plain = new_recorder(directory, "cost-plain", signer, recipient)
    asyncio.run(plain.start())
    replay(plain, gop, segments)
    service = service_for(process, pki)
    try:
        stamped = new_recorder(directory, "cost-stamped", signer, recipient)
        timed = TimedStamps(attach(service, stamped))
        stamped.seal_observer = timed
        asyncio.run(stamped.start())
        replay(stamped, gop, segments)
        left = timed.inner.wait_sync()
        costs = list(service.costs)
    finally:
        service.close()
    seal_plain = list(plain.seal_seconds)
    seal_stamped = list(stamped.seal_seconds)
    cpu = [c.cpu_s for c in costs]
    wall = [c.wall_s for c in costs]
    return {
        "segments": segments,
        "tokens": len(costs),
        "left_without_token": len(left),
        "handover_us_mean": statistics.fmean(timed.handover_s) * 1e6,
        "handover_us_p99": percentile(timed.handover_s, 0.99) * 1e6,
        "stamper_cpu_ms_per_token_mean": statistics.fmean(cpu) * 1e3,
        "stamper_cpu_ms_per_token_p95": percentile(cpu, 0.95) * 1e3,
        "round_trip_ms_mean": statistics.fmean(wall) * 1e3,
        "round_trip_ms_p95": percentile(wall, 0.95) * 1e3,
        "seal_ms_mean_without": statistics.fmean(seal_plain) * 1e3,
        "seal_ms_mean_with": statistics.fmean(seal_stamped) * 1e3,
        "seal_ratio_with_over_without": statistics.fmean(seal_stamped) / statistics.fmean(seal_plain),
        "stamper_cpu_over_seal_time": statistics.fmean(cpu) / statistics.fmean(seal_plain),
    }


def outage(directory: Path, gop: list[EncodedPacket], pki: TsaPki, keys: Any,
           seconds: float, stop_at: float, outage_s: float) -> dict[str, Any]:
    process = TsaProcess(pki)
    process.start()
    service = service_for(process, pki)
    signer = Signer.from_file(keys.signer_key)
    recorder = new_recorder(directory, "outage", signer, load_archive_public_key(keys.archive_pub))
    stamps = attach(service, recorder)
    asyncio.run(recorder.start())
    restarted = threading.Event()
    stopped_at: list[float] = []

    def stop() -> None:
        process.stop()
        stopped_at.append(time.monotonic())

    def restart() -> None:
        time.sleep(max(0.0, outage_s - (time.monotonic() - stopped_at[0])))
        process.start()
        stopped_at.append(time.monotonic())
        restarted.set()

    try:
        replay(recorder, gop, int(seconds / SEGMENT_S), realtime=True,
               at={stop_at: stop, stop_at + 0.5: lambda: threading.Thread(target=restart).start()})
        left = stamps.wait_sync(60)
        first_attempt_failed = sorted(stamps.late)
    finally:
        restarted.wait(30)
        service.close()
        process.stop()
    session = directory / "archive" / "bench" / "outage"
    report = verify_session(
        LocalStorage(session), "", load_verify_key(keys.signer_pub), None,
        VerifyOptions(stamps=StampOptions(load_tsa_certificates(pki.ca_cert), late_after_s=1.0)),
    )
    assert report.timestamps is not None
    late = report.timestamps["stamped_late"]
    return {
        "session_seconds": seconds,
        "outage_seconds": stopped_at[1] - stopped_at[0] if len(stopped_at) > 1 else None,
        "records": report.timestamps["checked"],
        "records_requested_late": len(first_attempt_failed),
        "records_stamped_late_over_1s": len(late),
        "late_by_s_max": max((item["late_by_s"] for item in late), default=0.0),
        "late_by_s": {item["record"]: item["late_by_s"] for item in late},
        "left_without_token": len(left),
        "verify_exit": report.exit_code,
        "counts": report.timestamps["counts"],
    }


def verify_hour(directory: Path, gop: list[EncodedPacket], pki: TsaPki, process: TsaProcess,
                keys: Any, minutes: float) -> dict[str, Any]:
    segments = int(minutes * 60 / SEGMENT_S)
    signer = Signer.from_file(keys.signer_key)
    service = service_for(process, pki, queue_records=max(4096, segments + 16))
    started = time.perf_counter()
    try:
        recorder = new_recorder(directory, "hour", signer,
                                load_archive_public_key(keys.archive_pub))
        stamps = attach(service, recorder)
        asyncio.run(recorder.start())
        replay(recorder, gop, segments)
        record_s = time.perf_counter() - started
        left = stamps.wait_sync(600)
        stamp_s = time.perf_counter() - started
    finally:
        service.close()
    session = directory / "archive" / "bench" / "hour"
    verify_key = load_verify_key(keys.signer_pub)
    archive_key = load_archive_private_key(keys.archive_key)
    trusted = load_tsa_certificates(pki.ca_cert)
    # The replay runs faster than real time, so tokens trail their records by minutes: the
    # tolerance is widened to the session length; the check itself is the same work.
    stamp_options = StampOptions(trusted, max_delay_s=minutes * 60 + 600)
    results: dict[str, Any] = {
        "media_minutes": minutes, "segments": recorder.segments_sealed,
        "record_seconds": record_s, "record_and_stamp_seconds": stamp_s,
        "left_without_token": len(left),
    }
    for label, key in (("structure", None), ("content", archive_key)):
        timings: dict[str, list[float]] = {"without": [], "with": []}
        for _repeat in range(2):
            for variant, stamps_option in (("without", None), ("with", stamp_options)):
                t0 = time.perf_counter()
                report = verify_session(LocalStorage(session), "", verify_key, key,
                                        VerifyOptions(stamps=stamps_option))
                timings[variant].append(time.perf_counter() - t0)
                results[f"{label}_{variant}_exit"] = report.exit_code
                if stamps_option is not None and report.timestamps is not None:
                    results["token_counts"] = report.timestamps["counts"]
        without, with_ = min(timings["without"]), min(timings["with"])
        results[f"verify_{label}_seconds_without_tokens"] = without
        results[f"verify_{label}_seconds_with_tokens"] = with_
        results[f"verify_{label}_ratio_with_over_without"] = with_ / without
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the verify session")
    parser.add_argument("--cost-segments", type=int, default=300)
    parser.add_argument("--outage-session", type=float, default=30.0)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="finrtc-tsa-bench-"))
    try:
        video, audio = encode_gop(SEGMENT_S)
        gop = interleave(video, audio)
        keys = generate_keys(directory / "keys")
        pki = make_tsa_pki(directory / "tsa", "Bench TSA")
        results: dict[str, Any] = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": platform.platform(), "python": sys.version.split()[0],
            "segment_seconds": SEGMENT_S,
            "tsa": "openssl ts -reply (one openssl process per request) behind aiohttp, 127.0.0.1",
        }
        process = TsaProcess(pki)
        process.start()
        try:
            print("stamping cost ...", file=sys.stderr, flush=True)
            results["cost"] = cost(directory, gop, pki, process, keys, args.cost_segments)
            print(json.dumps(results["cost"], indent=1), file=sys.stderr)
            print("verify of a long session ...", file=sys.stderr, flush=True)
            results["verify"] = verify_hour(directory, gop, pki, process, keys, args.minutes)
            print(json.dumps(results["verify"], indent=1), file=sys.stderr)
        finally:
            process.stop()
        print("10 s outage ...", file=sys.stderr, flush=True)
        results["outage"] = outage(directory, gop, pki, keys, args.outage_session, 8.0, 10.0)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
