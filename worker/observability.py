"""Prometheus exposition for the worker.

Under the prefork pool each child counts on its own; with ``PROMETHEUS_MULTIPROC_DIR`` set (an
empty directory), the children write to it and the endpoint, served by the parent, sums them.

The gauges read from Redis at scrape time describe the whole cluster, so every worker node reports
the same values: aggregate them with ``max`` across instances, never ``sum``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.attention import hold_bucket
from worker.listing import active_concerns
from worker.models import ExportStatus
from worker.settings import Settings
from worker.store import ExportStore


class ExportsByStatus(Collector):
    """Exports in each status, read from Redis at scrape time (one HGETALL), so every worker agrees."""

    def __init__(self, store: ExportStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "aew_exports",
            "Exports by status, across all workers (ended ones until the retention forgets them)",
            labels=["status"],
        )
        counts = self.store.status_counts()
        for status in ExportStatus:
            gauge.add_metric([status.value], counts.get(status.value, 0))
        yield gauge


class OperatorGauges(Collector):
    """What operators alert on, read from Redis at scrape time: stuck exports, the oldest active export,
    provider holds in force, and how long ago each schedule last delivered.

    One scrape costs seven round trips whatever the number of active exports (see ``active_concerns``)."""

    def __init__(self, store: ExportStore, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        active, concerns = active_concerns(self.store, now=now, stale_after=self.settings.stale_after_seconds)
        yield GaugeMetricFamily(
            "aew_exports_stuck",
            "Active exports whose next step is overdue past the stale margin, or past their deadline, with nothing running it",
            value=sum("stuck" in item.kinds for item in concerns),
        )
        yield GaugeMetricFamily(
            "aew_exports_deadline_near",
            "Active exports with less than a fifth of their deadline left",
            value=sum("deadline" in item.kinds for item in concerns),
        )
        yield GaugeMetricFamily(
            "aew_oldest_active_export_age_seconds",
            "Age of the oldest export not yet COMPLETED, FAILED or CANCELLED (0 when none)",
            value=max((now - record.created_at for record in active), default=0.0),
        )
        holds = GaugeMetricFamily(
            "aew_provider_hold_seconds",
            "Seconds left on a provider's 429 hold of a credential used by an active export",
            labels=["provider", "credential"],
        )
        buckets = {hold_bucket(record): (record.provider, record.credential) for record in active}
        for bucket, left in sorted(self.store.holds_left(buckets).items()):
            holds.add_metric(list(buckets[bucket]), left)
        yield holds
        ages = GaugeMetricFamily(
            "aew_schedule_last_success_age_seconds",
            "Seconds since the last export of each beat schedule completed",
            labels=["schedule"],
        )
        for schedule, finished_at in sorted(self.store.schedule_successes().items()):
            ages.add_metric([schedule], max(0.0, now - finished_at))
        yield ages


class StoreMemory(Collector):
    """Redis ``used_memory`` and ``maxmemory``, read at scrape time (one INFO memory): how near the store is to full."""

    def __init__(self, store: ExportStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = self.store.memory()
        if memory is None:  # a server without INFO (the embedded demo server) has nothing to report
            return
        used, limit = memory
        yield GaugeMetricFamily("aew_redis_used_memory_bytes", "Memory used by the Redis that holds the state", value=used)
        yield GaugeMetricFamily(
            "aew_redis_maxmemory_bytes", "maxmemory of the Redis that holds the state (0: no limit)", value=limit
        )


def serve_metrics(
    settings: Settings, store: ExportStore, *, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None
) -> CollectorRegistry | None:
    if settings.metrics_port is None:
        return None
    if registry is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
    registry.register(ExportsByStatus(store))
    registry.register(OperatorGauges(store, settings))
    registry.register(StoreMemory(store))
    start_http_server(settings.metrics_port, addr=addr, registry=registry)
    return registry
