"""Prometheus metrics of the sealed archive (documented in docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from finrtc.metrics import REGISTRY

SEGMENTS_SEALED = Counter(
    "finrtc_archive_segments_sealed_total", "Archive segments sealed (encrypted, stored, signed).",
    registry=REGISTRY,
)
SEAL_SECONDS = Histogram(
    "finrtc_archive_seal_seconds",
    "Time to seal one segment: mux, hash, encrypt, store with fsync, sign the record.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
PACKETS_DROPPED = Counter(
    "finrtc_archive_packets_dropped_total",
    "Encoded packets the archive queue could not take (each loss is sealed as an alert).",
    ["kind"], registry=REGISTRY,
)
WRITE_FAILURES = Counter(
    "finrtc_archive_write_failures_total",
    "Segments or records the storage backend failed to store (the session is compromised).",
    registry=REGISTRY,
)
RECORDINGS = Gauge(
    "finrtc_archive_recordings", "Sessions currently being recorded.", registry=REGISTRY
)
TIMESTAMPS = Counter(
    "finrtc_archive_timestamps_total",
    "RFC 3161 time-stamp requests by outcome (stamped, stamped_late, failed attempt, dropped, "
    "abandoned at close).",
    ["outcome"], registry=REGISTRY,
)
TIMESTAMP_SECONDS = Histogram(
    "finrtc_archive_timestamp_seconds",
    "Time of one successful time-stamp round trip: request, TSA answer, token check, store.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
TIMESTAMPS_PENDING = Gauge(
    "finrtc_archive_timestamps_pending",
    "Sealed records waiting for their time-stamp token (grows while the TSA is down).",
    registry=REGISTRY,
)
