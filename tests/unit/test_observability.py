"""Logs carry export/provider/job/task ids; metrics expose exports by status from Redis."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx

from tests.conftest import make_settings
from worker.dev.embedded import free_port
from worker.logs import JsonFormatter, TaskContextFilter
from worker.models import ExportRecord, ExportStatus, JobRecord, Writes
from worker.observability import ExportsByStatus, serve_metrics
from worker.store import ExportStore


def record(export_id: str) -> ExportRecord:
    return ExportRecord(
        id=export_id,
        provider="samsara",
        params={},
        credential="default",
        jobs={"0": JobRecord(key="0", params={})},
        created_at=0,
        updated_at=0,
        deadline_at=10,
    )


def test_json_log_lines_carry_the_export_context() -> None:
    logger = logging.getLogger("test.observability")
    line = logger.makeRecord(
        logger.name,
        logging.WARNING,
        __file__,
        1,
        "poll of %s rescheduled",
        ("0",),
        None,
        extra={"export_id": "e1", "provider": "samsara", "provider_job_id": "p9"},
    )
    TaskContextFilter().filter(line)
    payload = json.loads(JsonFormatter().format(line))
    assert payload["message"] == "poll of 0 rescheduled" and payload["level"] == "WARNING"
    assert (payload["export_id"], payload["provider"], payload["provider_job_id"]) == ("e1", "samsara", "p9")
    assert "task_id" in payload


def test_exports_by_status_follows_transitions(store: ExportStore) -> None:
    store.create(record("a"))
    store.create(record("b"))

    def complete(state: ExportRecord, writes: Writes) -> None:
        state.status = ExportStatus.COMPLETED

    store.transact("a", complete)
    samples = {s.labels["status"]: s.value for s in next(iter(ExportsByStatus(store).collect())).samples}
    assert samples["PENDING"] == 1 and samples["COMPLETED"] == 1 and samples["FAILED"] == 0


def test_metrics_endpoint_serves_counters_and_status_gauge(tmp_path: Path, store: ExportStore) -> None:
    from prometheus_client import CollectorRegistry

    from worker import metrics

    port = free_port()
    store.create(record("c"))
    registry = CollectorRegistry()
    registry.register(metrics.POLLS)
    metrics.POLLS.labels("samsara", "Processing").inc()
    serve_metrics(make_settings(tmp_path, metrics_port=port), store, addr="127.0.0.1", registry=registry)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'aew_exports{status="PENDING"} 1.0' in body
    assert 'aew_polls_total{provider="samsara",provider_status="Processing"}' in body
