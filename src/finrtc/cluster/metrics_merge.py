"""One /metrics for the node: every worker's registry scraped over its socket and relabelled
`media_worker="N"`, plus the front listener's own (`media_worker="front"`). Sum over it in PromQL for
node totals. A worker that does not answer in time is left out of that scrape (its
`finrtc_worker_up` says why), never blocks it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# Not "worker": the recognizer pool already labels its processes that way.
WORKER_LABEL = "media_worker"


def relabelled(families: Iterable[Metric], worker: str) -> Iterator[Metric]:
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [
            Sample(s.name, {WORKER_LABEL: worker, **s.labels}, s.value, s.timestamp, s.exemplar)
            for s in family.samples
        ]
        yield copy


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge(expositions: dict[str, str], front: CollectorRegistry) -> bytes:
    """`expositions`: worker id -> its text exposition. Families of one name become one family
    (an exposition must not repeat a family)."""
    by_name: dict[str, Metric] = {}
    sources = [relabelled(front.collect(), "front")]
    sources += [relabelled(text_string_to_metric_families(text), worker)
                for worker, text in sorted(expositions.items())]
    for source in sources:
        for family in source:
            known = by_name.get(family.name)
            if known is None:
                by_name[family.name] = family
            elif known.type == family.type:
                known.samples.extend(family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(by_name.values())))
    return generate_latest(registry)

