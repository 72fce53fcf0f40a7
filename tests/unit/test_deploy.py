"""The Grafana board and the Prometheus rules in ``deploy/`` ask only for metrics the worker really exports,
cover what operators watch, and the rules pass ``promtool`` (syntax and their own unit tests)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings
from tests.unit.test_store import new_record
from worker import metrics
from worker.observability import ExportsByStatus, OperatorGauges
from worker.store import ExportStore

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BOARD = DEPLOY / "grafana" / "export-worker.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\baew_[a-z0-9_]+")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a worker's /metrics can show, read off a real exposition with every metric touched."""
    import fakeredis

    registry = CollectorRegistry()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            registry.register(metric)
            metric.labels(*["probe"] * len(metric._labelnames))
    store = ExportStore(fakeredis.FakeRedis(), prefix="probe")
    store.create(new_record())
    store.hold("samsara:default", 60)
    store.record_schedule_success("nightly", 1.0)
    settings = make_settings(tmp_path_factory.mktemp("deploy"))
    registry.register(ExportsByStatus(store))
    registry.register(OperatorGauges(store, settings, clock=lambda: 1000.0))
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def board_queries() -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    return list(walk(json.loads(BOARD.read_text())))


def test_the_board_queries_only_metrics_the_worker_exports(exported: set[str]) -> None:
    queries = board_queries()
    assert len(queries) >= 20
    unknown = {name for query in queries for name in METRIC.findall(query)} - exported
    assert unknown == set(), f"the board asks for metrics no worker exports: {sorted(unknown)}"


def test_the_rules_use_only_metrics_the_worker_exports(exported: set[str]) -> None:
    unknown = set(METRIC.findall(RULES.read_text())) - exported
    assert unknown == set(), f"the alert rules name metrics no worker exports: {sorted(unknown)}"


def test_the_probe_sees_every_metric_family(exported: set[str]) -> None:
    """The exposition above is only a fair reference if it includes the scrape-time gauges and the histograms."""
    wanted = {"aew_export_duration_seconds_bucket", "aew_schedule_last_success_age_seconds", "aew_provider_hold_seconds"}
    assert wanted <= exported and "aew_export_duration_seconds" not in exported


def exported_names() -> set[str]:
    return {name for query in board_queries() for name in METRIC.findall(query)}


def test_the_board_shows_what_operators_watch() -> None:
    wanted = {
        "aew_exports",  # exports by status
        "aew_export_failures_total",  # failures by provider and reason (stage)
        "aew_provider_api_calls_total",  # 429s
        "aew_provider_hold_seconds",  # holds
        "aew_rows_written_total",
        "aew_rows_quarantined_total",
        "aew_bytes_downloaded_total",
        "aew_export_duration_seconds_bucket",
        "aew_chains_revived_total",
        "aew_stale_tasks_total",
        "aew_exports_stuck",
        "aew_oldest_active_export_age_seconds",
        "aew_schedule_last_success_age_seconds",
    }
    assert wanted - exported_names() == set()
    panels = json.loads(BOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing: apt-get install -y prometheus (.ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_promtool_accepts_the_rules() -> None:
    answer = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_the_rules_fire_when_they_should_and_only_then() -> None:
    tests = RULES.with_name("alerts.test.yml")
    command = [promtool(), "test", "rules", tests.name]
    answer = subprocess.run(command, cwd=tests.parent, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stdout + answer.stderr
