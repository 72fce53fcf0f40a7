"""Records the engine keeps in Redis, the arguments its tasks carry, and what providers answer.

This is the lowest floor: it imports nothing of the project, so store, engine and providers all
build on it without cycles.

Both are pydantic models serialised as JSON: Redis values and Celery messages never hold pickles,
and a record that fails validation on load is reported, not silently reinterpreted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobState(StrEnum):
    """Provider-neutral job state the engine reasons about."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    """The provider failed an attempt and will retry by itself: not terminal, poll slowly."""
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class RemoteFile(BaseModel):
    """One downloadable result file as the provider describes it."""

    model_config = ConfigDict(frozen=True)

    name: str
    url: str
    expires_at: datetime | None = None
    record_count: int | None = None
    authenticated: bool = False
    """True when the URL is on the provider API and needs the credential (never for signed storage URLs)."""


class JobSnapshot(BaseModel):
    """What one poll of the provider told us."""

    provider_job_id: str
    state: JobState
    raw_status: str
    message: str | None = None
    percent_complete: int | None = None
    records_processed: int | None = None
    files: list[RemoteFile] = []
    resolved_params: dict[str, Any] | None = None
    """The request as the provider resolved it (e.g. the vehicle list behind tag filters)."""


SinkName = Literal["jsonl", "redis_stream", "postgres", "parquet"]

SQL_NAME = r"^[a-z_][a-z0-9_]{0,51}$"
"""A table or schema name we never need to quote oddly: lower case, and short enough for ``_quarantine``."""


class SinkOptions(BaseModel):
    """Where a database sink loads; the database is a *name* the worker resolves from its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    database: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    schema_name: str = Field("public", alias="schema", pattern=SQL_NAME)
    table: str | None = Field(None, pattern=SQL_NAME)
    """None: the provider's report name (e.g. ``samsara_ifta_detail``), filled in at submit."""


class ExportStatus(StrEnum):
    PENDING = "PENDING"
    """Recorded, submit task not yet done."""
    RUNNING = "RUNNING"
    """At least one provider job exists and is being polled."""
    DOWNLOADING = "DOWNLOADING"
    """Every provider job is terminal; files are being downloaded."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (ExportStatus.COMPLETED, ExportStatus.FAILED, ExportStatus.CANCELLED)


class JobStatus(StrEnum):
    PENDING = "PENDING"
    """Not created at the provider yet."""
    SUBMITTING = "SUBMITTING"
    """A worker is calling create; if it dies here the provider may or may not have the job."""
    POLLING = "POLLING"
    SUCCEEDED = "SUCCEEDED"
    SPLIT = "SPLIT"
    """Failed for being too large and replaced by smaller child jobs."""
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.SPLIT, JobStatus.FAILED)


FailureStage = Literal["provider", "download", "parse", "sink"]
"""Where an export or a file failed: the provider's job, the transfer, the CSV, or writing the rows."""


class FileStatus(StrEnum):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"


class Callback(BaseModel):  # type: ignore[no-redef]  # a field named kwargs clashes with pydantic-mypy's __init__
    """A Celery task another application registered to hear about the end of an export."""

    task: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    queue: str | None = None
    """The caller's own queue, consumed by the caller's workers; None uses this project's queue."""


class JobRecord(BaseModel):
    """One provider job. An export starts with one; an auto-split adds children."""

    key: str
    params: dict[str, Any]
    status: JobStatus = JobStatus.PENDING
    provider_job_id: str | None = None
    provider_state: JobState | None = None
    raw_status: str | None = None
    message: str | None = None
    percent_complete: int | None = None
    records_processed: int | None = None
    token: int = 0
    """Fencing token: only the task carrying the current token may advance this job."""
    polls: int = 0
    transient_errors: int = 0
    submit_attempts: int = 0
    ambiguous_creates: int = 0
    """Times a worker died inside the create call, so the provider may hold an orphan job."""
    next_action_at: float | None = None
    """When the next submit/poll task is due; the watchdog revives chains silent long past it."""
    parent: str | None = None


