"""The contract between the provider-agnostic engine and one provider module.

A provider translates its wire format into a :class:`JobSnapshot`; the engine only ever looks at
snapshots. Adding a provider means one module implementing :class:`Provider` plus a registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ValidationError

from worker.errors import InvalidRequest, ReplayNotAllowed
from worker.http import send
from worker.models import JobSnapshot
from worker.parsing.schema import RowSchema
from worker.settings import Credential


class Operation(StrEnum):
    CREATE = "create"
    POLL = "poll"
    DOWNLOAD = "download"
    DESCRIBE = "describe"
    """Reading what the provider offers (its reports and their parameters), never a job."""


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` per ``per_seconds``, shared by every worker through Redis."""

    requests: int
    per_seconds: float


@dataclass(frozen=True)
class Budget:
    """One named request budget a call spends from (a rate limit, or a daily quota)."""

    name: str
    limit: RateLimit


@dataclass(frozen=True)
class ProviderContext:
    """What a provider call gets: an HTTP client bound to base URL and auth, and the credential."""

    client: httpx.Client
    credential: Credential
    credential_name: str


class ReportSummary(BaseModel):
    """One report a provider account offers (``export-worker reports``)."""

    id: str
    name: str = ""
    category: str = ""
    description: str = ""
    exportable: bool
    """False for reports the provider serves only in its web app."""


class ReportParameter(BaseModel):
    name: str
    data_type: str = ""
    format: str = ""


class ReportDetail(BaseModel):
    """What one report takes and returns, as the provider describes it."""

    id: str
    name: str = ""
    description: str = ""
    parameters: list[ReportParameter] = []
    required: list[str] = []
    """Parameters a request must give (documented ones, and those we require; see the provider module)."""
    columns: list[str] = []


Lookup = Callable[[str, float, Callable[[], str]], str]
"""``lookup(key, ttl_seconds, fetch)``: ``fetch()``'s text, kept for ``ttl_seconds`` under ``key`` so
every process of the deployment asks the provider once per key and period (see the gateway)."""


class Provider:
    """Base class of providers. Subclasses set the class attributes and implement create/get."""

    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    default_base_url: ClassVar[str]
    default_download_hosts: ClassVar[tuple[str, ...]] = ()
    default_deadline_seconds: ClassVar[float | None] = None
    rate_limits: ClassVar[dict[Operation, RateLimit]] = {}
    row_schema: ClassVar[RowSchema] = RowSchema()
    default_headers: ClassVar[dict[str, str]] = {}
    """Sent on every API call (impact.com answers XML unless asked for JSON)."""

    def validate(self, params: dict[str, Any]) -> Any:
        """Caller parameters as the typed model, naming each offending field when they don't fit."""
        try:
            return self.params_model.model_validate(params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'params'}: {error['msg']}" for error in exc.errors()
            )
            raise InvalidRequest(f"invalid {self.name} parameters: {problems}") from exc

    def auth(self, credential: Credential, credential_name: str) -> httpx.Auth:
        raise NotImplementedError

    def request(
        self, ctx: ProviderContext, method: str, url: str, *, job_id: str | None = None, json: Any = None
    ) -> httpx.Response:
        """One API call through the shared status-code mapping (429, 5xx, 401/403, 404 on a job)."""
        return send(
            ctx.client,
            method,
            url,
            provider=self.name,
            credential_name=ctx.credential_name,
            job_id=job_id,
            json=json,
            headers=self.default_headers,
        )

    def create(self, ctx: ProviderContext, params: Any) -> JobSnapshot:
        raise NotImplementedError

    def get(self, ctx: ProviderContext, provider_job_id: str, params: Any) -> JobSnapshot:
        raise NotImplementedError

    def replay(self, ctx: ProviderContext, provider_job_id: str, params: Any) -> JobSnapshot:
        raise ReplayNotAllowed(f"{self.name} jobs cannot be replayed; submit a new export instead")

    def budgets(self, operation: Operation, params: Any) -> list[Budget]:
        """The budgets one call spends from, scarcest first; by default one per-operation rate limit.

        A poll's are spent in the round trip that reads its job, so they are asked for with ``params`` None."""
        limit = self.rate_limits.get(operation)
        return [Budget(operation.value, limit)] if limit else []

    def plan(self, params: Any) -> list[BaseModel]:
        """The provider jobs one request becomes before anything is sent (documented size limits)."""
        return [params]

    def warnings(self, params: Any, now: datetime) -> list[str]:
        """Warnings recorded on the export at submit (e.g. data that may still change)."""
        return []

    def table_name(self, params: Any) -> str:
        """The postgres sink's default table: one per provider report."""
        return self.name

    def split(self, params: Any, snapshot: JobSnapshot, min_batch: int) -> list[BaseModel] | None:
        """Smaller requests to try when a job failed for being too large; None when splitting can't help."""
        return None

    def check(self, ctx: ProviderContext, params: Any, lookup: Lookup) -> None:
        """Refuse (``InvalidRequest``) what only the provider's own description can tell is wrong, before a
        job is created; ``lookup`` caches what it reads. Nothing to check by default."""

    def reports(self, ctx: ProviderContext, scope: str | None) -> list[ReportSummary]:
        """The reports the account can run; ``scope`` picks one of the provider's APIs where it has several."""
        raise InvalidRequest(f"{self.name} has no catalogue of reports: it exports one kind of data")

    def report(self, ctx: ProviderContext, report_id: str, scope: str | None) -> ReportDetail:
        raise InvalidRequest(f"{self.name} has no catalogue of reports: it exports one kind of data")


def wire_params(params: BaseModel) -> dict[str, Any]:
    """Parameters as stored on a job record (JSON, provider spelling)."""
    return params.model_dump(mode="json", by_alias=True, exclude_none=True)
