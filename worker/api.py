"""The Python API other applications use: enqueue an export, look at it, cancel, retry.

Everything is validated here, before anything reaches Redis: a bad request raises
:class:`InvalidRequest` with a message naming the field, and nothing is stored.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from worker.engine import commands
from worker.engine.context import Runtime
from worker.errors import InvalidRequest, PermanentError, RetryLater, TransientError, UnknownExport
from worker.models import (
    Callback,
    ExportRecord,
    FileRecord,
    FileStatus,
    JobStatus,
    NewExport,
    Progress,
    SinkOptions,
)
from worker.providers import get_provider
from worker.providers.base import ReportDetail, ReportSummary, wire_params
from worker.providers.gateway import ProviderGateway
from worker.schedules import idempotency_key as schedule_key
from worker.schedules import load_schedules, period_of, render_params
from worker.sinks.options import sink_options_for

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


class ExportView(BaseModel):
    record: ExportRecord
    files: list[FileRecord]
    progress: Progress


def _check_name(kind: str, value: str) -> None:
    if not NAME_PATTERN.match(value):
        raise InvalidRequest(
            f"{kind} {value!r} is not valid: use 1-200 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
        )


def progress_of(record: ExportRecord, files: list[FileRecord]) -> Progress:
    leaves = [job for job in record.jobs.values() if job.status is not JobStatus.SPLIT]
    percents = [job.percent_complete for job in leaves if job.percent_complete is not None]
    return Progress(
        status=record.status,
        jobs_total=len(leaves),
        jobs_done=sum(job.status.terminal for job in leaves),
        files_total=len(files),
        files_done=sum(file.status is not FileStatus.PENDING for file in files),
        rows=sum(file.rows for file in files),
        quarantined=sum(file.quarantined for file in files),
        percent_complete=sum(percents) // len(percents) if percents else None,
    )


class ExportClient:
    """Bound to a runtime (settings, store, dispatcher); the module functions use the default one."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def submit(
        self,
        provider: str,
        params: dict[str, Any],
        *,
        credential: str = "default",
        idempotency_key: str | None = None,
        callback: Callback | dict[str, Any] | None = None,
        deadline_seconds: float | None = None,
        schedule: str | None = None,
        sink: str = "jsonl",
        sink_options: SinkOptions | dict[str, Any] | None = None,
    ) -> str:
        """Record an export and enqueue its first step; the same idempotency key returns the same id."""
        chosen = get_provider(provider)
        validated = chosen.validate(params)
        _check_name("credential name", credential)
        if idempotency_key is not None:
            _check_name("idempotency key", idempotency_key)
        options = sink_options_for(sink, sink_options, chosen, validated)
        if deadline_seconds is not None and deadline_seconds <= 0:
            raise InvalidRequest(f"deadline_seconds must be positive, got {deadline_seconds}")
        try:
            hook = Callback.model_validate(callback) if isinstance(callback, dict) else callback
        except ValidationError as exc:
            raise InvalidRequest(f"invalid callback: {exc.errors()[0]['msg']}") from exc
        if hook is not None:
            _check_name("callback task", hook.task)
        settings = self.rt.settings
        deadline = (
            deadline_seconds
            or settings.deadline_seconds.get(provider)
            or chosen.default_deadline_seconds
            or settings.default_deadline_seconds
        )
        request = NewExport(
            id=secrets.token_hex(8),
            provider=provider,
            params=wire_params(validated),
            credential=credential,
            idempotency_key=idempotency_key,
            callback=hook,
            deadline_seconds=deadline,
            planned=[wire_params(part) for part in chosen.plan(validated)],
            warnings=chosen.warnings(validated, datetime.fromtimestamp(self.rt.clock(), UTC)),
            schedule=schedule,
            sink=sink,
            sink_options=options,
        )
        self._check_with_provider(request)
        return commands.create_export(self.rt, request)

    def _check_with_provider(self, request: NewExport) -> None:
        """The provider's own checks (impact.com: report parameters against the report's MetaData), when
        this process has the credential to ask. Without it, or when the provider cannot answer now, the
        worker's submit step runs the same check before the provider job is created."""
        if request.credential not in self.rt.settings.credentials:
            return
        try:
            self.rt.gateway(request.provider, request.credential).check(request.params)
        except (TransientError, RetryLater, PermanentError):
            return

    def reports(self, provider: str, *, credential: str = "default", scope: str | None = None) -> list[ReportSummary]:
        """The reports the provider account behind ``credential`` can run (needs the credential here)."""
        return self._describing(provider, credential).reports(scope)

    def report(self, provider: str, report_id: str, *, credential: str = "default", scope: str | None = None) -> ReportDetail:
        """One report's parameters and columns, as the provider describes them."""
        return self._describing(provider, credential).report(report_id, scope)

    def _describing(self, provider: str, credential: str) -> ProviderGateway:
        get_provider(provider)
        _check_name("credential name", credential)
        configured = self.rt.settings.credentials
        if credential not in configured:
            names = ", ".join(sorted(configured)) or "none"
            raise InvalidRequest(
                f"credential {credential!r} is not configured in this process (configured: {names}); run where "
                f"EXPORT_WORKER_CREDENTIALS__{credential.upper()}__... is set (the worker's environment), or use a configured one"
            )
        return self.rt.gateway(provider, credential)

    def get(self, export_id: str) -> ExportView:
        record = self.rt.store.get(export_id)
        files = self.rt.store.files(export_id)
        return ExportView(record=record, files=files, progress=progress_of(record, files))

    def recent(self, limit: int = 50) -> list[ExportRecord]:
        records = []
        for export_id in self.rt.store.list_ids(limit):
            try:
                records.append(self.rt.store.get(export_id))
            except UnknownExport:
                continue
        return records

    def cancel(self, export_id: str) -> ExportRecord:
        commands.cancel(self.rt, export_id)
        return self.rt.store.get(export_id)

    def retry(self, export_id: str) -> ExportRecord:
        """Re-download failed files, or replay a failed provider job where the provider allows it."""
        commands.retry(self.rt, export_id)
        return self.rt.store.get(export_id)

    def wait(self, export_id: str, timeout: float = 600, interval: float = 0.5) -> ExportView:
        """Block until the export ends; for scripts and tests (other apps should use events)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.get(export_id)
            if view.record.status.terminal:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"export {export_id} still {view.record.status.value} after {timeout}s")
            time.sleep(interval)

    def run_schedule(self, name: str, now: datetime | None = None) -> str:
        """Submit the export of schedule ``name`` for the period before ``now``; idempotent per period."""
        path = self.rt.settings.schedule_file
        if path is None:
            raise InvalidRequest(
                "EXPORT_WORKER_SCHEDULE_FILE is not set, so there are no schedules; set it to the worker's JSON "
                "schedule file (example: config/schedules.json)"
            )
        schedules = load_schedules(self.rt.settings)
        entry = next((item for item in schedules if item.name == name), None)
        if entry is None:
            known = ", ".join(item.name for item in schedules) or "none"
            raise InvalidRequest(f"no schedule named {name!r} in {path}; known schedules: {known}")
        start, end = period_of(entry, now or datetime.now(UTC))
        return self.submit(
            entry.provider,
            render_params(entry, start, end),
            credential=entry.credential,
            idempotency_key=schedule_key(entry, start),
            deadline_seconds=entry.deadline_seconds,
            schedule=entry.name,
            sink=entry.sink,
            sink_options=entry.sink_options,
        )

    def read_events(
        self, export_id: str | None = None, since: str = "$", block_ms: int | None = 1000
    ) -> tuple[str, list[dict[str, Any]]]:
        """One read of the event stream after ``since``: (last entry id, events of this export)."""
        last = since
        matching: list[dict[str, Any]] = []
        for entry_id, event in self.rt.store.read_events(since, block_ms=block_ms):
            last = entry_id
            if export_id is None or event.get("export_id") == export_id:
                matching.append({"id": entry_id, **event})
        return last, matching


def default_client() -> ExportClient:
    from worker.app import app
    from worker.wiring import runtime

    return ExportClient(runtime(app))


def submit_export(provider: str, params: dict[str, Any], **options: Any) -> str:
    return default_client().submit(provider, params, **options)


def get_export(export_id: str) -> ExportView:
    return default_client().get(export_id)


def cancel_export(export_id: str) -> ExportRecord:
    return default_client().cancel(export_id)


def retry_export(export_id: str) -> ExportRecord:
    return default_client().retry(export_id)


def list_exports(limit: int = 50) -> list[ExportRecord]:
    return default_client().recent(limit)
