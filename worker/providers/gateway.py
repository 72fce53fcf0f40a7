"""A provider bound to one named credential: pooled HTTP clients, shared rate limits, typed params.

The engine talks to providers only through :class:`ProviderGateway`, so rate limiting and
credential resolution happen the same way for every provider.

Budgets (rate limits and daily quotas) live in Redis, so every worker spends from the same ones; a
429 from the provider puts a hold on the credential that every worker honours until the time the
provider named. A spent budget raises :class:`RetryLater` saying until when, and the engine
reschedules the step (at most ``SLOW_POLL_SECONDS`` later, then it checks again) instead of retrying.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any, TypeVar

import httpx

from worker.errors import PermanentError, RetryLater
from worker.models import JobSnapshot
from worker.parsing.schema import RowSchema
from worker.providers import get_provider
from worker.providers.base import Operation, ProviderContext, ReportDetail, ReportSummary, wire_params
from worker.security.urls import UrlGuard
from worker.settings import Settings
from worker.store import ExportStore
from worker.store.limits import Refusal, Spend, Spent

T = TypeVar("T")


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every provider client of the process. Each client would load the CA bundle again
    (about 0.8 MiB and 18 ms here), and there are two per credential in each pool process: with 100
    credentials, hundreds of MB. httpx's own defaults (certifi, ``SSL_CERT_FILE``) still decide what it trusts."""
    return httpx.create_ssl_context()


