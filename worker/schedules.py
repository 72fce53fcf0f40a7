"""Recurring exports for celery beat, read from a JSON file (``EXPORT_WORKER_SCHEDULE_FILE``).

A run's idempotency key is ``schedule:<name>:<period start>``: two beat processes, a restart or a
manual re-run in the same period all land on the same export, so the provider sees one job.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from celery.schedules import crontab
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.errors import InvalidRequest
from worker.models import SinkName, SinkOptions
from worker.settings import Settings

RUN_SCHEDULE_TASK = "worker.run_schedule"


class Cron(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minute: str = "0"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"


class ScheduledExport(BaseModel):
    """One recurring export. ``period_params`` fill in the period, e.g. ``{"startHour": "{start:%Y-%m-%dT%H:00:00Z}"}``;
    a dotted key (``report_params.START_DATE``) reaches into a nested object."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    provider: str
    credential: str = "default"
    cron: Cron
    period: Literal["previous_hour", "previous_day", "previous_week"] = "previous_day"
    lag_hours: int = Field(0, ge=0)
    """The period is the last whole one that ended at least this long ago (Samsara: 72, data settles)."""
    params: dict[str, Any] = {}
    period_params: dict[str, str] = {}
    deadline_seconds: float | None = None
    sink: SinkName = "jsonl"
    sink_options: SinkOptions | None = None


class ScheduleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedules: list[ScheduledExport] = []


PERIODS = {"previous_hour": timedelta(hours=1), "previous_day": timedelta(days=1), "previous_week": timedelta(weeks=1)}


@lru_cache(maxsize=8)
def _load(path: Path, mtime: float) -> ScheduleFile:
    try:
        return ScheduleFile.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise InvalidRequest(f"schedule file {path} is invalid: {exc}") from exc


def load_schedules(settings: Settings) -> list[ScheduledExport]:
    path = settings.schedule_file
    if path is None:
        return []
    if not path.exists():
        raise InvalidRequest(f"schedule file {path} does not exist; fix EXPORT_WORKER_SCHEDULE_FILE")
    schedules = _load(path, path.stat().st_mtime).schedules
    names = [entry.name for entry in schedules]
    if len(names) != len(set(names)):
        raise InvalidRequest(f"schedule file {path} repeats a schedule name; names must be unique")
    return schedules


def period_of(entry: ScheduledExport, now: datetime) -> tuple[datetime, datetime]:
    """The last whole period that ended ``lag_hours`` or more before ``now``: [start, end) aligned to
    the hour, day (UTC) or ISO week."""
    now = now.astimezone(UTC) - timedelta(hours=entry.lag_hours)
    if entry.period == "previous_hour":
        end = now.replace(minute=0, second=0, microsecond=0)
    else:
        end = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if entry.period == "previous_week":
            end -= timedelta(days=end.weekday())
    return end - PERIODS[entry.period], end


def render_params(entry: ScheduledExport, start: datetime, end: datetime) -> dict[str, Any]:
    params = {key: (dict(value) if isinstance(value, dict) else value) for key, value in entry.params.items()}
    for dotted, template in entry.period_params.items():
        target = params
        *parents, leaf = dotted.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = template.format(start=start, end=end)
    return params


def idempotency_key(entry: ScheduledExport, start: datetime) -> str:
    return f"schedule:{entry.name}:{start.strftime('%Y%m%dT%H%M%SZ')}"


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "watchdog": {
            "task": "worker.watchdog",
            "schedule": settings.watchdog_interval_seconds,
            "options": {"expires": settings.watchdog_interval_seconds},
        }
    }
    for entry in load_schedules(settings):
        schedule[f"export:{entry.name}"] = {
            "task": RUN_SCHEDULE_TASK,
            "schedule": crontab(**entry.cron.model_dump()),
            "kwargs": {"name": entry.name},
        }
    return schedule
