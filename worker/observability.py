"""Prometheus exposition for the worker.

Under the prefork pool each child counts on its own; with ``PROMETHEUS_MULTIPROC_DIR`` set (an
empty directory), the children write to it and the endpoint, served by the parent, sums them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.models import ExportStatus
from worker.settings import Settings
from worker.store import ExportStore


class ExportsByStatus(Collector):
    """Exports in each status, read from Redis at scrape time (one HGETALL), so every worker agrees."""

    def __init__(self, store: ExportStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("aew_exports", "Exports by status, across all workers", labels=["status"])
        counts = self.store.status_counts()
        for status in ExportStatus:
            gauge.add_metric([status.value], counts.get(status.value, 0))
        yield gauge


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
    registry.register(StoreMemory(store))
    start_http_server(settings.metrics_port, addr=addr, registry=registry)
    return registry
