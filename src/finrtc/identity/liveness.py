"""The active liveness challenge: a random sequence of actions, each detected from landmarks.

A challenge is a pure state machine over (media time, measures-or-no-face) observations; the
hook feeds it from sampled frames and it returns the events to publish. Each action is judged
against the customer's own neutral face, measured while the first prompt is shown, so eyes that
are small or a head that is slightly turned at rest neither pass nor fail an action by themselves.

What fails: an action not seen by its deadline (a still photo never blinks or turns), the
opposite turn of the one asked for (a replayed clip of other actions), and no face at all when
the deadline comes.
"""

from __future__ import annotations

import enum
import secrets
import statistics
from dataclasses import dataclass, field
from typing import Any

from finrtc.identity.measures import FaceMeasures

# Samples of the customer's face at rest measured before the first prompt.
NEUTRAL_SAMPLES = 3


class Action(enum.StrEnum):
    BLINK = "blink"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    OPEN_MOUTH = "open_mouth"
    NOD = "nod"


PROMPTS = {
    Action.BLINK: "Please blink your eyes",
    Action.TURN_LEFT: "Please turn your head to the left",
    Action.TURN_RIGHT: "Please turn your head to the right",
    Action.OPEN_MOUTH: "Please open your mouth",
    Action.NOD: "Please nod your head",
}


@dataclass(frozen=True)
class Thresholds:
    # Eyes count as closed below this share of the neutral eye openness, and open again above
    # `blink_reopen`: a blink is a close followed by a reopen.
    blink_closed: float = 0.65
    blink_reopen: float = 0.85
    # Nose offset (half jaw widths) away from the neutral yaw for a turn.
    turn_yaw: float = 0.22
    # Inner-lip opening above the neutral opening.
    mouth_open: float = 0.25
    # Change of the nose's height between eyes and chin for a nod (down then back).
    nod_pitch: float = 0.08


def random_actions(count: int | None = None) -> list[Action]:
    """2-4 distinct actions in random order, from the OS's CSPRNG (a replay cannot guess them)."""
    rng = secrets.SystemRandom()
    size = count if count is not None else rng.randint(2, 4)
    return rng.sample(list(Action), size)


@dataclass
class StepResult:
    action: Action
    prompted_at: float
    deadline: float
    detected_at: float | None = None
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "prompted_media_time": round(self.prompted_at, 3),
            "deadline_media_time": round(self.deadline, 3),
            "detected_media_time": None if self.detected_at is None else round(self.detected_at, 3),
            "elapsed_s": None if self.detected_at is None else round(self.detected_at - self.prompted_at, 3),
            "score": None if self.score is None else round(self.score, 3),
        }


Emitted = list[tuple[str, dict[str, Any]]]


