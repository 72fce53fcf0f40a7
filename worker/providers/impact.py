"""impact.com Jobs: track a job (or start a report export that yields one), poll it, download ResultUri.

``ERROR`` is not terminal: impact.com retries the job itself every 15 minutes, up to 5 times, before
it becomes ``FAILED``. We map it to :attr:`JobState.RETRYING` so the engine polls slowly.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.errors import ReplayNotAllowed
from worker.http import parse_body
from worker.models import JobSnapshot, JobState, RemoteFile
from worker.providers.auth import basic_auth
from worker.providers.base import Provider, ProviderContext
from worker.settings import Credential


class ImpactJobType(StrEnum):
    DOWNLOAD_REPORT = "DownloadReport"
    API_REPORT = "ApiReport"
    UPLOAD_ADS = "UploadAds"
    TERM_MODIFICATION = "TermModification"
    CLICK_EXPORT = "ClickExport"


class ImpactJobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    ERROR = "ERROR"
    FAILED = "FAILED"


STATUS_MAP: dict[ImpactJobStatus, JobState] = {
    ImpactJobStatus.QUEUED: JobState.QUEUED,
    ImpactJobStatus.RUNNING: JobState.RUNNING,
    ImpactJobStatus.ERROR: JobState.RETRYING,
    ImpactJobStatus.COMPLETED: JobState.SUCCEEDED,
    ImpactJobStatus.CANCELLED: JobState.CANCELLED,
    ImpactJobStatus.FAILED: JobState.FAILED,
}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class ImpactJob(_Wire):
    """The Job object, PascalCase as on the wire. Unset dates arrive empty and become None."""

    Id: str = Field(min_length=1)
    Type: ImpactJobType
    ProgramId: str | None = None
    CreatedBy: str | None = None
    CreatedDate: datetime | None = None
    StartedDate: datetime | None = None
    CompletedDate: datetime | None = None
    AbandonedDate: datetime | None = None
    CancelledDate: datetime | None = None
    FailedDate: datetime | None = None
    LastProgressUpdateDate: datetime | None = None
    Status: ImpactJobStatus
    StatusMessage: str | None = None
    RecordsProcessed: int | None = None
    PercentageComplete: int | None = None
    Replayable: bool = False
    ResultUri: str | None = None

    @field_validator(
        "CreatedDate",
        "StartedDate",
        "CompletedDate",
        "AbandonedDate",
        "CancelledDate",
        "FailedDate",
        "LastProgressUpdateDate",
        "ProgramId",
        "CreatedBy",
        "ResultUri",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class ImpactJobReference(_Wire):
    """What a report export (and other job-creating endpoints) answer: where the job lives."""

    Status: str | None = None
    QueuedUri: str = Field(min_length=1)
    ResultUri: str | None = None

    @property
    def job_id(self) -> str:
        return self.QueuedUri.rstrip("/").rsplit("/", 1)[-1]


class ImpactParams(BaseModel):
    """Either track a job someone already started (``job_id``) or start a report export (``report_id``)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    report_id: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    report_params: dict[str, str] = {}
    api_root: Literal["Mediapartners", "Advertisers"] = "Mediapartners"

    @model_validator(mode="after")
    def _exactly_one(self) -> ImpactParams:
        if (self.job_id is None) == (self.report_id is None):
            raise ValueError("give exactly one of job_id (track an existing job) or report_id (start an export)")
        return self


class ImpactJobs(Provider):
    name: ClassVar[str] = "impact"
    params_model: ClassVar[type[BaseModel]] = ImpactParams
    default_base_url: ClassVar[str] = "https://api.impact.com"
    default_download_hosts: ClassVar[tuple[str, ...]] = ("api.impact.com",)
    default_deadline_seconds: ClassVar[float | None] = 3 * 3600
    """5 provider retries 15 minutes apart must fit, with room for the report itself."""

    def auth(self, credential: Credential, credential_name: str) -> httpx.Auth:
        return basic_auth(credential, credential_name, self.name)

    @staticmethod
    def _root(ctx: ProviderContext, api_root: str) -> str:
        return f"/{api_root}/{ctx.credential.account_sid}"

    def table_name(self, params: ImpactParams) -> str:
        """``impact_<report id>``; a tracked job's report is unknown, so those share ``impact_jobs``."""
        return f"impact_{params.report_id}" if params.report_id else "impact_jobs"

    def create(self, ctx: ProviderContext, params: ImpactParams) -> JobSnapshot:
        if params.job_id is not None:
            return self.get(ctx, params.job_id, params)
        return self.start_report_export(ctx, params)

    def start_report_export(self, ctx: ProviderContext, params: ImpactParams) -> JobSnapshot:
        """``GET /{root}/{sid}/ReportExport/{report_id}`` queues a job (verify: path and answer shape)."""
        query = httpx.QueryParams(params.report_params)
        url = f"{self._root(ctx, params.api_root)}/ReportExport/{params.report_id}"
        response = self.request(ctx, "GET", f"{url}?{query}" if query else url)
        reference = parse_body(response, ImpactJobReference, provider=self.name)
        return JobSnapshot(
            provider_job_id=reference.job_id,
            state=JobState.QUEUED,
            raw_status=reference.Status or ImpactJobStatus.QUEUED.value,
        )

    def get(self, ctx: ProviderContext, provider_job_id: str, params: ImpactParams) -> JobSnapshot:
        return self._snapshot(self._fetch(ctx, provider_job_id, params.api_root), params.api_root, ctx)

    def replay(self, ctx: ProviderContext, provider_job_id: str, params: ImpactParams) -> JobSnapshot:
        current = self._fetch(ctx, provider_job_id, params.api_root)
        if not current.Replayable:
            raise ReplayNotAllowed(
                f"impact job {provider_job_id} is {current.Status.value} and not Replayable; submit a new export instead"
            )
        self.request(ctx, "PUT", f"{self._root(ctx, params.api_root)}/Jobs/{provider_job_id}/Replay", job_id=provider_job_id)
        return self.get(ctx, provider_job_id, params)

    def _fetch(self, ctx: ProviderContext, provider_job_id: str, api_root: str) -> ImpactJob:
        response = self.request(ctx, "GET", f"{self._root(ctx, api_root)}/Jobs/{provider_job_id}", job_id=provider_job_id)
        return parse_body(response, ImpactJob, provider=self.name)

    def _snapshot(self, job: ImpactJob, api_root: str, ctx: ProviderContext) -> JobSnapshot:
        files: list[RemoteFile] = []
        if job.Status is ImpactJobStatus.COMPLETED:
            files.append(
                RemoteFile(
                    name=f"impact-{job.Type.value}-{job.Id}.csv",
                    url=job.ResultUri or f"{self._root(ctx, api_root)}/Jobs/{job.Id}/Download",
                    authenticated=True,
                )
            )
        return JobSnapshot(
            provider_job_id=job.Id,
            state=STATUS_MAP[job.Status],
            raw_status=job.Status.value,
            message=job.StatusMessage,
            percent_complete=job.PercentageComplete,
            records_processed=job.RecordsProcessed,
            files=files,
        )
