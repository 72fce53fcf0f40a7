"""How an export's end is reported: once, with when it ended, the metrics and the log line operators read.

The engine runs on fakeredis with a scripted Samsara; metrics are the real prometheus counters,
read before and after.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FakeClock
from tests.engine_driver import Driver
from tests.scripted_samsara import FakeSamsara, job, script_happy_path, submit
from worker.api import ExportClient
from worker.dev.testing import RecordingDispatcher
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.engine.watchdog import run_watchdog
from worker.errors import InvalidRequest
from worker.models import ExportStatus


class EndMetrics:
    """The end-of-export samples of one status, remembered when made so a test reads what one end added."""

    def __init__(self, status: str) -> None:
        self.labels = {"provider": "samsara", "status": status}
        self.before = self.read()

    def read(self) -> tuple[float, float, float]:
        def sample(name: str) -> float:
            return REGISTRY.get_sample_value(name, self.labels) or 0.0

        return (
            sample("aew_exports_finished_total"),
            sample("aew_export_duration_seconds_count"),
            sample("aew_export_duration_seconds_sum"),
        )

    def added(self) -> tuple[float, float, float]:
        """(exports finished, durations observed, seconds observed) since this was made."""
        finished, count, total = self.read()
        return finished - self.before[0], count - self.before[1], total - self.before[2]


def end_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "worker.engine" and r.getMessage().startswith("export ")]


def test_a_cancelled_export_records_when_it_ended_and_is_counted_with_its_duration(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = EndMetrics("CANCELLED")
    export_id = submit(rt, callback={"task": "app.done"})
    created = clock.now
    clock.advance(42)
    with caplog.at_level(logging.INFO, logger="worker.engine"):
        record = ExportClient(rt).cancel(export_id)
    assert (record.status, record.finished_at, record.error) == (ExportStatus.CANCELLED, created + 42, "cancelled by user")
    assert metrics.added() == (1, 1, 42)
    assert end_lines(caplog) == ["export CANCELLED: cancelled by user"]
    assert [(callback.task, status) for callback, status in dispatcher.callbacks] == [("app.done", "CANCELLED")]


def test_cancelling_an_ended_export_is_refused_and_its_end_is_not_reported_again(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    metrics = EndMetrics("CANCELLED")
    export_id = submit(rt, callback={"task": "app.done"})
    ExportClient(rt).cancel(export_id)
    clock.advance(5)
    with pytest.raises(InvalidRequest, match="already ended as CANCELLED; nothing to cancel"):
        ExportClient(rt).cancel(export_id)
    assert rt.store.get(export_id).finished_at == clock.now - 5
    assert metrics.added()[:2] == (1, 1)
    assert len(dispatcher.callbacks) == 1


def test_a_completed_export_records_when_it_ended_and_logs_its_rows(
    rt: Runtime, dispatcher: RecordingDispatcher, provider: FakeSamsara, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver follows the clock, so the export takes the polls' countdowns to complete."""
    metrics = EndMetrics("COMPLETED")
    script_happy_path(provider)
    export_id = submit(rt, callback={"task": "app.done"})
    created = clock.now
    with caplog.at_level(logging.INFO, logger="worker.engine"):
        Driver(rt, dispatcher, clock=clock).run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows) == (ExportStatus.COMPLETED, 5)
    assert record.finished_at == clock.now and clock.now > created
    finished, count, seconds = metrics.added()
    assert (finished, count) == (1, 1) and seconds == pytest.approx(clock.now - created)
    assert end_lines(caplog) == ["export COMPLETED: 5 rows"]
    assert [(callback.task, status) for callback, status in dispatcher.callbacks] == [("app.done", "COMPLETED")]


def test_a_failed_export_logs_the_error_the_user_reads(
    rt: Runtime, driver: Driver, provider: FakeSamsara, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = EndMetrics("FAILED")
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Failed", details="vehicle 3 has no data")))
    export_id = submit(rt)
    with caplog.at_level(logging.INFO, logger="worker.engine"):
        driver.run()
    error = rt.store.get(export_id).error
    assert error == "provider job j1 failed: vehicle 3 has no data"
    assert end_lines(caplog) == [f"export FAILED: {error}"]
    assert metrics.added()[:2] == (1, 1)


def test_an_end_the_watchdog_reports_late_is_measured_to_when_it_ended(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    """The duration histogram is submit-to-end, not submit-to-whenever-the-end-got-reported."""
    metrics = EndMetrics("CANCELLED")
    export_id = submit(rt)
    dispatcher.take()
    clock.advance(10)
    rt.store.transact(export_id, lambda record, writes: tr.cancel(record, writes, clock.now))  # its worker dies here
    clock.advance(rt.settings.stale_after_seconds + 1000)
    assert run_watchdog(rt).announced == 1
    assert metrics.added() == (1, 1, 10)
