"""Identity checks of one call session, and the per-track hook that feeds them sampled frames.

Threads: the hook runs on its track's media worker and hands a copy of the sampled picture to
the shared face-analysis thread (the one face presence uses: one analysis in flight per track,
so that queue is bounded by the number of tracks); results are applied on the worker at the
next frame. The room API calls `start_challenge` / `set_reference` on the event loop. A lock
guards the state both sides touch, held only for bookkeeping, never for model work.

Evidence: every decision is a room event (`identity.*`), which the archive seals into the
chain with its media time; each carries the model digests that produced it. The reference
portrait never appears in an event or a log: only the digests of its encrypted archive copy.
"""

from __future__ import annotations

import secrets
import statistics
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter, Histogram

from finrtc import metrics
from finrtc.errors import BadRequestError, ConflictError
from finrtc.hooks.builtin.face_presence import detector_pool
from finrtc.hooks.contract import EventEmitter, FailurePolicy, Hook, HookContext, NoOptions, Stage, VideoFrame
from finrtc.identity.analysis import FaceAnalyzer, Observation, rgb_from_yuv420
from finrtc.identity.liveness import Action, Challenge, random_actions
from finrtc.identity.models import FaceModels, distance
from finrtc.identity.settings import IdentityConfig
from finrtc.identity.voiceprint import VoiceprintSession
from finrtc.model import MediaKind, Role, Severity, TrackInfo

ANALYSIS_SECONDS = Histogram(
    "finrtc_identity_analysis_seconds",
    "CPU time of one identity analysis of a sampled frame (detection, landmarks, embedding).",
    buckets=metrics.FRAME_BUCKETS,
    registry=metrics.REGISTRY,
)
ANALYSIS_SKIPPED = Counter(
    "finrtc_identity_samples_skipped_total",
    "Identity samples not taken because the previous analysis was still running or was slow.",
    registry=metrics.REGISTRY,
)

STAFF = frozenset({Role.AGENT, Role.OBSERVER})
Publish = Callable[[str, dict[str, Any], Severity, "frozenset[Role] | None"], None]
Clock = Callable[[], float]


@dataclass
class Reference:
    embedding: NDArray[np.float64]
    evidence: dict[str, Any]


@dataclass
class MatchState:
    distances: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    pending: list[float] = field(default_factory=list)
    decision: str | None = None
    last: dict[str, Any] | None = None
    last_sample: float | None = None


