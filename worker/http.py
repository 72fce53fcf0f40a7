"""Shared HTTP plumbing: one place maps status codes and transport failures to our error classes.

Providers call :func:`send`; they never look at status codes themselves, so 429/5xx/401 handling
is identical for every provider.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from worker.errors import AuthError, JobNotFound, NotFound, PayloadError, PermanentError, RetryLater, TransientError
from worker.metrics import API_CALLS

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_RETRY_AFTER_SECONDS = 5.0


def parse_retry_after(value: str | None, default: float = DEFAULT_RETRY_AFTER_SECONDS) -> float:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


EPOCH_THRESHOLD = 1_000_000_000
"""An ``X-RateLimit-Reset`` above this is a Unix time, below it a number of seconds."""


def parse_rate_limit_reset(value: str | None, default: float = DEFAULT_RETRY_AFTER_SECONDS) -> float:
    """Seconds until ``X-RateLimit-Reset``: APIs send either a Unix time or delta-seconds, so take both."""
    try:
        reset = float(value or "")
    except ValueError:
        return default
    if reset > EPOCH_THRESHOLD:
        reset -= datetime.now(timezone.utc).timestamp()
    return max(0.0, reset)


def retry_after_of(response: httpx.Response) -> float:
    """How long a 429 asks us to wait: ``Retry-After`` (Samsara, impact.com partner API) or
    ``X-RateLimit-Reset`` (impact.com brand API, which sends no ``Retry-After``)."""
    if "Retry-After" in response.headers:
        return parse_retry_after(response.headers["Retry-After"])
    return parse_rate_limit_reset(response.headers.get("X-RateLimit-Reset"))


def raise_for_status(response: httpx.Response, *, provider: str, credential_name: str, job_id: str | None = None) -> None:
    code = response.status_code
    if code < 400:
        return
    if code == 429:
        wait = retry_after_of(response)
        raise RetryLater(f"{provider} rate limit hit (HTTP 429); the provider asks us to wait {wait:.0f}s", wait)
    if code in (401, 403):
        raise AuthError(credential_name, code, provider)
    if code == 404 and job_id is not None:
        raise JobNotFound(provider, job_id)
    if code >= 500 or code == 408:
        raise TransientError(f"{provider} answered HTTP {code} for {response.request.url.path}")
    refused = f"{provider} refused {response.request.method} {response.request.url.path} with HTTP {code}: {response.text[:300]}"
    raise NotFound(refused) if code == 404 else PermanentError(refused)


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    provider: str,
    credential_name: str,
    job_id: str | None = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    try:
        response = client.request(method, url, json=json, headers=headers)
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        API_CALLS.labels(provider, method, "error").inc()
        raise TransientError(f"{provider} {method} {url} failed: {exc.__class__.__name__}: {exc}") from exc
    API_CALLS.labels(provider, method, str(response.status_code)).inc()
    raise_for_status(response, provider=provider, credential_name=credential_name, job_id=job_id)
    return response


def parse_body(response: httpx.Response, model: type[ModelT], *, provider: str) -> ModelT:
    """Validate a provider body, naming the failing field so the user can see what drifted."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "<body>"
        raise PayloadError(
            f"{provider} sent a {model.__name__} that does not validate: field {field!r}: {first['msg']} "
            f"({exc.error_count()} error(s))"
        ) from exc
