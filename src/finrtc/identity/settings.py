"""The `identity:` config section and the per-room identity policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from finrtc.config_base import StrictModel as _Strict


class IdentityConfig(_Strict):
    # Loads the face models at start-up (~1 s, ~130 MB on disk) and adds the identity routes.
    enabled: bool = False
    # Samples per second of media time while a liveness challenge runs: a blink lasts
    # 100-300 ms, so 8 fps sees most; each sample costs ~3-8 ms of landmarks on a tracked face.
    challenge_fps: float = Field(default=8.0, gt=0.0, le=30.0)
    # Seconds of media time between face-match samples (each embedding costs ~100 ms of CPU).
    match_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)
    # Once decided, the match is re-checked this often (someone else may sit down); each check
    # takes `match_samples` embeddings again.
    recheck_interval_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    # Embeddings whose median distance decides a face match (outliers from motion blur).
    match_samples: int = Field(default=3, ge=1, le=20)
    # dlib's ResNet: same person within 0.6 (LFW); lower is stricter (fewer false accepts).
    max_distance: float = Field(default=0.6, gt=0.0, le=2.0)
    # Time the customer has for each liveness action.
    action_timeout_s: float = Field(default=8.0, gt=1.0, le=60.0)
    # Upper bound of an uploaded ID portrait.
    max_reference_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)
    # Analysis may use at most this share of the sampling interval, else sampling slows down.
    max_cpu_share: float = Field(default=0.5, gt=0.0, le=1.0)
    # Loads the voice encoder too (17 MB, resemblyzer's weights) and adds the voiceprint route.
    voiceprints: bool = True
    # Voiceprints: seconds of voiced customer speech an enrolment / a verification embeds
    # (each second of speech costs ~15 ms of CPU once, when enough is collected).
    voice_enrol_s: float = Field(default=8.0, ge=2.0, le=120.0)
    voice_verify_s: float = Field(default=5.0, ge=2.0, le=120.0)
    # Cosine similarity from which two voiceprints are the same speaker. flite's four voices:
    # same speaker >= 0.90, different <= 0.75 (docs/identity.md); higher is stricter.
    voice_threshold: float = Field(default=0.82, gt=0.0, lt=1.0)
    # Upper bound of an uploaded enrolment clip (16-bit PCM WAV).
    max_voice_clip_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    # Enrolled voiceprints kept in memory (their sealed copy is in the enrolling call's archive).
    max_voiceprints: int = Field(default=10_000, ge=1, le=1_000_000)


class IdentityPolicy(_Strict):
    # Identity checks the compliance `can_submit` gate waits for in rooms with this policy.
    # `voice_match` verifies the customer's voice against the voiceprint enrolled for their
    # identity on an earlier call (the check starts by itself when one is enrolled).
    require: list[Literal["liveness", "face_match", "voice_match"]] = Field(default_factory=list)
