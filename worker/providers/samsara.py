"""Samsara IFTA detail jobs: ``POST /ifta-detail/csv`` then ``GET /ifta-detail/csv/{id}``.

Spec: Samsara Csv API OpenAPI, version 2024-11-18 (``/ifta-detail/csv``). Wire models mirror
Samsara's camelCase exactly (aliases); unknown extra fields are kept so a new field from Samsara
never breaks parsing.

What we send: ``POST /ifta-detail/csv`` with a JSON body ``{"startHour", "endHour"}`` (RFC 3339,
whole hours, ``Z``) plus any of ``vehicleIds`` / ``vehicleTagIds`` / ``vehicleParentTagIds`` as
*comma-separated strings* (vehicle ids may be external ids such as ``samsara.vin:1HGBH41JXMN109186``);
``GET /ifta-detail/csv/{id}`` to poll; each file's ``downloadUrl`` without any credential. A request
over the documented limits is planned into several jobs before anything is sent (:meth:`plan`).
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

import httpx
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from worker.http import parse_body
from worker.models import JobSnapshot, JobState, RemoteFile
from worker.parsing.schema import ColumnType, RowSchema
from worker.providers.auth import BearerAuth
from worker.providers.base import Operation, Provider, ProviderContext, RateLimit
from worker.settings import Credential

# -- Documented limits (spec, IFTACreateIftaDetailJobRequestBody.startHour/endHour/vehicleIds) -------
MAX_VEHICLES = 5000
MAX_VEHICLES_OVER_A_DAY = 1000
"""At most this many vehicles when a job covers more than 24 hours."""
ONE_DAY = timedelta(hours=24)
UNSETTLED = timedelta(hours=72)
""""The most recent 72 hours of data may still be processing and is subject to change"."""

# -- UNVERIFIED: every Samsara fact no public source confirms lives here (listed in README) ------------
COLUMN_TYPES: dict[str, ColumnType] = {
    # snake_case as third-party material shows the IFTA detail file ...
    "device_id": ColumnType.INT,
    "start_ms": ColumnType.INT,
    "end_ms": ColumnType.INT,
    "distance_meters": ColumnType.FLOAT,
    "start_odo_meters": ColumnType.FLOAT,
    "end_odo_meters": ColumnType.FLOAT,
    "start_lat": ColumnType.FLOAT,
    "start_lng": ColumnType.FLOAT,
    "end_lat": ColumnType.FLOAT,
    "end_lng": ColumnType.FLOAT,
    # ... and the camelCase spelling of the same columns, as Samsara's JSON APIs name things.
    "vehicleId": ColumnType.INT,
    "startMs": ColumnType.INT,
    "endMs": ColumnType.INT,
    "distanceMeters": ColumnType.FLOAT,
    "taxableDistanceMeters": ColumnType.FLOAT,
    "startTime": ColumnType.DATETIME,
    "endTime": ColumnType.DATETIME,
}
"""Column types *if* a column of that name is present. No column is required: the header is the schema."""
DOWNLOAD_HOSTS = ("*.amazonaws.com", "*.samsara.com")
"""Where signed ``downloadUrl``s point (the spec's example is ``https://s3.download-url.com``)."""
TOO_MANY_VEHICLES = "limiting the number of vehicles"
"""Phrase of ``details`` on a job that failed for being too large (the spec's ``details`` example)."""
UNVERIFIED = {
    "CSV columns": "names and types in COLUMN_TYPES (snake_case from third-party material, camelCase too); none required",
    "download hosts": "DOWNLOAD_HOSTS; the spec's example is https://s3.download-url.com",
    "too-large phrase": "TOO_MANY_VEHICLES, taken from the spec's details example",
    "1 month": "add_month: the same day and hour of the next calendar month, clamped to its last day",
    "endHour exclusive": "a job covers [startHour, endHour), so planned jobs share their boundary hour",
}


def add_month(moment: datetime) -> datetime:
    """UNVERIFIED meaning of "1 month": the same day and hour of the next calendar month, clamped."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


# ---------------------------------------------------------------------------------------------------

_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_.-]+:[^,\s]+$")
"""An external vehicle id ``<key>:<value>``, e.g. ``samsara.vin:1HGBH41JXMN109186``."""
_TAG_ID = re.compile(r"^[^,\s]+$")


def _id_list(value: Any) -> Any:
    """A list (of ints or strings), a comma-separated string or one id, as a list of distinct items."""
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",")]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]  # e.g. ``-p vehicleIds=1234`` on the CLI, parsed as JSON
    if not isinstance(value, list):
        return value
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ValueError(f"ids must be integers or strings, got {item!r}")
    return list(dict.fromkeys(item.strip() if isinstance(item, str) else item for item in value))


def _vehicle_id(item: int | str) -> int | str:
    """Numeric ids become ints (as the response's ``args.vehicleIds`` are); external ids stay strings."""
    if isinstance(item, str) and item.isdigit():
        item = int(item)
    if isinstance(item, int) and item > 0:
        return item
    if isinstance(item, str) and _EXTERNAL_ID.match(item):
        return item
    raise ValueError(
        f"{item!r} is not a vehicle id: use positive integers or external ids such as 'samsara.vin:1HGBH41JXMN109186'"
    )


VehicleList = Annotated[list[int | str], BeforeValidator(_id_list), Field(min_length=1)]


def _tag_list(value: Any) -> Any:
    items = _id_list(value)
    return [str(item) for item in items] if isinstance(items, list) else items


TagList = Annotated[list[str], BeforeValidator(_tag_list), Field(min_length=1)]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class IftaJobStatus(StrEnum):
    REQUESTED = "Requested"
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    FAILED = "Failed"


STATUS_MAP: dict[IftaJobStatus, JobState] = {
    IftaJobStatus.REQUESTED: JobState.QUEUED,
    IftaJobStatus.PROCESSING: JobState.RUNNING,
    IftaJobStatus.COMPLETED: JobState.SUCCEEDED,
    IftaJobStatus.FAILED: JobState.FAILED,
}


class IftaJobArgs(_Wire):
    end_hour: str
    start_hour: str
    vehicle_ids: list[int] = []


class IftaFile(_Wire):
    created_at_time: str | None = None
    download_url: str
    download_url_expiration_time: datetime | None = None
    name: str
    record_count: int | None = None


class IftaJob(_Wire):
    args: IftaJobArgs
    job_id: str = Field(min_length=1)
    job_status: IftaJobStatus
    requested_at_time: str
    started_at_time: str | None = None
    completed_at_time: str | None = None
    failed_at_time: str | None = None
    details: str | None = None
    files: list[IftaFile] | None = None


class IftaJobEnvelope(BaseModel):
    data: IftaJob


class IftaDetailParams(_Wire):
    """What a caller submits; validated at enqueue time so bad input never reaches Redis."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    start_hour: AwareDatetime
    end_hour: AwareDatetime
    vehicle_ids: VehicleList | None = None
    vehicle_tag_ids: TagList | None = None
    vehicle_parent_tag_ids: TagList | None = None

    @field_validator("start_hour", "end_hour")
    @classmethod
    def _whole_hour(cls, value: datetime) -> datetime:
        if value.minute or value.second or value.microsecond:
            raise ValueError("must be on a whole hour, e.g. 2026-11-24T00:00:00Z")
        return value

    @field_validator("vehicle_ids")
    @classmethod
    def _vehicle_ids(cls, value: list[int | str] | None) -> list[int | str] | None:
        if value is None:
            return None
        return list(dict.fromkeys(_vehicle_id(item) for item in value))

    @field_validator("vehicle_tag_ids", "vehicle_parent_tag_ids")
    @classmethod
    def _tag_ids(cls, value: list[str] | None) -> list[str] | None:
        bad = [item for item in value or [] if not _TAG_ID.match(item)]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad[:5]))} is not a tag id")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> IftaDetailParams:
        if self.start_hour >= self.end_hour:
            raise ValueError(f"startHour {self.start_hour.isoformat()} must be before endHour {self.end_hour.isoformat()}")
        return self

    def wire(self) -> dict[str, str]:
        """The create body: RFC 3339 hours with ``Z``, filters as comma-separated strings."""
        body: dict[str, str] = {}
        for key, value in self.model_dump(mode="json", by_alias=True, exclude_none=True).items():
            body[key] = ",".join(map(str, value)) if isinstance(value, list) else value.replace("+00:00", "Z")
        return body

    def covering(self, start: datetime, end: datetime, vehicles: list[int | str] | None) -> IftaDetailParams:
        return self.model_copy(update={"start_hour": start, "end_hour": end, "vehicle_ids": vehicles})


def _tiles(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at month steps: consecutive, no gap, no overlap, none longer than a month."""
    tiles = []
    while start < end:
        tiles.append((start, min(add_month(start), end)))
        start = tiles[-1][1]
    return tiles


def _batches(items: list[int | str], limit: int) -> list[list[int | str]]:
    """Even batches of at most ``limit`` items; each item in exactly one batch, order kept."""
    count = -(-len(items) // limit)
    size, extra = divmod(len(items), count)
    batches, at = [], 0
    for index in range(count):
        step = size + (index < extra)
        batches.append(items[at : at + step])
        at += step
    return batches


class SamsaraIftaDetail(Provider):
    name: ClassVar[str] = "samsara"
    params_model: ClassVar[type[BaseModel]] = IftaDetailParams
    default_base_url: ClassVar[str] = "https://api.samsara.com"
    default_download_hosts: ClassVar[tuple[str, ...]] = DOWNLOAD_HOSTS
    default_deadline_seconds: ClassVar[float | None] = 6 * 3600
    rate_limits: ClassVar[dict[Operation, RateLimit]] = {
        Operation.CREATE: RateLimit(100, 60.0),
        Operation.POLL: RateLimit(5, 1.0),
    }
    row_schema: ClassVar[RowSchema] = RowSchema(types=COLUMN_TYPES)

    def table_name(self, params: Any) -> str:
        return "samsara_ifta_detail"

    def auth(self, credential: Credential, credential_name: str) -> httpx.Auth:
        return BearerAuth.from_credential(credential, credential_name, self.name)

    def create(self, ctx: ProviderContext, params: IftaDetailParams) -> JobSnapshot:
        response = self.request(ctx, "POST", "/ifta-detail/csv", json=params.wire())
        return self._snapshot(parse_body(response, IftaJobEnvelope, provider=self.name).data)

    def get(self, ctx: ProviderContext, provider_job_id: str, params: IftaDetailParams) -> JobSnapshot:
        response = self.request(ctx, "GET", f"/ifta-detail/csv/{provider_job_id}", job_id=provider_job_id)
        return self._snapshot(parse_body(response, IftaJobEnvelope, provider=self.name).data)

    def plan(self, params: IftaDetailParams) -> list[BaseModel]:
        """Jobs within the documented limits: month tiles of the range × vehicle batches per tile.

        Vehicles behind tag filters are unknown before the provider resolves them; those requests
        rely on the reactive :meth:`split` when the provider says the job is too large.
        """
        jobs: list[BaseModel] = []
        for start, end in _tiles(params.start_hour, params.end_hour):
            limit = MAX_VEHICLES_OVER_A_DAY if end - start > ONE_DAY else MAX_VEHICLES
            vehicles = params.vehicle_ids
            batches = _batches(vehicles, limit) if vehicles else [vehicles]
            jobs += [params.covering(start, end, batch) for batch in batches]
        return jobs

    def warnings(self, params: IftaDetailParams, now: datetime) -> list[str]:
        if params.end_hour <= now - UNSETTLED:
            return []
        return [
            f"samsara: the range ends {params.end_hour.isoformat()}, within the most recent 72 hours; Samsara says that "
            "data may still change, so a later export of the same range can differ"
        ]

    def split(self, params: IftaDetailParams, snapshot: JobSnapshot, min_batch: int) -> list[BaseModel] | None:
        """Bisect the vehicle list of a job that failed for being too large."""
        if TOO_MANY_VEHICLES not in (snapshot.message or ""):
            return None
        resolved: list[int | str] = (snapshot.resolved_params or {}).get("vehicleIds") or params.vehicle_ids or []
        if len(resolved) <= min_batch:
            return None
        middle = max(min_batch, len(resolved) // 2)
        return [params.covering(params.start_hour, params.end_hour, batch) for batch in (resolved[:middle], resolved[middle:])]

    def _snapshot(self, job: IftaJob) -> JobSnapshot:
        return JobSnapshot(
            provider_job_id=job.job_id,
            state=STATUS_MAP[job.job_status],
            raw_status=job.job_status.value,
            message=job.details,
            files=[
                RemoteFile(
                    name=item.name,
                    url=item.download_url,
                    expires_at=item.download_url_expiration_time,
                    record_count=item.record_count,
                )
                for item in job.files or []
            ],
            resolved_params=job.args.model_dump(by_alias=True, include={"start_hour", "end_hour", "vehicle_ids"}),
        )