@dataclass
class Challenge:
    challenge_id: str
    participant: str
    actions: list[Action]
    started_at: float
    action_timeout_s: float
    thresholds: Thresholds = field(default_factory=Thresholds)
    steps: list[StepResult] = field(default_factory=list)
    outcome: str | None = None  # "passed" | "failed"
    failure: str | None = None
    _neutral: list[FaceMeasures] = field(default_factory=list)
    _closed_seen: bool = False
    _nod_seen: bool = False
    _deepest: float = 1.0
    _faces_seen: int = 0
    _last_face_at: float | None = None

    def begin(self) -> Emitted:
        """Nothing to show yet: the first prompt follows the neutral-face samples (so a customer
        who moves at once is not measured against a turned head), or fails at the deadline."""
        return []

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def current(self) -> StepResult | None:
        return None if self.finished or not self.steps else self.steps[-1]

    def _calibrate(self, now: float, measures: FaceMeasures | None) -> Emitted:
        if measures is not None:
            self._faces_seen += 1
            self._last_face_at = now
            self._neutral.append(measures)
            if len(self._neutral) >= NEUTRAL_SAMPLES:
                return self._prompt(now)
        if now - self.started_at >= self.action_timeout_s:
            self.outcome = "failed"
            self.failure = "no_face" if measures is None else "timeout"
            data = self._summary(now)
            data.update({"reason": self.failure, "failed_action": self.actions[0].value})
            return [("identity.liveness_failed", data)]
        return []

    def _prompt(self, now: float) -> Emitted:
        index = len(self.steps)
        action = self.actions[index]
        step = StepResult(action, now, now + self.action_timeout_s)
        self.steps.append(step)
        self._closed_seen = False
        self._nod_seen = False
        self._deepest = 1.0
        return [
            (
                "identity.liveness_prompt",
                {
                    "challenge": self.challenge_id,
                    "participant": self.participant,
                    "step": index + 1,
                    "of": len(self.actions),
                    "action": action.value,
                    "text": PROMPTS[action],
                    "deadline_media_time": round(step.deadline, 3),
                    "media_time": round(now, 3),
                },
            )
        ]

    def _neutral_value(self, name: str) -> float:
        return float(statistics.median(float(getattr(m, name)) for m in self._neutral))

    def observe(self, now: float, measures: FaceMeasures | None) -> Emitted:
        """One sampled frame: the face's measures, or None when no face was found."""
        if self.finished:
            return []
        step = self.current
        if step is None:
            return self._calibrate(now, measures)
        if measures is not None:
            self._faces_seen += 1
            self._last_face_at = now
            detected = self._detect(step.action, measures)
            if detected is not None:
                return self._advance(now, step, detected)
            if self._wrong_turn(step.action, measures):
                return self._fail(now, "wrong_action", step, {"observed": measures.to_json()})
        return self._check_deadline(now, step)

    def tick(self, now: float) -> Emitted:
        if self.finished:
            return []
        step = self.current
        if step is None:
            return self._calibrate(now, None) if now - self.started_at >= self.action_timeout_s else []
        return self._check_deadline(now, step)

    def _check_deadline(self, now: float, step: StepResult) -> Emitted:
        if now < step.deadline:
            return []
        face_recent = self._last_face_at is not None and now - self._last_face_at < self.action_timeout_s
        return self._fail(now, "timeout" if face_recent else "no_face", step, {})

    def _detect(self, action: Action, m: FaceMeasures) -> float | None:
        """The action's score when it was just completed, else None."""
        t = self.thresholds
        if action is Action.BLINK:
            neutral = self._neutral_value("eye_openness")
            ratio = m.eye_openness / neutral if neutral > 0 else 1.0
            self._deepest = min(self._deepest, ratio)
            if ratio < t.blink_closed:
                self._closed_seen = True
                return None
            if self._closed_seen and ratio > t.blink_reopen:
                # Score: how far the eyes closed (1 = fully), relative to the neutral opening.
                return 1.0 - self._deepest
            return None
        if action in (Action.TURN_LEFT, Action.TURN_RIGHT):
            offset = m.yaw - self._neutral_value("yaw")
            signed = offset if action is Action.TURN_LEFT else -offset
            return signed if signed >= t.turn_yaw else None
        if action is Action.OPEN_MOUTH:
            opening = m.mouth_openness - self._neutral_value("mouth_openness")
            return opening if opening >= t.mouth_open else None
        change = abs(m.pitch - self._neutral_value("pitch"))
        if change >= t.nod_pitch:
            self._nod_seen = True
            return None
        return 1.0 if self._nod_seen and change < t.nod_pitch / 2 else None

    def _wrong_turn(self, action: Action, m: FaceMeasures) -> bool:
        if action not in (Action.TURN_LEFT, Action.TURN_RIGHT):
            return False
        offset = m.yaw - self._neutral_value("yaw")
        opposite = -offset if action is Action.TURN_LEFT else offset
        return opposite >= self.thresholds.turn_yaw

    def _advance(self, now: float, step: StepResult, score: float) -> Emitted:
        step.detected_at = now
        step.score = score
        events: Emitted = [
            (
                "identity.liveness_action",
                {
                    "challenge": self.challenge_id,
                    "participant": self.participant,
                    "step": len(self.steps),
                    "of": len(self.actions),
                    **step.to_json(),
                    "media_time": round(now, 3),
                },
            )
        ]
        if len(self.steps) == len(self.actions):
            self.outcome = "passed"
            events.append(("identity.liveness_passed", self._summary(now)))
        else:
            events += self._prompt(now)
        return events

    def _fail(self, now: float, reason: str, step: StepResult, extra: dict[str, Any]) -> Emitted:
        self.outcome = "failed"
        self.failure = reason
        data = self._summary(now)
        data.update({"reason": reason, "failed_action": step.action.value, **extra})
        return [("identity.liveness_failed", data)]

    def _summary(self, now: float) -> dict[str, Any]:
        return {
            "challenge": self.challenge_id,
            "participant": self.participant,
            "actions": [step.to_json() for step in self.steps],
            "requested": [action.value for action in self.actions],
            "faces_seen": self._faces_seen,
            "started_media_time": round(self.started_at, 3),
            "media_time": round(now, 3),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "challenge": self.challenge_id,
            "participant": self.participant,
            "requested": [action.value for action in self.actions],
            "state": self.outcome or "running",
            "reason": self.failure,
            "steps": [step.to_json() for step in self.steps],
        }
