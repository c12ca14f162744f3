"""Stage tracking: a pure state machine over recognized utterances, consent and the clock.

It does no I/O and owns no clock: callers pass `now` (seconds since the session started) and
publish the events it returns. That keeps ordering, deadline and consent rules testable on
text alone.

Rules:
- Stages count only when spoken by a participant of the stage's role.
- A completed stage stays completed. A stage completed while an earlier mandatory stage is still
  open makes that earlier stage `missed` (reason out_of_order); it can still be said later and
  then completes with `late: true`.
- A confirmation (or consent) stage only counts once every earlier mandatory stage completed:
  a customer cannot confirm what was not said.
- A deadline passes -> the stage is `missed` (reason deadline); it can still complete late.
- With `require_consent`, stages gated by consent are ignored until consent is given (UI action
  or the script's consent stage).
- `can_submit` is true only when every mandatory stage completed (and consent, if required).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from finrtc.compliance.matcher import Match, PhraseMatcher
from finrtc.compliance.recognizer import KeywordHit, RecognitionResult
from finrtc.compliance.script import Script, StageSpec
from finrtc.compliance.wording import wording_for
from finrtc.model import Role, Severity

AGENT_AUDIENCE = frozenset({Role.AGENT, Role.OBSERVER})
# The same prompt is repeated at most this often.
PROMPT_REPEAT_S = 20.0

Status = Literal["pending", "active", "completed", "missed"]


@dataclass(frozen=True, slots=True)
class Emitted:
    type: str
    data: dict[str, Any]
    severity: Severity = Severity.INFO
    audience: frozenset[Role] | None = None


@dataclass(frozen=True, slots=True)
class Speaker:
    participant: str
    role: Role
    track_id: str


@dataclass
class StageState:
    spec: StageSpec
    status: Status = "pending"
    started_at_s: float | None = None
    completed_at_s: float | None = None
    media_time: float | None = None
    matched_text: str | None = None
    phrase: str | None = None
    transcript: str | None = None
    confidence: float | None = None
    confidence_source: str | None = None
    speaker: Speaker | None = None
    engine: str | None = None
    model_digest: str | None = None
    late: bool = False
    missed_reason: str | None = None
    missed_at_s: float | None = None
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "id": spec.id,
            "title": spec.title,
            "role": spec.role,
            "kind": spec.kind,
            "mandatory": spec.mandatory,
            "deadline_s": spec.deadline_s,
            "status": self.status,
            "started_at_s": _round(self.started_at_s),
            "completed_at_s": _round(self.completed_at_s),
            "media_time": _round(self.media_time),
            "matched_text": self.matched_text,
            "phrase": self.phrase,
            "transcript": self.transcript,
            "confidence": _round(self.confidence),
            "confidence_source": self.confidence_source,
            "participant": self.speaker.participant if self.speaker else None,
            "track_id": self.speaker.track_id if self.speaker else None,
            "engine": self.engine,
            "model_digest": self.model_digest,
            "late": self.late,
            "missed_reason": self.missed_reason,
            "missed_at_s": _round(self.missed_at_s),
            "rejections": list(self.rejections[-10:]),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True, slots=True)
class Candidate:
    stage: StageState
    match: Match | None
    hit: KeywordHit | None
    negation_cue: str | None


class StageTracker:
    def __init__(
        self, script: Script, matcher: PhraseMatcher | None = None, *, require_consent: bool = False
    ) -> None:
        self.script = script
        self.wording = wording_for(script.language)
        self.matcher = matcher or PhraseMatcher(script.tolerance)
        self.require_consent = require_consent
        self.stages = [StageState(spec) for spec in script.stages]
        self.consent_given = False
        self.consent_log: list[dict[str, Any]] = []
        self.started = False
        self.finished = False
        self._last_prompt: tuple[str, str] | None = None
        self._last_prompt_at = -1e9
        self._active: str | None = None

    # --- queries -------------------------------------------------------------------------------

    @property
    def can_submit(self) -> bool:
        stages_done = all(
            state.status == "completed" for state in self.stages if state.spec.mandatory
        )
        return stages_done and (self.consent_given or not self.require_consent)

    def next_required(self) -> StageState | None:
        if self.require_consent and not self.consent_given:
            consent = next((s for s in self.stages if s.spec.kind == "consent"), None)
            if consent is not None and consent.status != "completed":
                return consent
        return next(
            (s for s in self.stages if s.spec.mandatory and s.status != "completed"), None
        )

    def awaited_role(self) -> str | None:
        """The role that owes the next required stage (its speech is worth transcribing)."""
        if not self.started or self.finished:
            return None
        upcoming = self.next_required()
        return upcoming.spec.role if upcoming is not None else None

    def stage_states(self) -> list[dict[str, Any]]:
        return [state.to_json() for state in self.stages]

    # --- inputs --------------------------------------------------------------------------------

    def start(self, now: float) -> list[Emitted]:
        self.started = True
        events: list[Emitted] = []
        self._advance(now, events)
        return events

    def tick(self, now: float) -> list[Emitted]:
        events: list[Emitted] = []
        if self.finished:
            return events
        for state in self.stages:
            deadline = state.spec.deadline_s
            if state.status in ("pending", "active") and deadline is not None and now > deadline:
                self._miss(state, "deadline", now, events)
        self._advance(now, events)
        return events

    def record_consent(
        self, granted: bool, participant: str, source: str, now: float
    ) -> list[Emitted]:
        events: list[Emitted] = []
        self._set_consent(granted, participant, source, now, events)
        self._advance(now, events)
        return events

    def finish(self, now: float) -> list[Emitted]:
        events: list[Emitted] = []
        if self.finished:
            return events
        for state in self.stages:
            if state.spec.mandatory and state.status in ("pending", "active"):
                self._miss(state, "call_ended", now, events, prompt=False)
        self.finished = True
        return events

    def observe(self, speaker: Speaker, result: RecognitionResult, now: float) -> list[Emitted]:
        events: list[Emitted] = []
        if self.finished:
            return events
        for candidate in self.candidates(speaker, result):
            state = candidate.stage
            spec = state.spec
            if candidate.negation_cue is not None:
                self._reject(state, "negation", result, now, events, cue=candidate.negation_cue)
                continue
            if self.require_consent and not self.consent_given and spec.gated_by_consent:
                self._reject(state, "consent_pending", result, now, events)
                self._prompt(
                    "consent",
                    self.wording.consent_before_continuing,
                    now, events, severity=Severity.WARNING, force=True,
                )
                continue
            if spec.kind != "statement":
                open_before = [
                    earlier for earlier in self.stages[: self.stages.index(state)]
                    if earlier.spec.mandatory and earlier.status != "completed"
                ]
                if open_before:
                    self._reject(state, "earlier_stages_open", result, now, events)
                    # The call moved on to the confirmation: whatever is still open was skipped.
                    newly_missed = False
                    for earlier in open_before:
                        if earlier.status in ("pending", "active"):
                            self._miss(earlier, "out_of_order", now, events)
                            newly_missed = True
                    if not newly_missed:
                        first = open_before[0]
                        self._prompt(
                            first.spec.id,
                            self.wording.confirmation_before_covered.format(
                                prompt=self._prompt_text(first.spec)
                            ),
                            now, events, severity=Severity.WARNING, force=True,
                        )
                    continue
            self._complete(state, speaker, result, candidate, now, events)
            if spec.kind == "consent":
                self._set_consent(True, speaker.participant, "spoken", now, events)
            # Anything mandatory before it that is still open was skipped.
            for earlier in self.stages[: self.stages.index(state)]:
                if earlier.spec.mandatory and earlier.status in ("pending", "active"):
                    self._miss(earlier, "out_of_order", now, events)
        self._advance(now, events)
        return events

    # --- internals -----------------------------------------------------------------------------

    def candidates(self, speaker: Speaker, result: RecognitionResult) -> Iterable[Candidate]:
        """Open stages of the speaker's role that `result` matches (negation_cue set when the
        utterance negates it). Pure: used by `observe` and by the accuracy benchmark."""
        for state in self.stages:
            spec = state.spec
            if state.status == "completed" or spec.role != speaker.role.value:
                continue
            hits = [hit for hit in result.keywords if hit.phrase in spec.phrases]
            hit = max(hits, key=lambda item: item.confidence) if hits else None
            match = None
            if result.text:
                match = self.matcher.match(
                    result.text, spec.phrases,
                    negation_sensitive=spec.negation_sensitive, tolerance=spec.tolerance,
                )
            if hit is None and match is None:
                continue
            cue = None
            if spec.negation_sensitive and result.text:
                # Spotting only sees the phrase; the transcript shows what surrounded it.
                phrase = hit.phrase if hit is not None else match.phrase if match else ""
                cue = match.negation_cue if match is not None and match.negated else (
                    self.matcher.negation_in(result.text, phrase)
                )
            yield Candidate(state, match, hit, cue)

    def _complete(
        self,
        state: StageState,
        speaker: Speaker,
        result: RecognitionResult,
        candidate: Candidate,
        now: float,
        events: list[Emitted],
    ) -> None:
        hit, match = candidate.hit, candidate.match
        state.late = state.status == "missed"
        state.status = "completed"
        state.completed_at_s = now
        state.speaker = speaker
        state.transcript = result.text
        state.engine = result.engine
        state.model_digest = result.model_digest
        if hit is not None:
            state.phrase = hit.phrase
            state.matched_text = match.matched_text if match is not None else hit.phrase
            state.media_time = hit.media_time
            state.confidence = hit.confidence
            state.confidence_source = "keyword"
        elif match is not None:
            state.phrase = match.phrase
            state.matched_text = match.matched_text
            state.media_time = result.start
            state.confidence = match.score
            state.confidence_source = "transcript"
        if self._active == state.spec.id:
            self._active = None
        events.append(
            Emitted("compliance.stage_completed", {"stage": state.to_json()})
        )

    def _reject(
        self,
        state: StageState,
        reason: str,
        result: RecognitionResult,
        now: float,
        events: list[Emitted],
        *,
        cue: str | None = None,
    ) -> None:
        rejection = {
            "reason": reason,
            "at_s": round(now, 3),
            "media_time": round(result.start, 3),
            "transcript": result.text,
            "negation_cue": cue,
        }
        state.rejections.append(rejection)
        events.append(
            Emitted(
                "compliance.stage_rejected",
                {"stage_id": state.spec.id, "title": state.spec.title, **rejection},
                Severity.WARNING,
                AGENT_AUDIENCE,
            )
        )
        if reason == "negation":
            self._prompt(
                state.spec.id,
                self.wording.customer_did_not_confirm.format(
                    heard=result.text, prompt=self._prompt_text(state.spec)
                ),
                now, events, severity=Severity.WARNING, force=True,
            )

    def _miss(
        self,
        state: StageState,
        reason: str,
        now: float,
        events: list[Emitted],
        *,
        prompt: bool = True,
    ) -> None:
        state.status = "missed"
        state.missed_reason = reason
        state.missed_at_s = now
        if self._active == state.spec.id:
            self._active = None
        events.append(
            Emitted(
                "compliance.stage_missed",
                {"stage": state.to_json(), "reason": reason},
                Severity.WARNING if state.spec.mandatory else Severity.INFO,
            )
        )
        if prompt and state.spec.mandatory:
            why = {
                "deadline": self.wording.deadline_passed, "out_of_order": self.wording.skipped,
            }.get(reason, reason)
            separator = "：" if self.script.language == "zh" else ": "
            self._prompt(
                state.spec.id, f"{why}{separator}{self._prompt_text(state.spec)}", now, events,
                severity=Severity.WARNING, force=True,
            )

    def _set_consent(
        self, granted: bool, participant: str, source: str, now: float, events: list[Emitted]
    ) -> None:
        entry = {
            "granted": granted, "participant": participant, "source": source,
            "at_s": round(now, 3), "wall_clock": time.time(),
        }
        self.consent_log.append(entry)
        self.consent_given = granted
        events.append(
            Emitted(
                "compliance.consent", dict(entry),
                Severity.INFO if granted else Severity.WARNING,
            )
        )

    def _advance(self, now: float, events: list[Emitted]) -> None:
        """Announce the next required item (stage_started + prompt) when it changes."""
        if not self.started or self.finished:
            return
        upcoming = self.next_required()
        if upcoming is None:
            if self._last_prompt != ("done", "done"):
                self._last_prompt = ("done", "done")
                events.append(
                    Emitted(
                        "compliance.prompt",
                        {"stage_id": None, "text": self.wording.all_covered,
                         "can_submit": self.can_submit},
                        Severity.INFO, AGENT_AUDIENCE,
                    )
                )
            return
        if self.require_consent and not self.consent_given and upcoming.spec.kind != "consent":
            self._prompt(
                "consent",
                self.wording.ask_consent_button,
                now, events,
            )
            return
        if self._active != upcoming.spec.id:
            self._active = upcoming.spec.id
            if upcoming.status == "pending":
                upcoming.status = "active"
            if upcoming.started_at_s is None:
                upcoming.started_at_s = now
            events.append(
                Emitted(
                    "compliance.stage_started",
                    {"stage_id": upcoming.spec.id, "title": upcoming.spec.title,
                     "role": upcoming.spec.role, "at_s": round(now, 3)},
                )
            )
            self._prompt(upcoming.spec.id, self._prompt_text(upcoming.spec), now, events)

    def _prompt_text(self, spec: StageSpec) -> str:
        return spec.prompt_in(self.wording)

    def _prompt(
        self,
        key: str,
        text: str,
        now: float,
        events: list[Emitted],
        *,
        severity: Severity = Severity.INFO,
        force: bool = False,
    ) -> None:
        signature = (key, text)
        if not force and signature == self._last_prompt and now - self._last_prompt_at < (
            PROMPT_REPEAT_S
        ):
            return
        self._last_prompt = signature
        self._last_prompt_at = now
        events.append(
            Emitted(
                "compliance.prompt",
                {"stage_id": None if key == "consent" else key, "text": text,
                 "urgent": severity is not Severity.INFO, "at_s": round(now, 3),
                 "can_submit": self.can_submit},
                severity,
                AGENT_AUDIENCE,
            )
        )
