"""A provider bound to one named credential: pooled HTTP clients, shared rate limits, typed params.

The engine talks to providers only through :class:`ProviderGateway`, so rate limiting and
credential resolution happen the same way for every provider.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import httpx

from worker.errors import PermanentError, RetryLater
from worker.models import JobSnapshot
from worker.providers import get_provider
from worker.providers.base import Operation, ProviderContext
from worker.security.urls import UrlGuard
from worker.settings import Settings
from worker.store import ExportStore


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
            headers={"User-Agent": "async-export-worker/0.1"},
            transport=self.transport,
        )
        return ProviderContext(client=client, credential=credential, credential_name=self.credential_name)

    @cached_property
    def signed_download_client(self) -> httpx.Client:
        """No auth at all: signed storage URLs must never receive the provider token."""
        return httpx.Client(timeout=self.settings.http_timeout_seconds, transport=self.transport)

    @cached_property
    def url_guard(self) -> UrlGuard:
        base_host = httpx.URL(self.settings.base_urls.get(self.provider.name, self.provider.default_base_url))
        hosts = self.settings.download_hosts.get(self.provider.name, list(self.provider.default_download_hosts))
        return UrlGuard([*hosts, base_host.netloc.decode()], allow_private=self.settings.allow_private_networks)

    def params(self, raw: dict[str, Any]) -> Any:
        return self.provider.validate(raw)

    def _throttle(self, operation: Operation) -> None:
        limit = self.provider.rate_limits.get(operation)
        if limit is None:
            return
        bucket = f"{self.provider.name}:{self.credential_name}:{operation.value}"
        wait = self.store.rate_limit_wait(bucket, limit.requests, limit.per_seconds)
        if wait > 0:
            raise RetryLater(f"{self.provider.name} {operation.value} rate limit reached locally", wait)

    def create(self, params: dict[str, Any]) -> JobSnapshot:
        self._throttle(Operation.CREATE)
        return self.provider.create(self.context, self.params(params))

    def get(self, provider_job_id: str, params: dict[str, Any]) -> JobSnapshot:
        self._throttle(Operation.POLL)
        return self.provider.get(self.context, provider_job_id, self.params(params))

    def replay(self, provider_job_id: str, params: dict[str, Any]) -> JobSnapshot:
        return self.provider.replay(self.context, provider_job_id, self.params(params))

    def split(self, params: dict[str, Any], snapshot: JobSnapshot) -> list[dict[str, Any]] | None:
        children = self.provider.split(self.params(params), snapshot, self.settings.split_min_vehicles)
        if not children:
            return None
        return [child.model_dump(mode="json", by_alias=True, exclude_none=True) for child in children]

    def download_client(self, authenticated: bool) -> httpx.Client:
        return self.context.client if authenticated else self.signed_download_client
