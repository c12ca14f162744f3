"""Pure parts of the cluster layer: routing by path, merged /metrics, the cluster config section,
how many workers `finrtc serve` starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from finrtc.cluster.front import room_in_path
from finrtc.cluster.metrics_merge import WORKER_LABEL, merge
from finrtc.config import load_config, parse_config
from finrtc.errors import ConfigError
from finrtc.server_cli import worker_count


@pytest.mark.parametrize(("path", "room"), [
    ("/whip/sale-1", "sale-1"),
    ("/whep/sale-1/abc", "sale-1"),
    ("/v1/rooms/sale-1", "sale-1"),
    ("/v1/rooms/sale-1/events", "sale-1"),
    ("/v1/rooms/sale-1/participants/ann", "sale-1"),
    ("/v1/rooms", None),
    ("/v1/rooms/", None),
    ("/whip/", None),
    ("/openapi.json", None),
    ("/v1/token", None),
])
def test_room_in_path(path: str, room: str | None) -> None:
    assert room_in_path(path) == room


def exposition(rooms: float, requests: float, latency: float) -> str:
    registry = CollectorRegistry()
    Gauge("finrtc_rooms", "Open rooms.", registry=registry).set(rooms)
    requests_total = Counter("finrtc_http_requests", "Requests.", ["route"], registry=registry)
    requests_total.labels(route="/whip").inc(requests)
    Histogram("finrtc_hook_seconds", "Hook time.", ["hook"], buckets=(0.01, 0.1),
              registry=registry).labels(hook="wm").observe(latency)
    return generate_latest(registry).decode()


def test_merge_labels_every_worker_and_keeps_one_family_per_name() -> None:
    front = CollectorRegistry()
    up = Gauge("finrtc_worker_up", "Worker up.", [WORKER_LABEL], registry=front)
    up.labels(**{WORKER_LABEL: "0"}).set(1)
    text = merge({"0": exposition(2, 5, 0.005), "1": exposition(3, 7, 0.05)}, front).decode()
    families = list(text_string_to_metric_families(text))
    names = [family.name for family in families]
    assert len(names) == len(set(names))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    assert samples[("finrtc_rooms", ((WORKER_LABEL, "0"),))] == 2
    assert samples[("finrtc_rooms", ((WORKER_LABEL, "1"),))] == 3
    assert samples[("finrtc_http_requests_total", ((WORKER_LABEL, "1"), ("route", "/whip")))] == 7
    # Histograms stay histograms: buckets per worker, summable in PromQL.
    assert samples[("finrtc_hook_seconds_bucket", (("hook", "wm"), ("le", "0.01"), (WORKER_LABEL, "0")))] == 1
    assert samples[("finrtc_hook_seconds_bucket", (("hook", "wm"), ("le", "0.01"), (WORKER_LABEL, "1")))] == 0
    # The front's own samples that already name a worker keep that name.
    assert samples[("finrtc_worker_up", ((WORKER_LABEL, "0"),))] == 1
    assert "# TYPE finrtc_hook_seconds histogram" in text


def test_merge_without_workers_is_the_front_alone() -> None:
    front = CollectorRegistry()
    Gauge("finrtc_cluster_nodes", "Nodes.", registry=front).set(2)
    text = merge({}, front).decode()
    assert 'finrtc_cluster_nodes{media_worker="front"} 2.0' in text


def cluster_config(**cluster: object) -> dict[str, object]:
    return {"cluster": {"redis_url": "redis://127.0.0.1:6379/0", **cluster}}


@pytest.mark.parametrize(("cluster", "message"), [
    ({"redis_url": "http://127.0.0.1:6379"}, "must start with redis://"),
    ({"node_id": "a b"}, "node_id 'a b'"),
    ({"heartbeat_interval_s": 5, "node_expiry_s": 6}, "at least twice heartbeat_interval_s"),
    ({"internal_url": "10.0.0.2:8080"}, "internal_url"),
    ({"heartbeat": 1}, "cluster.heartbeat: unknown key"),
])
def test_cluster_section_errors_are_clear(cluster: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(cluster_config(**cluster), "finrtc.yaml")
    assert message in str(caught.value)


def test_cluster_defaults() -> None:
    config = parse_config(cluster_config(internal_url="http://10.0.0.2:8080/"), "finrtc.yaml")
    assert config.cluster.internal_url == "http://10.0.0.2:8080"
    assert config.cluster.node_expiry_s >= 2 * config.cluster.heartbeat_interval_s
    assert parse_config({}, "finrtc.yaml").cluster.redis_url is None


def test_worker_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINRTC_API_SECRET", "w" * 40)
    production = tmp_path / "prod.yaml"
    production.write_text("data_dir: %s\n" % (tmp_path / "data"))
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text("data_dir: %s\nserver:\n  workers: 3\n" % (tmp_path / "data"))
    cores = len(os.sched_getaffinity(0))
    assert worker_count(None, load_config(production)) == cores
    assert worker_count(None, load_config(pinned)) == 3
    assert worker_count(2, load_config(pinned)) == 2
    # Dev mode (no config file) stays one process, as before workers existed.
    assert worker_count(None, load_config(None, data_dir=str(tmp_path / "dev"))) == 1


def test_workers_without_redis_do_not_need_the_redis_package() -> None:
    """`redis` is the optional `cluster` extra: a one-node, many-worker server must not import it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['redis'] = None; "
            "import finrtc.cluster.node, finrtc.cluster.front, finrtc.server_cli; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
