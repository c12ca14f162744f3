"""Prometheus metrics. Each subsystem declares its own metrics on `REGISTRY` in its own module;
`docs/metrics.md` is the catalogue and a test keeps the two in sync.

Labels stay bounded: media kind, hook name (from config), stage, reason. No room or participant
labels: a server hosts unbounded rooms over its life.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Buckets for per-frame work: 50 µs .. 1 s.
FRAME_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

ROOMS = Gauge("finrtc_rooms", "Rooms currently open.", registry=REGISTRY)
PARTICIPANTS = Gauge("finrtc_participants", "Connected participants by role.", ["role"], registry=REGISTRY)
PUBLISHED_TRACKS = Gauge(
    "finrtc_published_tracks", "Published tracks being processed.", ["kind"], registry=REGISTRY
)
SUBSCRIBED_TRACKS = Gauge(
    "finrtc_subscribed_tracks", "Forwarded (subscriber) tracks.", ["kind"], registry=REGISTRY
)
FRAMES_IN = Counter(
    "finrtc_frames_received_total",
    "Decoded frames / audio chunks entering track pipelines.",
    ["kind"],
    registry=REGISTRY,
)
FRAMES_DROPPED = Counter(
    "finrtc_frames_dropped_total",
    "Frames dropped before the hook chain because the server was behind: encoded frames waiting"
    " for the decoder (video skips to a keyframe) and decoded frames waiting for the pipeline.",
    ["kind"],
    registry=REGISTRY,
)
PACKETS_OUT = Counter(
    "finrtc_packets_encoded_total",
    "Encoded packets produced by the shared encoders.",
    ["kind"],
    registry=REGISTRY,
)
ENCODE_SECONDS = Histogram(
    "finrtc_encode_seconds",
    "Time to encode one frame / audio chunk on the shared encoder.",
    ["kind"],
    buckets=FRAME_BUCKETS,
    registry=REGISTRY,
)
ENCODERS = Gauge(
    "finrtc_encoders",
    "Live shared encoders (at most one per output codec of a published track, never per viewer).",
    ["kind", "codec"],
    registry=REGISTRY,
)
HOOK_SECONDS = Histogram(
    "finrtc_hook_seconds",
    "Time one hook spent on one frame, chunk or packet.",
    ["hook", "stage"],
    buckets=FRAME_BUCKETS,
    registry=REGISTRY,
)
HOOK_FAILURES = Counter(
    "finrtc_hook_failures_total", "Hook calls that raised.", ["hook", "policy"], registry=REGISTRY
)
HOOK_BUDGET_OVERRUNS = Counter(
    "finrtc_hook_budget_overruns_total",
    "Hook calls that exceeded their declared time budget.",
    ["hook"],
    registry=REGISTRY,
)
SUBSCRIBER_DROPS = Counter(
    "finrtc_subscriber_packets_dropped_total",
    "Encoded packets not delivered to a subscriber that fell behind (it skips to a keyframe).",
    ["kind"],
    registry=REGISTRY,
)
KEYFRAME_REQUESTS = Counter(
    "finrtc_keyframe_requests_total",
    "Keyframe requests by source and outcome.",
    ["source", "outcome"],
    registry=REGISTRY,
)
UPSTREAM_PLI = Counter(
    "finrtc_upstream_pli_total", "Picture loss indications sent to publishers.", registry=REGISTRY
)
SINK_DROPS = Counter(
    "finrtc_sink_items_dropped_total",
    "Items an async sink dropped because its queue was full.",
    ["sink"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "finrtc_http_requests_total",
    "HTTP requests by route and status class.",
    ["route", "status"],
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "finrtc_event_loop_lag_seconds",
    "How late the event loop ran a 100 ms timer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
