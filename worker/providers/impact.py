"""impact.com Jobs: track a job (or start a report export that yields one), poll it, download ResultUri.

Specs: impact.com Partner Jobs v16 / Partner Reports v16 (``/Mediapartners/{AccountSID}``) and
Brand Jobs v14 / Brand Reports v14 (``/Advertisers/{AccountSID}``).

What we send, always with HTTP Basic ``AccountSID:AuthToken`` and ``Accept: application/json``
("the default format is XML"): ``GET /{root}/{sid}/ReportExport/{report_id}?<report_params>`` to
start an export (parameters checked at enqueue: partner ``START_DATE``/``END_DATE`` as
``YYYY-MM-DD``, brand ``StartDate``/``EndDate`` as date-times, ``ResultFormat`` CSV only);
``GET /{root}/{sid}/Jobs/{id}`` to poll; ``PUT .../Jobs/{id}/Replay`` for ``retry``; and
``GET {ResultUri}?Mode=Stream`` to download.

**Download: Mode=Stream.** Without it the API answers 302 to a signed storage URL on a host no
public source names, so an allowlist for it would be a guess; with ``Mode=Stream`` the file comes
from ``api.impact.com`` itself, the host whose credentials we already hold. Should the API redirect
anyway, the redirect is still followed only to an allowlisted host (``DOWNLOAD_HOSTS``) and without
the credential. A 202 (the job is not done) is "download again later", never an empty file.

``ERROR`` is not terminal: impact.com retries the job itself every 15 minutes, up to 5 times, before
it becomes ``FAILED``. We map it to :attr:`JobState.RETRYING` so the engine polls slowly.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.errors import AuthError, PermanentError, ReplayNotAllowed
from worker.http import parse_body
from worker.models import JobSnapshot, JobState, RemoteFile
from worker.providers.auth import basic_auth
from worker.providers.base import Budget, Operation, Provider, ProviderContext, RateLimit
from worker.settings import Credential

# -- Documented (providers' docs; not in the specs themselves) ---------------------------------------
ACCOUNT_RATE = RateLimit(1000, 3600.0)
"""Default: 1,000 requests per hour per account, every endpoint together."""
REPORT_EXPORT_QUOTA = RateLimit(100, 86400.0)
"""ReportExport: 100 per day (ClickExport's 10/day does not apply: we never call ClickExport)."""
ACCEPT_JSON = {"Accept": "application/json"}
STREAM = {"Mode": "Stream"}
"""Download query: the file itself instead of a 302 to signed storage."""

RESULT_FORMATS = ("CSV",)
"""What we parse. The specs also offer JSON and XML (``ResultFormat``); those are refused at enqueue."""

# -- UNVERIFIED: every impact.com fact no public source confirms lives here (listed in README) -------
UNVERIFIED = {
    "storage host": "the host of the Download 302 is not documented: we use Mode=Stream and allow only the API host",
    "quota windows": "rolling or reset at a fixed time: we pace the budgets as rolling (GCRA)",
    "X-RateLimit-Reset": "a Unix time or delta-seconds: worker.http.parse_rate_limit_reset reads both",
    "result retention": "90 days (partner Jobs v16) or indefinitely (other docs): a 404 then fails the file",
    "END_DATE inclusive": "assumed inclusive: the example schedule asks START_DATE = END_DATE for one day",
}
DOWNLOAD_HOSTS = ("api.impact.com",)


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


REPLAYABLE_STATUSES = frozenset({ImpactJobStatus.COMPLETED, ImpactJobStatus.FAILED, ImpactJobStatus.CANCELLED})


def _status_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("Status") if isinstance(body, dict) else None


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


PARTNER_DATES = ("START_DATE", "END_DATE")
"""Partner Reports v16 ReportExport: required, ``YYYY-MM-DD``."""
BRAND_DATES = ("StartDate", "EndDate")
"""Brand Reports v14 ReportExport: optional ISO 8601 date-times."""


_DAY = TypeAdapter(Annotated[date, Strict()])
_MOMENT = TypeAdapter(AwareDatetime)


def _check_report_params(api_root: str, report_params: dict[str, str]) -> None:
    fmt = report_params.get("ResultFormat", "CSV")
    if fmt not in RESULT_FORMATS:
        raise ValueError(f"ResultFormat {fmt!r} is not supported: this worker parses CSV only; leave it out or set CSV")
    if api_root == "Mediapartners":
        for name in PARTNER_DATES:
            if name not in report_params:
                raise ValueError(f"report_params.{name} is required by partner ReportExport, as YYYY-MM-DD")
            try:
                _DAY.validate_json(f'"{report_params[name]}"')
            except ValidationError:
                raise ValueError(f"report_params.{name} must be YYYY-MM-DD, got {report_params[name]!r}") from None
        if report_params["START_DATE"] > report_params["END_DATE"]:
            raise ValueError("report_params.START_DATE must not be after END_DATE")
        return
    for name in (name for name in BRAND_DATES if name in report_params):
        if not _is_moment(report_params[name]):
            raise ValueError(
                f"report_params.{name} must be an ISO 8601 date-time such as 2026-01-15T00:00:00Z, got {report_params[name]!r}"
            )


def _is_moment(value: str) -> bool:
    """An ISO 8601 date-time with a zone (a bare number would pass pydantic as a Unix time)."""
    try:
        _MOMENT.validate_python(value)
    except ValidationError:
        return False
    return "T" in value


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
        if self.report_id is not None:
            _check_report_params(self.api_root, self.report_params)
        elif self.report_params:
            raise ValueError("report_params belong to a report export (report_id), not to tracking a job")
        return self


class ImpactJobs(Provider):
    name: ClassVar[str] = "impact"
    params_model: ClassVar[type[BaseModel]] = ImpactParams
    default_base_url: ClassVar[str] = "https://api.impact.com"
    default_download_hosts: ClassVar[tuple[str, ...]] = DOWNLOAD_HOSTS
    default_deadline_seconds: ClassVar[float | None] = 3 * 3600
    """5 provider retries 15 minutes apart must fit, with room for the report itself."""
    default_headers: ClassVar[dict[str, str]] = ACCEPT_JSON

    def budgets(self, operation: Operation, params: ImpactParams) -> list[Budget]:
        account = Budget("requests", ACCOUNT_RATE)
        if operation is Operation.CREATE and params.report_id is not None:
            return [Budget("ReportExport", REPORT_EXPORT_QUOTA), account]
        return [account]

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
        if _status_of(response) == "ERROR":  # invalid input may answer 200 with Status ERROR and no job
            raise PermanentError(
                f"impact refused report export {params.report_id!r} with Status ERROR: {response.text[:300]}; "
                "check report_id and report_params against the report's MetaData"
            )
        reference = parse_body(response, ImpactJobReference, provider=self.name)
        return JobSnapshot(
            provider_job_id=reference.job_id,
            state=JobState.QUEUED,
            raw_status=reference.Status or ImpactJobStatus.QUEUED.value,
        )

    def get(self, ctx: ProviderContext, provider_job_id: str, params: ImpactParams) -> JobSnapshot:
        return self._snapshot(self._fetch(ctx, provider_job_id, params.api_root), params.api_root, ctx)

    def replay(self, ctx: ProviderContext, provider_job_id: str, params: ImpactParams) -> JobSnapshot:
        """Replay (``retry``) a COMPLETED, FAILED or CANCELLED job whose type is Replayable; a COMPLETED
        report export is re-run, which refreshes its data."""
        current = self._fetch(ctx, provider_job_id, params.api_root)
        if not current.Replayable or current.Status not in REPLAYABLE_STATUSES:
            raise ReplayNotAllowed(
                f"impact job {provider_job_id} is {current.Status.value} and not Replayable "
                "(only COMPLETED, FAILED or CANCELLED jobs of a replayable type are); submit a new export instead"
            )
        url = f"{self._root(ctx, params.api_root)}/Jobs/{provider_job_id}/Replay"
        try:
            self.request(ctx, "PUT", url, job_id=provider_job_id)
        except AuthError as exc:
            if exc.status_code != 403:
                raise
            raise ReplayNotAllowed(
                f"impact refused to replay job {provider_job_id} (HTTP 403: not replayable in its current state); "
                "submit a new export instead"
            ) from None
        return self.get(ctx, provider_job_id, params)

    def _fetch(self, ctx: ProviderContext, provider_job_id: str, api_root: str) -> ImpactJob:
        response = self.request(ctx, "GET", f"{self._root(ctx, api_root)}/Jobs/{provider_job_id}", job_id=provider_job_id)
        return parse_body(response, ImpactJob, provider=self.name)

    def _snapshot(self, job: ImpactJob, api_root: str, ctx: ProviderContext) -> JobSnapshot:
        files: list[RemoteFile] = []
        default_uri = f"{self._root(ctx, api_root)}/Jobs/{job.Id}/Download"
        if job.Status is ImpactJobStatus.COMPLETED:
            files.append(
                RemoteFile(
                    name=f"impact-{job.Type.value}-{job.Id}.csv",
                    url=str(httpx.URL(job.ResultUri or default_uri).copy_merge_params(STREAM)),
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
