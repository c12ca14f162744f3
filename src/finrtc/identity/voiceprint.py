"""Voiceprints: enrol a customer's voice on one call, verify it on later calls.

Threads: `VoiceHook.process_audio` runs on the audio track's media worker. It resamples the
20 ms chunk and feeds an energy VAD (microseconds), and only while the call's voiceprint session
asks for speech of that participant. Once enough voiced audio is collected, the embedding
(~15 ms of CPU per second of speech) runs on the shared analysis thread, at most one per
track in flight: audio arriving meanwhile is dropped and counted, never queued.

Personal data: an embedding appears in no event or log. An enrolment is kept in memory for
verification on later calls and its only durable copy is sealed with the enrolling call's
archive data key; when that call's archive is purged (its sealed keys destroyed) the enrolment
is gone too: `VoiceprintRegistry.find` checks, and forgets a purged one.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram

from finrtc import metrics
from finrtc.errors import ConflictError
from finrtc.hooks.builtin.face_presence import detector_pool
from finrtc.hooks.contract import AudioChunk, EventEmitter, FailurePolicy, Hook, HookContext, NoOptions, Stage
from finrtc.identity.settings import IdentityConfig
from finrtc.identity.voice import MODEL_FILE, Vector, VoicedAudio, VoiceEncoder, similarity, to_mono_16k
from finrtc.model import MediaKind, Role, Severity, TrackInfo

VOICE_SECONDS = Histogram(
    "finrtc_identity_voice_embedding_seconds",
    "CPU time of one voiceprint embedding (all collected speech of an enrolment or a check).",
    buckets=metrics.FRAME_BUCKETS,
    registry=metrics.REGISTRY,
)
VOICE_DROPPED = Counter(
    "finrtc_identity_voice_audio_dropped_seconds_total",
    "Seconds of customer audio not collected for a voiceprint because an embedding was running.",
    registry=metrics.REGISTRY,
)

STAFF = frozenset({Role.AGENT, Role.OBSERVER})
Publish = Callable[[str, dict[str, Any], Severity, "frozenset[Role] | None"], None]
# Called (on a worker thread) with an enrolment's embedding; seals and registers it.
Enrol = Callable[[str, Vector, float, float], None]


@dataclass
class Enrolment:
    enrolment_id: str
    customer: str
    embedding: Vector
    # Where its sealed copy is and what it was made from (digests, never the embedding).
    evidence: dict[str, Any]
    # False once the enrolling call's archive is purged.
    alive: Callable[[], bool]


class VoiceprintRegistry:
    """Enrolled voiceprints by enrolment id and by customer identity (the latest one wins)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, Enrolment] = OrderedDict()

    def add(self, enrolment: Enrolment) -> None:
        with self._lock:
            self._by_id[enrolment.enrolment_id] = enrolment
            while len(self._by_id) > self._capacity:
                self._by_id.popitem(last=False)

    def find(self, *, customer: str | None = None, enrolment_id: str | None = None) -> Enrolment | None:
        with self._lock:
            if enrolment_id is not None:
                candidates = [e for e in (self._by_id.get(enrolment_id),) if e is not None]
            else:
                candidates = [e for e in reversed(self._by_id.values()) if e.customer == customer]
        for found in candidates:
            if found.alive():
                return found
            self.forget(found.enrolment_id)
        return None

    def forget(self, enrolment_id: str) -> None:
        with self._lock:
            gone = self._by_id.pop(enrolment_id, None)
        if gone is not None:
            gone.embedding[:] = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)


@dataclass
class _Task:
    """What the call wants from one participant's voice."""

    mode: str  # "enrol" or "verify"
    seconds: float
    enrolment: Enrolment | None = None
    requested_by: str | None = None
    result: dict[str, Any] | None = None
    done: bool = False
    # Results of finished tasks (the report).
    history: list[dict[str, Any]] = field(default_factory=list)


