"""Samsara IFTA detail jobs: ``POST /ifta-detail/csv`` then ``GET /ifta-detail/csv/{id}``.

Wire models mirror Samsara's camelCase exactly (aliases); unknown extra fields are kept so a new
field from Samsara never breaks parsing. Facts marked *verify* in providers.md live only here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from worker.http import parse_body
from worker.models import JobSnapshot, JobState, RemoteFile
from worker.parsing.schema import ColumnType, RowSchema
from worker.providers.auth import BearerAuth
from worker.providers.base import Operation, Provider, ProviderContext, RateLimit
from worker.settings import Credential

TOO_MANY_VEHICLES = "limiting the number of vehicles"
"""Phrase of ``details`` on a job that failed for being too large (verify)."""


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
    vehicle_ids: list[int] | None = Field(None, min_length=1)
    vehicle_tag_ids: list[str] | None = Field(None, min_length=1)
    vehicle_parent_tag_ids: list[str] | None = Field(None, min_length=1)

    @field_validator("start_hour", "end_hour")
    @classmethod
    def _whole_hour(cls, value: datetime) -> datetime:
        if value.minute or value.second or value.microsecond:
            raise ValueError("must be on a whole hour, e.g. 2026-11-24T00:00:00Z")
        return value

    @field_validator("vehicle_ids")
    @classmethod
    def _positive_ids(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(vehicle_id <= 0 for vehicle_id in value):
            raise ValueError("vehicle ids must be positive integers")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> IftaDetailParams:
        if self.start_hour >= self.end_hour:
            raise ValueError(f"startHour {self.start_hour.isoformat()} must be before endHour {self.end_hour.isoformat()}")
        return self

    def wire(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for key in ("startHour", "endHour"):
            body[key] = body[key].replace("+00:00", "Z")
        return body


class SamsaraIftaDetail(Provider):
    name: ClassVar[str] = "samsara"
    params_model: ClassVar[type[BaseModel]] = IftaDetailParams
    default_base_url: ClassVar[str] = "https://api.samsara.com"
    default_download_hosts: ClassVar[tuple[str, ...]] = ("*.amazonaws.com", "*.samsara.com")
    default_deadline_seconds: ClassVar[float | None] = 6 * 3600
    rate_limits: ClassVar[dict[Operation, RateLimit]] = {
        Operation.CREATE: RateLimit(100, 60.0),
        Operation.POLL: RateLimit(5, 1.0),
    }
    row_schema: ClassVar[RowSchema] = RowSchema(
        types={
            "vehicleId": ColumnType.INT,
            "jurisdiction": ColumnType.STR,
            "startTime": ColumnType.DATETIME,
            "endTime": ColumnType.DATETIME,
            "distanceMeters": ColumnType.FLOAT,
            "taxableDistanceMeters": ColumnType.FLOAT,
        },
        required=frozenset({"vehicleId", "jurisdiction"}),
    )

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

    def split(self, params: IftaDetailParams, snapshot: JobSnapshot, min_batch: int) -> list[BaseModel] | None:
        """Bisect the vehicle list of a job that failed for being too large."""
        if TOO_MANY_VEHICLES not in (snapshot.message or ""):
            return None
        resolved = (snapshot.resolved_params or {}).get("vehicleIds") or params.vehicle_ids or []
        if len(resolved) <= min_batch:
            return None
        middle = max(min_batch, len(resolved) // 2)
        batches = [resolved[:middle], resolved[middle:]]
        return [IftaDetailParams(start_hour=params.start_hour, end_hour=params.end_hour, vehicle_ids=batch) for batch in batches]

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
