"""docs/metrics.md matches the registry exactly; the Grafana dashboard uses only metrics and
labels that /metrics exposes; metric names and labels follow the conventions."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

import finrtc
from finrtc.metrics import REGISTRY
from tests.support.live_server import free_port, live_server

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "configs" / "grafana" / "finrtc.json"
IGNORED_PREFIXES = ("process_", "python_")
# Labels Prometheus adds when it scrapes.
TARGET_LABELS = frozenset({"instance", "job"})
# Labels that would make cardinality grow with traffic.
UNBOUNDED_LABELS = frozenset(
    {"room", "participant", "identity", "session", "track", "track_id", "url", "path", "user"}
)
PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
     "unless", "offset", "le"}
)


@dataclass(frozen=True)
class MetricInfo:
    name: str  # as exposed: counters with _total
    type: str
    labels: frozenset[str]


def import_everything() -> None:
    for module in pkgutil.walk_packages(finrtc.__path__, "finrtc."):
        if module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)


@pytest.fixture(scope="module")
def registered() -> dict[str, MetricInfo]:
    import_everything()
    from finrtc.cluster.cluster_metrics import FRONT_REGISTRY

    found: dict[str, MetricInfo] = {}
    # The front listener of a multi-worker node has its own registry (merged into its /metrics).
    collectors = list(REGISTRY._collector_to_names) + list(FRONT_REGISTRY._collector_to_names)
    for collector in collectors:
        metric_type = getattr(collector, "_type", None)
        if metric_type is None:
            # Process/platform collectors, or a custom collector: take what it describes.
            for family in collector.collect():
                if not family.name.startswith(IGNORED_PREFIXES):
                    name = family.name + ("_total" if family.type == "counter" else "")
                    labels = {k for s in family.samples for k in s.labels}
                    found[name] = MetricInfo(name, family.type, frozenset(labels))
            continue
        base: str = collector._name
        name = base + "_total" if metric_type == "counter" else base
        found[name] = MetricInfo(name, metric_type, frozenset(collector._labelnames))
    return found


def documented() -> dict[str, MetricInfo]:
    rows: dict[str, MetricInfo] = {}
    row = re.compile(r"^\|\s*`(\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|")
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        match = row.match(line)
        if not match or not match.group(1).startswith("finrtc_"):
            continue
        name = match.group(1)
        assert name not in rows, f"{name} is documented twice"
        labels = frozenset(re.findall(r"`(\w+)`", match.group(3)))
        rows[name] = MetricInfo(name, match.group(2), labels)
    return rows


def test_every_registered_metric_is_documented_and_vice_versa(
    registered: dict[str, MetricInfo],
) -> None:
    docs = documented()
    undocumented = sorted(set(registered) - set(docs))
    stale = sorted(set(docs) - set(registered))
    assert not undocumented, f"add rows to docs/metrics.md for: {', '.join(undocumented)}"
    assert not stale, f"docs/metrics.md lists metrics that do not exist: {', '.join(stale)}"
    for name, info in registered.items():
        assert docs[name] == info, f"docs/metrics.md disagrees about {name}: {docs[name]} vs {info}"


def test_names_and_labels_follow_conventions(registered: dict[str, MetricInfo]) -> None:
    for name, info in registered.items():
        assert re.fullmatch(r"finrtc_[a-z0-9_]+", name), name
        if info.type == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), f"{name}: only counters end in _total"
        if info.type == "histogram":
            assert name.endswith(("_seconds", "_bytes")), f"{name}: histograms need a base unit"
        assert not re.search(r"_(ms|milliseconds|kb|mb)(_|$)", name), f"{name}: use base units"
        unbounded = info.labels & UNBOUNDED_LABELS
        assert not unbounded, f"{name} has unbounded labels {sorted(unbounded)}"


def exposed_series(text: str | None = None) -> dict[str, tuple[str, str]]:
    """Series names in a /metrics text (default: the registry's) -> (family as typed, type)."""
    series: dict[str, tuple[str, str]] = {}
    if text is None:
        text = generate_latest(REGISTRY).decode()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        family, metric_type = match.groups()
        if metric_type == "counter":
            base = family.removesuffix("_total")
            names = [family, base + "_created"]
        elif metric_type == "histogram":
            names = [family + s for s in ("_bucket", "_sum", "_count", "_created")]
        elif metric_type == "summary":
            names = [family, *(family + s for s in ("_sum", "_count", "_created"))]
        else:
            names = [family]
        for name in names:
            series[name] = (family, metric_type)
    return series


def family_labels(family: str, registered: dict[str, MetricInfo]) -> frozenset[str]:
    info = registered.get(family) or registered.get(family + "_total")
    return info.labels if info is not None else frozenset()


def dashboard_expressions() -> list[tuple[str, str]]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(data["panels"])
    for variable in data["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append((f"variable {variable['name']}", query["query"]))
    return found


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def check_expression(
    expr: str, series: dict[str, tuple[str, str]], registered: dict[str, MetricInfo]
) -> list[str]:
    problems: list[str] = []
    bare = strip_strings(re.sub(r"\[[^\]]*\]", "", expr))
    names = set(re.findall(r"\b((?:finrtc|process|python)_[a-zA-Z0-9_]*)\b", bare))
    if not names:
        problems.append("uses no metric")
    metric_labels: set[str] = set()
    for name in sorted(names):
        if name not in series:
            problems.append(f"{name} is not exposed by /metrics")
            continue
        family, metric_type = series[name]
        labels = set(family_labels(family, registered))
        if metric_type == "histogram" and name.endswith("_bucket"):
            labels.add("le")
        if family.startswith(IGNORED_PREFIXES):
            labels = {"*"}
        metric_labels |= labels
        for selector in re.findall(rf"\b{name}\{{([^}}]*)\}}", strip_strings(expr)):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                if label not in labels | TARGET_LABELS and "*" not in labels:
                    problems.append(f"{name} has no label {label!r}")
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare):
        for label in (part.strip() for part in group.split(",") if part.strip()):
            if label not in metric_labels | TARGET_LABELS and "*" not in metric_labels:
                problems.append(f"grouping label {label!r} is not a label of {sorted(names)}")
    label_values = re.findall(r"label_values\(\s*\w+\s*,\s*(\w+)\s*\)", bare)
    for label in label_values:
        if label not in metric_labels | TARGET_LABELS:
            problems.append(f"label_values on missing label {label!r}")
    return problems


def test_dashboard_uses_only_exposed_metrics_and_labels(registered: dict[str, MetricInfo]) -> None:
    series = exposed_series()
    problems = []
    for title, expr in dashboard_expressions():
        for problem in check_expression(expr, series, registered):
            problems.append(f"{title}: {problem} in {expr}")
    assert not problems, "\n".join(problems)


def test_expression_checker_catches_mistakes(registered: dict[str, MetricInfo]) -> None:
    series = exposed_series()
    assert check_expression("rate(finrtc_frames_received_total[5m])", series, registered) == []
    assert check_expression("rate(finrtc_frames_received[5m])", series, registered) == [
        "finrtc_frames_received is not exposed by /metrics"
    ]
    assert check_expression(
        'sum by (le, room) (rate(finrtc_hook_seconds_bucket{hook="x"}[5m]))', series, registered
    ) == ["grouping label 'room' is not a label of ['finrtc_hook_seconds_bucket']"]
    assert check_expression('finrtc_rooms{kind="video"}', series, registered) == [
        "finrtc_rooms has no label 'kind'"
    ]
    assert check_expression("sum(finrtc_encode_seconds)", series, registered) == [
        "finrtc_encode_seconds is not exposed by /metrics"
    ]


def test_dashboard_covers_what_an_sre_needs() -> None:
    exprs = " ".join(expr for _, expr in dashboard_expressions())
    for needed in (
        "finrtc_rooms",
        "finrtc_participants",
        "finrtc_published_tracks",
        "finrtc_frames_received_total",
        "finrtc_packets_encoded_total",
        "finrtc_frames_dropped_total",
        "finrtc_subscriber_packets_dropped_total",
        "finrtc_encode_seconds_bucket",
        "finrtc_keyframe_requests_total",
        "finrtc_event_loop_lag_seconds_bucket",
        "finrtc_webhook_deliveries_total",
        "finrtc_webhook_attempt_failures_total",
        "finrtc_archive_packets_dropped_total",
        "finrtc_archive_write_failures_total",
        "finrtc_archive_seal_seconds_bucket",
    ):
        assert needed in exprs, f"the dashboard has no panel using {needed}"
    assert re.search(
        r"histogram_quantile\(0\.99, sum by \(le, hook[^)]*\) \(rate\(finrtc_hook_seconds_bucket",
        exprs,
    ), "the dashboard needs hook p99 per hook"
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def parse_exposition(text: str) -> dict[str, str]:
    """Families in a /metrics text -> type (counters keep their _total name)."""
    return {
        match.group(1): match.group(2)
        for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)
        if not match.group(1).endswith("_created")
    }


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a real `finrtc serve` process with every optional subsystem configured."""
    from finrtc.archive.keys import generate_keys

    root = tmp_path_factory.mktemp("live")
    keys = generate_keys(root / "data" / "keys")
    with live_server(
        root,
        hooks=[{"use": "visible_watermark"}, {"use": "face_presence"}],
        archive={
            "enabled": True,
            "signer_key_file": str(keys.signer_key),
            "archive_public_key_files": [str(keys.archive_pub)],
        },
        compliance={"enabled": True, "scripts": {"demo": "builtin:demo_insurance_en"}},
        rooms={"default_policy": {"script": "demo"}},
        webhooks={"endpoints": [{"name": "backend", "url": f"http://127.0.0.1:{free_port()}/"}]},
    ) as server, urllib.request.urlopen(server.base + "/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def test_live_metrics_are_all_documented(live_metrics: str) -> None:
    docs = documented()
    exposed = {
        name: metric_type
        for name, metric_type in parse_exposition(live_metrics).items()
        if not name.startswith(IGNORED_PREFIXES)
    }
    assert exposed, "the server exposed no finrtc metric"
    for name, metric_type in exposed.items():
        assert name in docs, f"/metrics exposes {name}, which docs/metrics.md does not list"
        assert docs[name].type == metric_type, f"{name}: {metric_type} on /metrics"


# Subsystems the server registers metrics for as soon as it serves. Extend this as the server
# wires more in; the import-everything test above already checks the rest against the registry.
LIVE_PREFIXES = (
    "finrtc_rooms", "finrtc_participants", "finrtc_published", "finrtc_subscribed",
    "finrtc_frames", "finrtc_packets", "finrtc_encode", "finrtc_encoders", "finrtc_hook_",
    "finrtc_subscriber", "finrtc_keyframe", "finrtc_upstream", "finrtc_sink", "finrtc_http",
    "finrtc_event_loop", "finrtc_archive", "finrtc_face", "finrtc_compliance", "process_",
)


def test_dashboard_core_panels_match_a_live_server(live_metrics: str) -> None:
    live = exposed_series(live_metrics)
    missing = set()
    for _, expr in dashboard_expressions():
        for name in re.findall(r"\b((?:finrtc|process)_[a-zA-Z0-9_]*)\b", strip_strings(expr)):
            if name.startswith(LIVE_PREFIXES) and name not in live:
                missing.add(name)
    assert not missing, f"the dashboard uses metrics a live server lacks: {sorted(missing)}"
