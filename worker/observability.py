"""Prometheus exposition for the worker.

Under the prefork pool each child counts on its own; with ``PROMETHEUS_MULTIPROC_DIR`` set (an
empty directory), the children write to it and the endpoint, served by the parent, sums them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from worker.settings import Settings


def serve_metrics(settings: Settings) -> None:
    if settings.metrics_port is None:
        return
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(settings.metrics_port, addr="0.0.0.0", registry=registry)
    else:
        start_http_server(settings.metrics_port, addr="0.0.0.0")
