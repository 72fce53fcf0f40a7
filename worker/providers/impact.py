"""impact.com Jobs: track a job (or start a report export that yields one), poll it, download ResultUri.

Specs: impact.com Partner Jobs v16 / Partner Reports v16 (``/Mediapartners/{AccountSID}``) and
Brand Jobs v14 / Brand Reports v14 (``/Advertisers/{AccountSID}``).

What we send, always with HTTP Basic ``AccountSID:AuthToken`` and ``Accept: application/json``
("the default format is XML"): ``GET /{root}/{sid}/ReportExport/{report_id}?<report_params>`` to
start an export (parameters checked at enqueue: partner ``START_DATE``/``END_DATE`` as
``YYYY-MM-DD``, brand ``StartDate``/``EndDate`` as date-times, ``ResultFormat`` CSV only);
``GET /{root}/{sid}/Jobs/{id}`` to poll; ``PUT .../Jobs/{id}/Replay`` for ``retry``; and
``GET {ResultUri}?Mode=Stream`` to download. ``GET /{root}/{sid}/Reports`` lists the reports an
account can run and ``GET /{root}/{sid}/Reports/{id}/MetaData`` a report's filters and columns
(``export-worker reports impact``).

**Report parameters are checked against the report's MetaData before a job is created**: at
enqueue when the enqueuing process has the credential, and always in the worker's submit step
before ``ReportExport`` is called (the check that holds when the caller has no credential). The
MetaData is kept in Redis for ``METADATA_TTL_SECONDS`` per account, API and report, so a
deployment reads it about once an hour per report, from the same request budget as every call.

**Download: Mode=Stream.** Without it the API answers 302 to a signed storage URL on a host no
public source names, so an allowlist for it would be a guess; with ``Mode=Stream`` the file comes
from ``api.impact.com`` itself, the host whose credentials we already hold. Should the API redirect
anyway, the redirect is still followed only to an allowlisted host (``DOWNLOAD_HOSTS``) and without
the credential. A 202 (the job is not done) is "download again later", never an empty file.

``ERROR`` is not terminal: impact.com retries the job itself every 15 minutes, up to 5 times, before
it becomes ``FAILED``. We map it to :attr:`JobState.RETRYING` so the engine polls slowly.
"""

from __future__ import annotations

import re
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

from worker.errors import AuthError, InvalidRequest, NotFound, PermanentError, ReplayNotAllowed
from worker.http import parse_body
from worker.models import JobSnapshot, JobState, RemoteFile
from worker.providers.auth import basic_auth
from worker.providers.base import (
    Budget,
    Lookup,
    Operation,
    Provider,
    ProviderContext,
    RateLimit,
    ReportDetail,
    ReportParameter,
    ReportSummary,
)
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
EXPORT_PARAMETERS = {
    "Mediapartners": ("SUBAID", "START_DATE", "END_DATE", "ResultFormat"),
    "Advertisers": ("SUBAID", "StartDate", "EndDate", "CONV_CURRENCY", "ResultFormat"),
}
"""The query parameters ReportExport itself documents (partner v16, brand v14), whatever the report."""
METADATA_TTL_SECONDS = 3600.0
"""How long a report's MetaData is trusted: a new custom filter is seen within the hour, and checking a
report costs about one request an hour of the account's 1,000."""

