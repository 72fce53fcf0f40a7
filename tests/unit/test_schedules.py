"""Beat schedules: periods, parameter rendering, deterministic idempotency keys, file validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery.schedules import crontab

from tests.conftest import make_settings
from worker.errors import InvalidRequest
from worker.schedules import ScheduledExport, beat_schedule, idempotency_key, load_schedules, period_of, render_params

REPO_SCHEDULES = Path(__file__).parents[2] / "config" / "schedules.json"


def entry(**overrides) -> ScheduledExport:
    values = {
        "name": "daily",
        "provider": "samsara",
        "cron": {"minute": "0", "hour": "2"},
        "period_params": {"startHour": "{start:%Y-%m-%dT%H:00:00Z}", "endHour": "{end:%Y-%m-%dT%H:00:00Z}"},
    }
    values.update(overrides)
    return ScheduledExport.model_validate(values)


def test_previous_day_period_is_the_whole_utc_day_before() -> None:
    start, end = period_of(entry(), datetime(2026, 11, 25, 2, 0, 3, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))
    assert render_params(entry(), start, end) == {"startHour": "2026-11-24T00:00:00Z", "endHour": "2026-11-25T00:00:00Z"}


def test_two_firings_in_one_period_share_the_idempotency_key() -> None:
    first = period_of(entry(), datetime(2026, 11, 25, 2, 0, 0, tzinfo=UTC))[0]
    late_rerun = period_of(entry(), datetime(2026, 11, 25, 23, 59, 0, tzinfo=UTC))[0]
    next_day = period_of(entry(), datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC))[0]
    assert idempotency_key(entry(), first) == idempotency_key(entry(), late_rerun) == "schedule:daily:20261124T000000Z"
    assert idempotency_key(entry(), next_day) != idempotency_key(entry(), first)


def test_hour_and_week_periods() -> None:
    hourly = entry(period="previous_hour")
    assert period_of(hourly, datetime(2026, 11, 25, 14, 7, tzinfo=UTC))[0] == datetime(2026, 11, 25, 13, tzinfo=UTC)
    weekly = entry(period="previous_week")
    start, end = period_of(weekly, datetime(2026, 11, 25, 9, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC))


def test_dotted_period_params_fill_nested_objects_without_touching_the_template() -> None:
    item = entry(
        provider="impact",
        params={"report_id": "r1", "report_params": {"SUBAID": "9"}},
        period_params={"report_params.START_DATE": "{start:%Y-%m-%d}"},
    )
    start, end = period_of(item, datetime(2026, 11, 25, 3, tzinfo=UTC))
    assert render_params(item, start, end) == {"report_id": "r1", "report_params": {"SUBAID": "9", "START_DATE": "2026-11-24"}}
    assert item.params["report_params"] == {"SUBAID": "9"}


def test_repository_schedule_file_loads_into_beat_entries(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, schedule_file=REPO_SCHEDULES)
    schedule = beat_schedule(settings)
    assert {"watchdog", "export:samsara-ifta-daily-fleet-a", "export:impact-performance-daily"} <= set(schedule)
    daily = schedule["export:samsara-ifta-daily-fleet-a"]
    assert daily["kwargs"] == {"name": "samsara-ifta-daily-fleet-a"}
    assert daily["schedule"] == crontab(minute="0", hour="2")


def test_repository_schedules_are_valid_provider_requests_and_samsara_asks_for_settled_data(tmp_path: Path) -> None:
    from worker.providers import get_provider

    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    for scheduled in load_schedules(make_settings(tmp_path, schedule_file=REPO_SCHEDULES)):
        provider = get_provider(scheduled.provider)
        params = provider.validate(render_params(scheduled, *period_of(scheduled, now)))
        assert provider.warnings(params, now) == []
        if scheduled.provider == "samsara":
            assert period_of(scheduled, now) == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))
            assert params.wire()["vehicleTagIds"] == "1234,5678"


def test_lag_hours_reaches_back_to_the_last_period_that_ended_long_enough_ago() -> None:
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert period_of(entry(lag_hours=72), now) == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))
    assert period_of(entry(lag_hours=0), now) == (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 24, tzinfo=UTC))


def test_bad_schedule_files_fail_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        load_schedules(make_settings(tmp_path, schedule_file=tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schedules": [{"name": "x", "provider": "samsara"}]}))
    with pytest.raises(InvalidRequest, match="broken.json is invalid"):
        load_schedules(make_settings(tmp_path, schedule_file=broken))
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"schedules": [entry().model_dump(), entry().model_dump()]}))
    with pytest.raises(InvalidRequest, match="repeats a schedule name"):
        load_schedules(make_settings(tmp_path, schedule_file=twice))
