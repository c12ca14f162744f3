"""End to end below the room: flite speech -> 48 kHz stereo (Opus round trip) -> audio tap ->
recognizer worker processes -> stage tracker -> published events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from finrtc.compliance.monitor import ComplianceMonitor
from finrtc.compliance.recognizer import KeywordHit, RecognitionResult, builtin_model
from finrtc.compliance.script import Script, load_script
from finrtc.compliance.testing import chunks, opus_round_trip, silence, synthesize, to_48k_stereo
from finrtc.compliance.workers import RecognizerPool
from finrtc.metrics import REGISTRY
from finrtc.model import MediaKind, Role, Severity, TrackInfo

AGENT = TrackInfo("r1", "sess", "alice", Role.AGENT, "track-agent", MediaKind.AUDIO)
CUSTOMER = TrackInfo("r1", "sess", "bob", Role.CUSTOMER, "track-customer", MediaKind.AUDIO)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], Severity, Any]] = []

    def __call__(
        self, event_type: str, data: dict[str, Any], severity: Severity, audience: Any
    ) -> None:
        self.events.append((event_type, data, severity, audience))

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [data for kind, data, _, _ in self.events if kind == event_type]


@pytest.fixture(scope="module")
def pool() -> Iterator[RecognizerPool]:
    # A large queue: the tests feed faster than real time.
    recognizers = RecognizerPool(builtin_model(), workers=2, queue_seconds=120)
    recognizers.start()
    yield recognizers
    recognizers.close()


@pytest.fixture(scope="module")
def script() -> Script:
    return load_script("builtin:demo_insurance_en")


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NDArray[np.int16]]:
    folder = tmp_path_factory.mktemp("flite")
    texts = {
        "identity": "My name is Alice Brown. I am a licensed insurance agent.",
        "product": "This policy is issued by Northwind Life.",
        "risk": "Returns are not guaranteed.",
        "exclusions": "The policy does not cover pre existing conditions.",
        "negated": "I have not understood and I do not agree.",
        "confirm": "I have understood and I agree.",
    }
    return {key: synthesize(text, folder, voice="rms" if key in ("negated", "confirm") else "slt")
            for key, text in texts.items()}


def webrtc_audio(parts: list[NDArray[np.int16]]) -> NDArray[np.int16]:
    pieces: list[NDArray[np.int16]] = []
    for part in parts:
        pieces += [part, silence(0.8)]
    return opus_round_trip(to_48k_stereo(np.concatenate([silence(0.5), *pieces])))


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def status(session: ComplianceMonitor, stage_id: str) -> str:
    return next(s.status for s in session.tracker.stages if s.spec.id == stage_id)


def play(session: ComplianceMonitor, track: TrackInfo, audio: NDArray[np.int16], start: float) -> None:
    tap = session.tap_provider.create(track, lambda event: None)
    for chunk in chunks(audio, start):
        tap.process_audio(chunk.read_only())
    tap.close()


async def test_full_call_completes_stages_in_order(
    pool: RecognizerPool, script: Script, lines: dict[str, NDArray[np.int16]]
) -> None:
    published = Recorder()
    session = ComplianceMonitor("r1", script, pool, published)
    session.start()
    assert published.of("compliance.prompt")[0]["stage_id"] == "identity"
    agent = webrtc_audio([lines["identity"], lines["product"], lines["risk"], lines["exclusions"]])
    play(session, AGENT, agent, 0.0)
    await wait_until(lambda: status(session, "exclusions") == "completed")
    assert not session.can_submit
    customer_start = len(agent) / 48000
    customer = webrtc_audio([lines["negated"], lines["confirm"]])
    play(session, CUSTOMER, customer, customer_start)
    report = await session.close(flush_timeout=60.0)

    stages = {stage["id"]: stage for stage in report["stages"]}
    assert [stages[key]["status"] for key in stages] == ["completed"] * 5
    times = [stages[key]["media_time"] for key in stages]
    assert times == sorted(times), times
    assert stages["customer_confirmation"]["media_time"] > customer_start + 2.0
    assert stages["identity"]["participant"] == "alice"
    assert stages["customer_confirmation"]["participant"] == "bob"
    assert stages["customer_confirmation"]["confidence"] > 0.3
    assert "not" not in (stages["customer_confirmation"]["transcript"] or "")
    assert report["can_submit"] is True and report["status"] == "final"
    assert report["verifiable"] is True
    assert stages["identity"]["model_digest"] == builtin_model().digest
    # The negated confirmation was heard and refused, with a prompt to the agent.
    rejected = published.of("compliance.stage_rejected")
    assert any(item["reason"] == "negation" for item in rejected), rejected
    completed = [item["stage"]["id"] for item in published.of("compliance.stage_completed")]
    assert completed == [stage.id for stage in script.stages]
    assert not published.of("compliance.stage_missed")
    prompts = [(kind, audience) for kind, _, _, audience in published.events
               if kind == "compliance.prompt"]
    assert all(audience == {Role.AGENT, Role.OBSERVER} for _, audience in prompts)
    assert published.of("compliance.report")[0]["can_submit"] is True


async def test_skipped_exclusions_are_missed_and_prompted(
    pool: RecognizerPool, script: Script, lines: dict[str, NDArray[np.int16]]
) -> None:
    published = Recorder()
    session = ComplianceMonitor("r2", script, pool, published)
    session.start()
    agent = webrtc_audio([lines["identity"], lines["product"], lines["risk"]])
    play(session, AGENT, agent, 0.0)
    await wait_until(lambda: status(session, "risk_notice") == "completed")
    play(session, CUSTOMER, webrtc_audio([lines["confirm"]]), len(agent) / 48000)
    await wait_until(lambda: bool(published.of("compliance.stage_missed")))

    missed = published.of("compliance.stage_missed")
    assert missed[0]["stage"]["id"] == "exclusions"
    assert missed[0]["reason"] == "out_of_order"
    urgent = [p for p in published.of("compliance.prompt") if p.get("urgent")]
    assert any(p["stage_id"] == "exclusions" for p in urgent), urgent
    assert session.can_submit is False
    assert status(session, "customer_confirmation") != "completed"
    report = await session.close(flush_timeout=60.0)
    assert report["can_submit"] is False
    stages = {stage["id"]: stage for stage in report["stages"]}
    assert stages["exclusions"]["status"] == "missed"
    assert stages["customer_confirmation"]["rejections"][0]["reason"] == "earlier_stages_open"


async def test_slow_recognizer_drops_without_blocking_the_feed(
    script: Script, lines: dict[str, NDArray[np.int16]]
) -> None:
    slow_pool = RecognizerPool(builtin_model(), workers=1, queue_seconds=0.3, transcribe="off")
    slow_pool.start()
    try:
        published = Recorder()
        # Each second of audio costs the worker 5 s of CPU: far slower than real time.
        session = ComplianceMonitor("r3", script, slow_pool, published, recognizer_slowdown=5.0)
        session.start()
        metric = "finrtc_compliance_audio_blocks_dropped_total"
        before = REGISTRY.get_sample_value(metric, {"reason": "backlog"}) or 0.0
        audio = webrtc_audio([lines["identity"], lines["product"]])
        tap = session.tap_provider.create(AGENT, lambda event: None)
        durations: list[float] = []

        def media_thread() -> None:
            # Paced like a live track (5x faster than real time to keep the test short).
            for chunk in chunks(audio):
                started = time.perf_counter()
                tap.process_audio(chunk.read_only())
                durations.append(time.perf_counter() - started)
                time.sleep(0.004)

        thread = threading.Thread(target=media_thread)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.02)
        thread.join()
        await wait_until(lambda: bool(published.of("compliance.recognizer_backlog")), 5.0)
        after = REGISTRY.get_sample_value(metric, {"reason": "backlog"}) or 0.0
        assert after > before
        alert = next(e for e in published.events if e[0] == "compliance.recognizer_backlog")
        assert alert[2] is Severity.ALERT
        # Blocking would mean waiting ~0.5 s for the worker per block; allow scheduler jitter.
        assert max(durations) < 0.15, max(durations)
        assert sorted(durations)[len(durations) // 2] < 0.001
        report = session.report()
        assert report["audio"]["dropped_seconds"] > 0
        assert report["verifiable"] is False
        tap.close()
        await session.close(flush_timeout=1.0)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, slow_pool.close)


def test_taps_for_observers_do_nothing(pool: RecognizerPool, script: Script) -> None:
    session = ComplianceMonitor("r4", script, pool, Recorder())
    observer = TrackInfo("r4", "s", "eve", Role.OBSERVER, "t9", MediaKind.AUDIO)
    assert session.tap_provider.handles(MediaKind.AUDIO)
    assert not session.tap_provider.handles(MediaKind.VIDEO)
    tap = session.tap_provider.create(observer, lambda event: None)
    for chunk in chunks(to_48k_stereo(silence(0.2))):
        tap.process_audio(chunk)
    tap.close()
    assert session._feeds == []




def spotted(phrase: str, at: float) -> RecognitionResult:
    hit = KeywordHit(phrase, at, at + 1.0, 0.9)
    return RecognitionResult("s", None, (hit,), at, at + 1.0, 0.9, "pocketsphinx", "digest")


async def test_transcripts_are_demanded_from_whoever_owes_the_next_stage(
    pool: RecognizerPool, script: Script
) -> None:
    session = ComplianceMonitor("r4", script, pool, Recorder())
    session.start()
    taps = [session.tap_provider.create(track, lambda event: None) for track in (AGENT, CUSTOMER)]
    agent, customer = AGENT.track_id, CUSTOMER.track_id
    assert session.transcript_demand() == {agent: True, customer: False}
    agent_stages = [stage for stage in script.stages if stage.role == "agent"]
    for index, stage in enumerate(agent_stages):
        session.observe(AGENT, spotted(stage.phrases[0], float(index)))
    assert session.transcript_demand() == {agent: False, customer: True}
    confirmation = next(stage for stage in script.stages if stage.role == "customer")
    session.observe(CUSTOMER, spotted(confirmation.phrases[0], 10.0))
    assert session.can_submit
    assert session.transcript_demand() == {agent: False, customer: False}
    for tap in taps:
        tap.close()
    await session.close(flush_timeout=30.0)