class VoiceprintSession:
    """Voiceprint enrolment and verification of one call session."""

    def __init__(self, room: str, config: IdentityConfig, encoder: VoiceEncoder,
                 registry: VoiceprintRegistry, publish: Publish, auto_verify: bool) -> None:
        self.room = room
        self.config = config
        self.encoder = encoder
        self.registry = registry
        self._publish = publish
        self._auto_verify = auto_verify
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        # Participants whose enrolment was looked up (once: the lookup checks archive storage).
        self._looked_up: set[str] = set()
        self.results: list[dict[str, Any]] = []
        # Set by the runtime: seals an enrolment in this call's archive (None: not recorded).
        self.enrol_sink: Enrol | None = None
        self.closed = False

    @property
    def digests(self) -> dict[str, str]:
        return {MODEL_FILE: self.encoder.digest}

    # ---- event loop side ------------------------------------------------------------------

    def start_enrol(self, participant: str, requested_by: str) -> dict[str, Any]:
        if self.enrol_sink is None:
            raise ConflictError(
                f"room {self.room!r} is not recorded: a voiceprint can only be kept sealed in its archive"
            )
        return self._start(participant, _Task("enrol", self.config.voice_enrol_s, requested_by=requested_by))

    def start_verify(
        self, participant: str, enrolment: Enrolment, requested_by: str | None
    ) -> dict[str, Any]:
        return self._start(participant, _Task(
            "verify", self.config.voice_verify_s, enrolment=enrolment, requested_by=requested_by))

    def _start(self, participant: str, task: _Task) -> dict[str, Any]:
        with self._lock:
            running = self._tasks.get(participant)
            if running is not None and not running.done:
                raise ConflictError(f"a voiceprint {running.mode} of {participant!r} is already running")
            self._tasks[participant] = task
        state = {"participant": participant, "action": task.mode, "state": "collecting",
                 "speech_needed_s": task.seconds}
        if task.enrolment is not None:
            state["enrolment"] = task.enrolment.enrolment_id
        return state

    # ---- worker side ----------------------------------------------------------------------

    def wants(self, participant: str, role: Role) -> _Task | None:
        with self._lock:
            task = self._tasks.get(participant)
            lookup = (task is None and self._auto_verify and role is Role.CUSTOMER and not self.closed
                      and participant not in self._looked_up)
            if lookup:
                self._looked_up.add(participant)
                enrolment = self.registry.find(customer=participant)
                if enrolment is not None:
                    task = _Task("verify", self.config.voice_verify_s, enrolment=enrolment)
                    self._tasks[participant] = task
            return None if task is None or task.done else task

    def finish(self, participant: str, task: _Task, embedding: Vector, speech_s: float, cpu_s: float,
               media_time: float) -> None:
        with self._lock:
            task.done = True
        if task.mode == "enrol":
            sink = self.enrol_sink
            assert sink is not None
            sink(participant, embedding, speech_s, media_time)
            return
        assert task.enrolment is not None
        score = similarity(embedding, task.enrolment.embedding)
        decision = "match" if score >= self.config.voice_threshold else "no_match"
        result = {
            "participant": participant,
            "enrolment": task.enrolment.enrolment_id,
            "customer": task.enrolment.customer,
            "decision": decision,
            "score": round(score, 4),
            "threshold": self.config.voice_threshold,
            "speech_s": round(speech_s, 2),
            "cpu_s": round(cpu_s, 3),
            "media_time": round(media_time, 3),
        }
        with self._lock:
            task.result = result
            self.results.append(result)
        self.send("identity.voice_match", result)

    def send(self, event_type: str, data: dict[str, Any]) -> None:
        data["models"] = self.digests
        severity = Severity.WARNING if data.get("decision") == "no_match" else Severity.INFO
        self._publish(event_type, data, severity, STAFF)

    # ---- results --------------------------------------------------------------------------

    def voice_matched(self) -> bool:
        with self._lock:
            # The latest decision counts: a later no_match (someone else speaking) reopens the gate.
            return bool(self.results) and self.results[-1]["decision"] == "match"

    def report(self) -> dict[str, Any]:
        with self._lock:
            collecting = {
                name: {"action": task.mode, "speech_needed_s": task.seconds}
                for name, task in self._tasks.items() if not task.done
            }
            return {"matched": bool(self.results) and self.results[-1]["decision"] == "match",
                    "results": list(self.results), "collecting": collecting}


class VoiceHook(Hook):
    """Collects a customer's voiced audio while the call's voiceprint session asks for it."""

    name = "voiceprint"
    kinds = frozenset({MediaKind.AUDIO})
    stage = Stage.OBSERVE
    # Evidence, like face matching: a crash is sealed as hook_failed, the gate stays closed.
    failure_policy = FailurePolicy.FAIL_OPEN
    budget_ms = 5.0

    def __init__(self, context: HookContext, session: VoiceprintSession) -> None:
        super().__init__(NoOptions(), context)
        self._session = session
        self._collector: VoicedAudio | None = None
        self._task: _Task | None = None
        self._in_flight: Future[tuple[Vector, float]] | None = None
        self._in_flight_info: tuple[_Task, float, float] | None = None
        self.embeddings = 0

    def process_audio(self, chunk: AudioChunk) -> None:
        track = self.context.track
        self._apply_finished(track)
        seconds = chunk.samples.shape[0] / chunk.sample_rate
        if self._in_flight is not None:
            VOICE_DROPPED.inc(seconds)
            return
        task = self._session.wants(track.participant, track.role)
        if task is None:
            self._collector, self._task = None, None
            return
        if task is not self._task:
            self._task = task
            self._collector = VoicedAudio(task.seconds + 1.0)
        assert self._collector is not None
        self._collector.feed(to_mono_16k(chunk.samples, chunk.sample_rate))
        if self._collector.voiced_s < task.seconds:
            return
        speech = self._collector.take()
        encoder = self._session.encoder

        def embed() -> tuple[Vector, float]:
            started = time.thread_time()
            vector = encoder.embed_utterance(speech)
            return vector, time.thread_time() - started

        self._in_flight = detector_pool().submit(embed)
        self._in_flight_info = (task, speech.size / 16_000, chunk.media_time)
        self._collector = None

    def _apply_finished(self, track: TrackInfo) -> None:
        future = self._in_flight
        if future is None or not future.done():
            return
        self._in_flight = None
        assert self._in_flight_info is not None
        task, speech_s, media_time = self._in_flight_info
        embedding, cpu_s = future.result()
        VOICE_SECONDS.observe(cpu_s)
        self.embeddings += 1
        self._session.finish(track.participant, task, np.asarray(embedding, np.float32), speech_s, cpu_s,
                             media_time)

    def close(self) -> None:
        if self._in_flight is not None:
            self._in_flight.cancel()
            self._in_flight = None


class VoiceHookProvider:
    name = "voiceprint"

    def __init__(self, session: VoiceprintSession) -> None:
        self._session = session

    def handles(self, kind: MediaKind) -> bool:
        return kind is MediaKind.AUDIO

    def create(self, track: TrackInfo, emit: EventEmitter) -> Hook:
        return VoiceHook(HookContext(track, self.name, emit), self._session)


def new_enrolment_id() -> str:
    return f"vp-{secrets.token_hex(8)}"
