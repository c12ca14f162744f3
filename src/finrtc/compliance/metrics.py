"""Metrics of script compliance (registered on finrtc.metrics.REGISTRY).

Labels stay bounded: a drop reason, a stage outcome. No room, script or stage labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from finrtc.metrics import REGISTRY

SESSIONS = Gauge(
    "finrtc_compliance_sessions", "Compliance sessions currently tracking a script.",
    registry=REGISTRY,
)
DROPS = Counter(
    "finrtc_compliance_audio_blocks_dropped_total",
    "Audio blocks not recognized because the recognizer was behind or its worker was down.",
    ["reason"], registry=REGISTRY,
)
AUDIO_DROPPED_SECONDS = Counter(
    "finrtc_compliance_audio_dropped_seconds_total",
    "Seconds of speech audio dropped before recognition (compliance cannot vouch for them).",
    registry=REGISTRY,
)
AUDIO_SECONDS = Counter(
    "finrtc_compliance_audio_recognized_seconds_total",
    "Seconds of audio the recognizer workers processed.", registry=REGISTRY,
)
CPU_SECONDS = Counter(
    "finrtc_compliance_recognizer_cpu_seconds_total",
    "CPU seconds the recognizer workers spent (divide by audio seconds for the real-time "
    "factor).", registry=REGISTRY,
)
UTTERANCES = Counter(
    "finrtc_compliance_utterances_total",
    "Speech segments seen by the recognizers; decoded=false were only keyphrase-spotted "
    "(transcribe: on_demand found no reason to decode them).",
    ["decoded"], registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "finrtc_compliance_worker_restarts_total",
    "Recognizer worker processes that died and were restarted.", registry=REGISTRY,
)
STAGES = Counter(
    "finrtc_compliance_stages_total",
    "Script stage outcomes (completed, missed, rejected_negation, ignored_before_consent).",
    ["outcome"], registry=REGISTRY,
)
TAP_FAILURES = Counter(
    "finrtc_compliance_tap_failures_total",
    "Audio chunks the compliance tap could not convert for recognition.", registry=REGISTRY,
)
