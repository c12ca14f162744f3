"""The front listener's own metrics; each worker's are merged in by `finrtc.cluster.metrics_merge`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

FRONT_REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=FRONT_REGISTRY)

WORKER_UP = Gauge("finrtc_worker_up", "1 while a media worker process runs.", ["media_worker"],
                  registry=FRONT_REGISTRY)
WORKER_RESTARTS = Counter("finrtc_worker_restarts_total", "Media workers restarted after dying.",
                          ["media_worker"], registry=FRONT_REGISTRY)
WORKER_ROOMS = Gauge("finrtc_worker_rooms", "Open rooms per media worker.", ["media_worker"],
                     registry=FRONT_REGISTRY)
WORKER_PARTICIPANTS = Gauge("finrtc_worker_participants", "Participants per media worker.", ["media_worker"],
                            registry=FRONT_REGISTRY)
ROUTED = Counter(
    "finrtc_front_requests_total", "Requests the front listener handled, by where they went.",
    ["target"], registry=FRONT_REGISTRY,
)
DIRECTORY_ERRORS = Counter(
    "finrtc_directory_errors_total", "Room-directory (Redis) operations that failed.", ["operation"],
    registry=FRONT_REGISTRY,
)
NODES = Gauge("finrtc_cluster_nodes", "Live nodes in the room directory (this one included).",
              registry=FRONT_REGISTRY)
