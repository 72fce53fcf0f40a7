"""What each page shows, as pydantic models: the HTML templates and the ``/api`` answers render the same data.

A file's download URL is never included (a signed URL is a bearer token for the file), and neither is
anything from the settings: records hold credential and database *names* only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ValidationError

from worker.api import ExportClient, ExportView
from worker.attention import attempts, failure_stage
from worker.dashboard.quarantine import QuarantineSample, sample
from worker.dashboard.timeline import TimelineEntry, attempt_errors, entries
from worker.listing import Attention, ExportFilter, ExportPage
from worker.models import ExportRecord, ExportStatus, FailureStage, FileRecord, JobRecord, Progress

PAGE_SIZE = 50


class FileRow(BaseModel):
    key: str
    name: str
    status: str
    attempts: int
    rows: int
    quarantined: int
    bytes_downloaded: int
    bytes: int
    record_count: int | None
    path: str | None
    quarantine_path: str | None
    error: str | None
    error_stage: FailureStage | None
    attempt_errors: list[str]


class ExportDetail(BaseModel):
    record: dict[str, Any]
    progress: Progress
    stage: FailureStage | None
    attempts: int
    jobs: list[JobRecord]
    files: list[FileRow]
    destination: str
    """Where the rows went: the sink and its folder, table or streams."""
    quarantine: QuarantineSample
    timeline: list[TimelineEntry]
    last_event_id: str


def public_record(record: ExportRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude={"jobs"})


def destination(record: ExportRecord, files: list[FileRecord], output_dir: str) -> str:
    if record.sink == "postgres":
        options = record.sink_options
        table = f"{options.schema_name}.{options.table}"
        return f"PostgreSQL database {options.database!r}, table {table} (bad rows in {table}_quarantine)"
    if record.sink == "redis_stream":
        return f"Redis streams {record.id}:records:<file> under the key prefix, one per file"
    folders = {str(PurePath(file.path).parent) for file in files if file.path}
    where = ", ".join(sorted(folders)) or str(PurePath(output_dir) / record.id)
    return f"{record.sink} files in {where}"


def detail(client: ExportClient, export_id: str) -> ExportDetail:
    view: ExportView = client.get(export_id)
    events = client.timeline(export_id)
    errors = attempt_errors(events)
    record, files = view.record, view.files
    return ExportDetail(
        record=public_record(record),
        progress=view.progress,
        stage=failure_stage(record, files),
        attempts=attempts(record, files),
        jobs=list(record.jobs.values()),
        files=[
            FileRow(
                **file.model_dump(
                    include={"key", "name", "attempts", "rows", "quarantined", "bytes_downloaded", "bytes", "record_count"}
                ),
                status=file.status.value,
                path=file.path,
                quarantine_path=file.quarantine_path,
                error=file.error,
                error_stage=file.error_stage,
                attempt_errors=errors.get(file.key, []),
            )
            for file in files
        ],
        destination=destination(record, files, str(client.rt.settings.output_dir)),
        quarantine=sample(client, record, files),
        timeline=entries(events),
        last_event_id=events[-1]["id"] if events else "0",
    )


class FilterForm(BaseModel):
    """The All-exports filter as it came in the URL, with what could not be understood."""

    where: ExportFilter
    values: dict[str, str]
    problems: list[str]


def _instant(value: str) -> float:
    """Unix seconds, or an ISO date/time (a browser's datetime-local has no zone: taken as UTC)."""
    try:
        return float(value)
    except ValueError:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def filter_form(params: dict[str, str]) -> FilterForm:
    values = {key: params[key].strip() for key in ("status", "provider", "schedule", "since", "until", "text") if params.get(key)}
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("since", "until"):
            try:
                fields[key] = _instant(value)
            except ValueError:
                problems.append(f"{key} {value!r} is not a date-time (use 2026-11-23T00:00 or Unix seconds)")
        elif key == "status" and value not in ExportStatus.__members__:
            problems.append(f"status {value!r} is not one of {', '.join(ExportStatus.__members__)}")
        else:
            fields[key] = value
    try:
        where = ExportFilter.model_validate(fields)
    except ValidationError as exc:
        problems.append(str(exc.errors()[0]["msg"]))
        where = ExportFilter()
    return FilterForm(where=where, values=values, problems=problems)


class ListPage(BaseModel):
    form: FilterForm
    page: ExportPage
    last_event_id: str


def list_page(client: ExportClient, params: dict[str, str]) -> ListPage:
    last = client.latest_event_id()
    form = filter_form(params)
    return ListPage(form=form, page=client.page(form.where, before=params.get("before"), size=PAGE_SIZE), last_event_id=last)


class HomePage(BaseModel):
    attention: Attention
    counts: dict[str, int]
    failed_window_hours: float
    last_event_id: str


def home_page(client: ExportClient, failed_window_hours: float) -> HomePage:
    last = client.latest_event_id()
    return HomePage(
        attention=client.attention(failed_window_hours * 3600),
        counts=client.status_counts(),
        failed_window_hours=failed_window_hours,
        last_event_id=last,
    )