class FileRecord(BaseModel):
    """One result file, stored in its own hash field so parallel downloads don't contend."""

    key: str
    job_key: str
    name: str
    safe_name: str
    url: str
    authenticated: bool = False
    expires_at: float | None = None
    record_count: int | None = None
    status: FileStatus = FileStatus.PENDING
    token: int = 0
    attempts: int = 0
    url_refreshes: int = 0
    rows: int = 0
    quarantined: int = 0
    bytes: int = 0
    """Content bytes parsed (after gunzip)."""
    bytes_downloaded: int = 0
    """Bytes on the wire (compressed for a gzip file)."""
    path: str | None = None
    quarantine_path: str | None = None
    error: str | None = None
    error_stage: FailureStage | None = None
    """Where the last failed attempt broke (None on records written before stages were kept)."""
    dispatched_at: float = Field(default_factory=time.time)
    finished_at: float | None = None

    @classmethod
    def from_remote(cls, key: str, job_key: str, remote: RemoteFile, safe_name: str) -> FileRecord:
        return cls(
            key=key,
            job_key=job_key,
            name=remote.name,
            safe_name=safe_name,
            url=remote.url,
            authenticated=remote.authenticated,
            expires_at=remote.expires_at.timestamp() if remote.expires_at else None,
            record_count=remote.record_count,
        )


class ExportRequest(BaseModel):
    """What a caller asked for; an export record keeps it as it was asked."""

    id: str
    provider: str
    params: dict[str, Any]
    credential: str
    idempotency_key: str | None = None
    callback: Callback | None = None
    schedule: str | None = None
    """Name of the beat schedule that created it, if any."""
    sink: SinkName = "jsonl"
    sink_options: SinkOptions = SinkOptions()


class NewExport(ExportRequest):
    """A validated request, before it is stored."""

    deadline_seconds: float
    planned: list[dict[str, Any]] = []
    """The provider jobs the request becomes before anything is sent (``Provider.plan``); one or none
    means job ``"0"`` alone."""
    warnings: list[str] = []


class ExportRecord(ExportRequest):
    status: ExportStatus = ExportStatus.PENDING
    jobs: dict[str, JobRecord]
    created_at: float
    updated_at: float
    deadline_at: float
    finished_at: float | None = None
    error: str | None = None
    warnings: list[str] = []
    files_total: int = 0
    rows: int = 0
    quarantined: int = 0
    bytes: int = 0


class FileOutput(BaseModel):
    """What a committed download produced, as its file record keeps it."""

    rows: int
    quarantined: int
    bytes: int
    bytes_downloaded: int = 0
    path: str
    quarantine_path: str | None = None


class Progress(BaseModel):
    """A cheap view for watch/status: derived from the record and its files."""

    model_config = ConfigDict(frozen=True)

    status: ExportStatus
    jobs_total: int
    jobs_done: int
    files_total: int
    files_done: int
    rows: int
    quarantined: int
    percent_complete: int | None


class JobTaskArgs(BaseModel):
    """Arguments of submit and poll tasks: which job, and the fencing token the task was sent with."""

    export_id: str
    job_key: str
    token: int
    provider: str | None = None
    credential: str | None = None
    """The export's provider and credential, which never change: a poll spends from their budgets in
    the round trip that reads the export. Without them (a task sent by hand) it spends in one more."""

    @classmethod
    def of(cls, record: ExportRecord, job_key: str, token: int) -> JobTaskArgs:
        return cls(export_id=record.id, job_key=job_key, token=token, provider=record.provider, credential=record.credential)


class FileTaskArgs(BaseModel):
    export_id: str
    file_key: str
    token: int


@dataclass
class Writes:
    """Side writes staged by a transaction function, applied in the same MULTI/EXEC."""

    files: list[FileRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def put_file(self, record: FileRecord) -> None:
        self.files.append(record)

    def event(self, kind: str, **detail: Any) -> None:
        self.events.append({"type": kind, **detail})