class ProviderGateway:
    def __init__(
        self,
        provider_name: str,
        credential_name: str,
        settings: Settings,
        store: ExportStore,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.provider = get_provider(provider_name)
        self.credential_name = credential_name
        self.settings = settings
        self.store = store
        self.transport = transport
        """Replaces the network (httpx.MockTransport) in unit tests and benchmarks."""

    @cached_property
    def context(self) -> ProviderContext:
        credential = self.settings.credentials.get(self.credential_name)
        if credential is None:
            configured = ", ".join(sorted(self.settings.credentials)) or "none"
            raise PermanentError(
                f"credential {self.credential_name!r} is not configured on the worker (configured: {configured}); "
                f"set EXPORT_WORKER_CREDENTIALS__{self.credential_name.upper()}__... in the worker's environment"
            )
        client = httpx.Client(
            base_url=self.settings.base_urls.get(self.provider.name, self.provider.default_base_url),
            auth=self.provider.auth(credential, self.credential_name),
            timeout=self.settings.http_timeout_seconds,
            headers={"User-Agent": "async-export-worker/0.1", **self.provider.default_headers},
            verify=tls_context(),
            transport=self.transport,
        )
        return ProviderContext(client=client, credential=credential, credential_name=self.credential_name)

    @cached_property
    def signed_download_client(self) -> httpx.Client:
        """No auth at all: signed storage URLs must never receive the provider token."""
        return httpx.Client(timeout=self.settings.http_timeout_seconds, verify=tls_context(), transport=self.transport)

    @cached_property
    def url_guard(self) -> UrlGuard:
        base_host = httpx.URL(self.settings.base_urls.get(self.provider.name, self.provider.default_base_url))
        hosts = self.settings.download_hosts.get(self.provider.name, list(self.provider.default_download_hosts))
        return UrlGuard([*hosts, base_host.netloc.decode()], allow_private=self.settings.allow_private_networks)

    def params(self, raw: dict[str, Any]) -> Any:
        return self.provider.validate(raw)

    @cached_property
    def row_schema(self) -> RowSchema:
        """The provider's declared column types with the deployment's ``COLUMN_TYPES`` overrides."""
        return self.provider.row_schema.with_types(self.settings.column_types.get(self.provider.name, {}))

    @property
    def _hold_bucket(self) -> str:
        return f"{self.provider.name}:{self.credential_name}"

    def _wait(self, seconds: float, message: str) -> RetryLater:
        until = datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds, UTC).isoformat(timespec="seconds")
        return RetryLater(f"{message}; waiting until {until}", min(seconds, self.longest_countdown))

    @property
    def longest_countdown(self) -> float:
        """A long wait is re-checked after this: the longest countdown the engine already uses, which
        the broker's visibility timeout is checked to outlast (a longer one would be redelivered)."""
        return max(self.settings.poll_max_seconds, self.settings.slow_poll_seconds)

    def spend(self, operation: Operation, params: Any) -> Spend:
        """What one call spends from: the credential's hold, then each of its budgets."""
        budgets = tuple(
            (f"{self.provider.name}:{self.credential_name}:{budget.name}", budget.limit.requests, budget.limit.per_seconds)
            for budget in self.provider.budgets(operation, params)
        )
        return Spend(self._hold_bucket, budgets)

    def _refused(self, operation: Operation, params: Any, refusal: Refusal) -> RetryLater:
        if refusal.budget is None:
            return self._wait(refusal.seconds, f"{self.provider.name} answered 429 for credential {self.credential_name!r}")
        budget = self.provider.budgets(operation, params)[refusal.budget]
        return self._wait(
            refusal.seconds,
            f"{self.provider.name} {budget.name} budget of {budget.limit.requests} requests per "
            f"{budget.limit.per_seconds:g}s is spent",
        )

    def _call(self, operation: Operation, params: Any, call: Callable[[], T], spent: Spent | None = None) -> T:
        """``call`` once its budgets allow; ``spent``: what spending them already answered (None: spend now)."""
        refusal = self.store.spend(self.spend(operation, params)) if spent is None else spent.refusal
        if refusal is not None:
            raise self._refused(operation, params, refusal)
        try:
            return call()
        except RetryLater as exc:  # the provider's own 429: every worker waits as long as it asked
            self.store.hold(self._hold_bucket, exc.retry_after)
            raise self._wait(exc.retry_after, str(exc)) from exc

    def create(self, params: dict[str, Any]) -> JobSnapshot:
        typed = self.params(params)
        return self._call(Operation.CREATE, typed, lambda: self.provider.create(self.context, typed))

    def get(self, provider_job_id: str, params: dict[str, Any], spent: Spent | None = None) -> JobSnapshot:
        """The job's state; ``spent``: the poll's budgets were spent already (:meth:`ExportStore.watch_export`)."""
        typed = self.params(params)
        return self._call(Operation.POLL, typed, lambda: self.provider.get(self.context, provider_job_id, typed), spent)

    def replay(self, provider_job_id: str, params: dict[str, Any]) -> JobSnapshot:
        typed = self.params(params)
        return self._call(Operation.POLL, typed, lambda: self.provider.replay(self.context, provider_job_id, typed))

    def describe(self, fetch: Callable[[ProviderContext], T]) -> T:
        """A call that reads what the provider offers: it spends from the same budgets as every call."""
        return self._call(Operation.DESCRIBE, None, lambda: fetch(self.context))

    def lookup(self, key: str, ttl_seconds: float, fetch: Callable[[], str]) -> str:
        """``fetch()`` kept in Redis for ``ttl_seconds``, shared by every process of the deployment; only a
        miss calls the provider (and spends from its budgets)."""
        name = f"{self.provider.name}:{key}"
        kept = self.store.recall(name)
        if kept is not None:
            return kept
        value = self._call(Operation.DESCRIBE, None, fetch)
        self.store.remember(name, value, ttl_seconds)
        return value

    def check(self, params: dict[str, Any]) -> None:
        """The provider's own checks of a request (``Provider.check``), before its job is created."""
        self.provider.check(self.context, self.params(params), self.lookup)

    def reports(self, scope: str | None) -> list[ReportSummary]:
        return self.describe(lambda ctx: self.provider.reports(ctx, scope))

    def report(self, report_id: str, scope: str | None) -> ReportDetail:
        return self.describe(lambda ctx: self.provider.report(ctx, report_id, scope))

    def split(self, params: dict[str, Any], snapshot: JobSnapshot) -> list[dict[str, Any]] | None:
        children = self.provider.split(self.params(params), snapshot, self.settings.split_min_vehicles)
        if not children:
            return None
        return [wire_params(child) for child in children]

    def download_client(self, authenticated: bool) -> httpx.Client:
        return self.context.client if authenticated else self.signed_download_client