class IdentitySession:
    """Liveness challenges and face matching of one call session."""

    def __init__(
        self, room: str, config: IdentityConfig, models: FaceModels, publish: Publish, clock: Clock
    ) -> None:
        self.room = room
        self.config = config
        self.models = models
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()
        # The running or last challenge per participant, and every challenge in order.
        self.challenges: dict[str, Challenge] = {}
        self.history: list[Challenge] = []
        self.reference: Reference | None = None
        # What the report and evidence say about the reference (digests, never the picture).
        self.reference_evidence: dict[str, Any] | None = None
        self.matches: dict[str, MatchState] = {}
        self.customers: set[str] = set()
        # Voiceprint enrolment / verification of this call (None: voiceprints are disabled).
        self.voice: VoiceprintSession | None = None
        self.closed = False

    # ---- event loop side ------------------------------------------------------------------

    def start_challenge(self, participant: str, actions: Sequence[str] | None = None) -> dict[str, Any]:
        if actions is None:
            chosen = random_actions()
        else:
            try:
                chosen = [Action(name) for name in actions]
            except ValueError:
                known = ", ".join(a.value for a in Action)
                raise BadRequestError(f"actions must be 2-4 of: {known}") from None
            if not 2 <= len(chosen) <= 4 or len(set(chosen)) != len(chosen):
                raise BadRequestError("actions must be 2-4 distinct actions")
        with self._lock:
            running = self.challenges.get(participant)
            if running is not None and not running.finished:
                raise ConflictError(
                    f"a liveness challenge for {participant!r} is already running ({running.challenge_id})"
                )
            challenge = Challenge(
                secrets.token_hex(6), participant, chosen, self._clock(), self.config.action_timeout_s
            )
            self.challenges[participant] = challenge
            self.history.append(challenge)
            events = [("identity.liveness_started", {
                "challenge": challenge.challenge_id,
                "participant": participant,
                "requested": [a.value for a in chosen],
                "action_timeout_s": self.config.action_timeout_s,
                "media_time": round(challenge.started_at, 3),
            }), *challenge.begin()]
        self._send(events)
        return challenge.to_json()

    def set_reference(self, embedding: NDArray[np.float64], evidence: dict[str, Any]) -> None:
        with self._lock:
            self.reference = Reference(embedding, evidence)
            self.reference_evidence = evidence
            self.matches.clear()
        self._send([("identity.reference_set", {**evidence, "media_time": round(self._clock(), 3)})])

    # ---- worker side ----------------------------------------------------------------------

    def wants(self, participant: str, role: Role, now: float) -> tuple[float | None, bool]:
        """(seconds between samples or None for none, whether an embedding is needed)."""
        with self._lock:
            challenge = self.challenges.get(participant)
            live = challenge is not None and not challenge.finished
            embed = False
            if self.reference is not None and role is Role.CUSTOMER:
                state = self.matches.get(participant)
                last = state.last_sample if state is not None else None
                # Between re-checks of a decided match, only the first sample of a round waits.
                wait = self.config.match_interval_s
                if state is not None and state.decision is not None and not state.pending:
                    wait = self.config.recheck_interval_s
                embed = last is None or now - last >= wait
        if live:
            return 1.0 / self.config.challenge_fps, embed
        if embed:
            return self.config.match_interval_s, True
        return None, False

    def tick(self, participant: str, now: float) -> None:
        with self._lock:
            challenge = self.challenges.get(participant)
            events = challenge.tick(now) if challenge is not None else []
        self._send(events)

    def apply(self, participant: str, role: Role, now: float, observation: Observation) -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            if role is Role.CUSTOMER:
                self.customers.add(participant)
            challenge = self.challenges.get(participant)
            if challenge is not None and not challenge.finished:
                events += challenge.observe(now, observation.measures)
            if observation.embedding is not None and self.reference is not None:
                events += self._match(participant, now, observation.embedding)
            elif self.reference is not None and role is Role.CUSTOMER:
                self.matches.setdefault(participant, MatchState()).last_sample = now
        self._send(events)

    def _match(
        self, participant: str, now: float, embedding: NDArray[np.float64]
    ) -> list[tuple[str, dict[str, Any]]]:
        assert self.reference is not None
        state = self.matches.setdefault(participant, MatchState())
        state.last_sample = now
        gap = distance(embedding, self.reference.embedding)
        state.distances.append(gap)
        state.pending.append(gap)
        if len(state.pending) < self.config.match_samples:
            return []
        median = statistics.median(state.pending)
        state.pending.clear()
        decision = "match" if median <= self.config.max_distance else "no_match"
        result = {
            "participant": participant,
            "decision": decision,
            "distance": round(median, 4),
            "similarity": round(max(0.0, 1.0 - median), 4),
            "threshold_distance": self.config.max_distance,
            "samples": self.config.match_samples,
            "reference": self.reference.evidence.get("reference"),
            "media_time": round(now, 3),
        }
        state.last = result
        if decision == state.decision:
            return []
        state.decision = decision
        return [("identity.face_match", result)]

    def _send(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for event_type, data in events:
            data["models"] = self.models.digests
            staff_only = event_type in ("identity.face_match", "identity.reference_set")
            severity = Severity.WARNING if event_type == "identity.liveness_failed" or data.get(
                "decision") == "no_match" else Severity.INFO
            self._publish(event_type, data, severity, STAFF if staff_only else None)

    # ---- results --------------------------------------------------------------------------

    def liveness_passed(self) -> bool:
        with self._lock:
            # The latest finished challenge decides: a pass followed by a failed retry is a fail.
            finished = [c for c in self.history if c.finished]
            return bool(finished) and finished[-1].outcome == "passed"

    def face_matched(self) -> bool:
        with self._lock:
            return any(state.decision == "match" for state in self.matches.values())

    def voice_matched(self) -> bool:
        return self.voice is not None and self.voice.voice_matched()

    def report(self, required: Sequence[str]) -> dict[str, Any]:
        passed, matched = self.liveness_passed(), self.face_matched()
        voice = self.voice.report() if self.voice is not None else None
        outcome = {"liveness": passed, "face_match": matched, "voice_match": self.voice_matched()}
        models = dict(self.models.digests)
        if self.voice is not None:
            models.update(self.voice.digests)
        with self._lock:
            return {
                "room": self.room,
                "required": list(required),
                "satisfied": all(outcome[name] for name in required),
                "liveness": {
                    "passed": passed,
                    "challenges": [c.to_json() for c in self.history],
                },
                "face_match": {
                    "reference": self.reference_evidence,
                    "matched": matched,
                    "results": {name: state.last for name, state in self.matches.items()},
                },
                "voice_match": voice,
                "models": models,
            }


class IdentityHook(Hook):
    """Samples a track's frames for the session's identity checks (only while one needs them)."""

    name = "identity"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.OBSERVE
    # Evidence about the call, like face presence: a crash is sealed as `hook_failed` and the
    # gate simply stays closed (no liveness/face match result), the recording stays complete.
    failure_policy = FailurePolicy.FAIL_OPEN
    budget_ms = 20.0

    def __init__(self, context: HookContext, session: IdentitySession) -> None:
        super().__init__(NoOptions(), context)
        self._session = session
        self._analyzer = FaceAnalyzer(session.models)
        self._next_sample: float | None = None
        self._cost_s = 0.0
        self._in_flight: Future[Observation] | None = None
        self._in_flight_time = 0.0
        self.samples = 0

    def process_video(self, frame: VideoFrame) -> None:
        track = self.context.track
        now = frame.media_time
        self._apply_finished(track)
        self._session.tick(track.participant, now)
        interval, embed = self._session.wants(track.participant, track.role, now)
        if interval is None or (self._next_sample is not None and now < self._next_sample):
            return
        if self._in_flight is not None:
            ANALYSIS_SKIPPED.inc()
            return
        # The planes belong to the encoder once we return: analyse copies.
        luma = np.array(frame.y, copy=True)
        rgb = rgb_from_yuv420(frame.y, frame.u, frame.v) if embed else None
        self._in_flight = detector_pool().submit(self._analyzer.analyze, luma, rgb)
        self._in_flight_time = now
        # Slow analyses stretch the interval so they use at most `max_cpu_share` of it.
        affordable = self._cost_s / self._session.config.max_cpu_share
        if affordable > interval:
            ANALYSIS_SKIPPED.inc()
        self._next_sample = now + max(interval, affordable)

    def _apply_finished(self, track: TrackInfo) -> None:
        future = self._in_flight
        if future is None or not future.done():
            return
        self._in_flight = None
        observation = future.result()
        ANALYSIS_SECONDS.observe(observation.cpu_s)
        cost = observation.cpu_s
        self._cost_s = cost if self.samples == 0 else 0.8 * self._cost_s + 0.2 * cost
        self.samples += 1
        self._session.apply(track.participant, track.role, self._in_flight_time, observation)

    def close(self) -> None:
        if self._in_flight is not None:
            self._in_flight.cancel()
            self._in_flight = None


class IdentityHookProvider:
    """Gives every video track of a session an identity hook bound to that session."""

    name = "identity"

    def __init__(self, session: IdentitySession) -> None:
        self._session = session

    def handles(self, kind: MediaKind) -> bool:
        return kind is MediaKind.VIDEO

    def create(self, track: TrackInfo, emit: EventEmitter) -> Hook:
        return IdentityHook(HookContext(track, self.name, emit), self._session)