# -- UNVERIFIED: every impact.com fact no public source confirms lives here (listed in README) -------
UNVERIFIED = {
    "storage host": "the host of the Download 302 is not documented: we use Mode=Stream and allow only the API host",
    "quota windows": "rolling or reset at a fixed time: we pace the budgets as rolling (GCRA)",
    "X-RateLimit-Reset": "a Unix time or delta-seconds: worker.http.parse_rate_limit_reset reads both",
    "result retention": "90 days (partner Jobs v16) or indefinitely (other docs): a 404 then fails the file",
    "END_DATE inclusive": "assumed inclusive: the example schedule asks START_DATE = END_DATE for one day",
    "required filters": "MetaData lists filters without saying which are required: we require the date range "
    "(START_DATE/END_DATE, StartDate/EndDate) when the report filters by it, and take the others as optional",
    "filter names": "ReportExport is assumed to take exactly the report's MetaData Filters plus its own documented "
    "parameters: any other report_params name is refused",
    "filter types": "DataType values differ between the specs (partner Integer, brand examples DATE): compared "
    "case-insensitively, Integer, Decimal and Boolean values are checked, dates only as the ReportExport spec says",
    "brand MetaData 404": "the brand spec lists only a 200 for MetaData: a 404 is read as no such report, as the "
    "partner spec documents",
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

    @field_validator("ResultUri")
    @classmethod
    def _a_url(cls, value: str | None) -> str | None:
        """Refused here, where it names the field, rather than when the download URL is built from it."""
        if value is not None:
            try:
                httpx.URL(value)
            except httpx.InvalidURL as exc:
                raise ValueError(f"not a URL ({exc})") from None
        return value


class ImpactJobReference(_Wire):
    """What a report export (and other job-creating endpoints) answer: where the job lives."""

    Status: str | None = None
    QueuedUri: str = Field(min_length=1)
    ResultUri: str | None = None

    @property
    def job_id(self) -> str:
        return self.QueuedUri.rstrip("/").rsplit("/", 1)[-1]


class ImpactReport(_Wire):
    """One entry of ``GET /{root}/{sid}/Reports`` (every field optional in both specs)."""

    Id: str = Field(min_length=1)
    Name: str = ""
    Category: str = ""
    Description: str = ""
    ApiAccessible: bool = False


class ImpactReports(_Wire):
    Reports: list[ImpactReport] = []


class ImpactReportFilter(_Wire):
    Name: str = Field(min_length=1)
    DataType: str = ""
    Format: str = ""


class ImpactReportAttribute(_Wire):
    Name: str = Field(min_length=1)
    DataType: str = ""
    Description: str = ""


class ImpactReportMetadata(_Wire):
    """``GET /{root}/{sid}/Reports/{id}/MetaData``: the filters a report takes and the columns it returns."""

    Id: str = ""
    Name: str = ""
    Description: str = ""
    Filters: list[ImpactReportFilter] = []
    Attributes: list[ImpactReportAttribute] = []


PARTNER_DATES = ("START_DATE", "END_DATE")
"""Partner Reports v16 ReportExport: required, ``YYYY-MM-DD``."""
BRAND_DATES = ("StartDate", "EndDate")
"""Brand Reports v14 ReportExport: optional ISO 8601 date-times."""


REPORT_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
API_ROOTS = ("Mediapartners", "Advertisers")


def _api_root(scope: str | None) -> str:
    if scope is None:
        return API_ROOTS[0]
    if scope not in API_ROOTS:
        raise InvalidRequest(f"impact API root {scope!r} is not known: use Mediapartners (partner) or Advertisers (brand)")
    return scope


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


DATE_RANGE = (("START_DATE", "StartDate"), ("END_DATE", "EndDate"))
"""A date-range filter's two spellings (partner, brand); giving either satisfies a report that filters by it."""


def _date_name(api_root: str, spellings: tuple[str, str]) -> str:
    return spellings[0] if api_root == "Mediapartners" else spellings[1]


def required_parameters(metadata: ImpactReportMetadata, api_root: str) -> list[str]:
    """What a ReportExport of this report must carry (see ``UNVERIFIED["required filters"]``)."""
    if api_root == "Mediapartners":
        return list(PARTNER_DATES)
    names = {item.Name for item in metadata.Filters}
    return [_date_name(api_root, pair) for pair in DATE_RANGE if names.intersection(pair)]


def _value_problem(data_type: str, value: str) -> str | None:
    kind = data_type.strip().lower()
    if kind.startswith("int") and not value.lstrip("+-").isdigit():
        return f"must be an integer ({data_type}), got {value!r}"
    if kind.startswith(("decimal", "float", "double", "number")):
        try:
            float(value)
        except ValueError:
            return f"must be a number ({data_type}), got {value!r}"
    if kind.startswith("bool") and value.lower() not in ("true", "false"):
        return f"must be true or false ({data_type}), got {value!r}"
    return None


def metadata_problems(metadata: ImpactReportMetadata, params: ImpactParams) -> list[str]:
    """Why ``params.report_params`` do not fit the report's MetaData (empty when they do)."""
    filters = {item.Name: item for item in metadata.Filters}
    accepted = sorted({*filters, *EXPORT_PARAMETERS[params.api_root]})
    given = params.report_params
    problems = []
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        problems.append(f"{', '.join(unknown)}: not a parameter of this report (it takes {', '.join(accepted)})")
    for pair in DATE_RANGE:
        if filters.keys() & set(pair) and not given.keys() & set(pair):
            problems.append(f"{_date_name(params.api_root, pair)}: missing; the report filters by it")
    for name, value in given.items():
        if name in filters and (problem := _value_problem(filters[name].DataType, value)):
            problems.append(f"{name}: {problem}")
    return problems


class ImpactParams(BaseModel):
    """Either track a job someone already started (``job_id``) or start a report export (``report_id``)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    report_id: str | None = Field(None, min_length=1, pattern=REPORT_ID.pattern)
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

    def budgets(self, operation: Operation, params: ImpactParams | None) -> list[Budget]:
        account = Budget("requests", ACCOUNT_RATE)
        if operation is Operation.CREATE and params is not None and params.report_id is not None:
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

    def check(self, ctx: ProviderContext, params: ImpactParams, lookup: Lookup) -> None:
        """A report export's parameters against the report's MetaData (kept per account and report)."""
        report_id = params.report_id
        if report_id is None:
            return
        key = f"{ctx.credential.account_sid}:{params.api_root}:metadata:{report_id}"
        text = lookup(key, METADATA_TTL_SECONDS, lambda: self._metadata(ctx, report_id, params.api_root).model_dump_json())
        problems = metadata_problems(ImpactReportMetadata.model_validate_json(text), params)
        if problems:
            raise InvalidRequest(
                f"invalid impact report_params for report {report_id!r}: {'; '.join(problems)}; "
                f"`export-worker reports impact {report_id} --api-root {params.api_root}` shows its parameters"
            )

    def reports(self, ctx: ProviderContext, scope: str | None) -> list[ReportSummary]:
        api_root = _api_root(scope)
        response = self.request(ctx, "GET", f"{self._root(ctx, api_root)}/Reports")
        listing = parse_body(response, ImpactReports, provider=self.name)
        return [
            ReportSummary(
                id=item.Id, name=item.Name, category=item.Category, description=item.Description, exportable=item.ApiAccessible
            )
            for item in listing.Reports
        ]

    def report(self, ctx: ProviderContext, report_id: str, scope: str | None) -> ReportDetail:
        api_root = _api_root(scope)
        metadata = self._metadata(ctx, report_id, api_root)
        return ReportDetail(
            id=metadata.Id or report_id,
            name=metadata.Name,
            description=metadata.Description,
            parameters=[ReportParameter(name=f.Name, data_type=f.DataType, format=f.Format) for f in metadata.Filters],
            required=required_parameters(metadata, api_root),
            columns=[attribute.Name for attribute in metadata.Attributes],
        )

    def _metadata(self, ctx: ProviderContext, report_id: str, api_root: str) -> ImpactReportMetadata:
        if not REPORT_ID.match(report_id):
            raise InvalidRequest(f"report id {report_id!r} is not valid: use letters, digits, '_', '.' or '-'")
        url = f"{self._root(ctx, api_root)}/Reports/{report_id}/MetaData"
        try:
            response = self.request(ctx, "GET", url)
        except NotFound:
            raise InvalidRequest(
                f"impact has no report {report_id!r} that account {ctx.credential.account_sid} can run through the "
                f"{api_root} API; `export-worker reports impact --api-root {api_root}` lists them"
            ) from None
        return parse_body(response, ImpactReportMetadata, provider=self.name)

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
