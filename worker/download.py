"""Streaming a result file: allowlist before every hop, chunks out, nothing whole in memory.

Redirects are followed by hand so each Location passes the allowlist before it is requested, and
so the provider credential never follows a redirect to another host.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from worker.errors import DownloadUrlExpired, PermanentError, TransientError
from worker.http import raise_for_status
from worker.security.urls import UrlGuard

REDIRECTS = (301, 302, 303, 307, 308)


def _expired(response: httpx.Response) -> bool:
    """Signed storage URLs answer 403 (S3, GCS) or 400 with an 'expired' message when they lapse."""
    if response.status_code == 403:
        return True
    if response.status_code == 400:
        response.read()
        return "expired" in response.text.lower()
    return False


def _open(client: httpx.Client, url: httpx.URL, *, strip_auth: bool) -> httpx.Response:
    """``strip_auth`` once a redirect leaves the first host: the credential stays with its provider."""
    request = client.build_request("GET", url)
    auth = None if strip_auth else httpx.USE_CLIENT_DEFAULT
    try:
        return client.send(request, stream=True, follow_redirects=False, auth=auth)
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        raise TransientError(f"download of {url.host}{url.path} failed: {exc.__class__.__name__}: {exc}") from exc


@contextmanager
def open_download(
    client: httpx.Client,
    url: str,
    *,
    guard: UrlGuard,
    max_bytes: int,
    provider: str,
    credential_name: str,
    signed_url: bool,
    chunk_size: int = 1 << 20,
    max_redirects: int = 5,
) -> Iterator[Iterator[bytes]]:
    target = guard.check(client.base_url.join(url) if not url.startswith(("http://", "https://")) else url)
    origin = target.host
    response = _open(client, target, strip_auth=False)
    try:
        for _ in range(max_redirects):
            if response.status_code not in REDIRECTS:
                break
            location = response.headers.get("Location")
            if not location:
                raise PermanentError(f"{provider} redirected {target.path} without a Location header")
            target = guard.check(target.join(location))
            response.close()
            response = _open(client, target, strip_auth=target.host != origin)
        else:
            raise PermanentError(f"{provider} download redirected more than {max_redirects} times")
        if signed_url and _expired(response):
            raise DownloadUrlExpired(f"signed URL of {target.path} was refused (HTTP {response.status_code})")
        raise_for_status(response, provider=provider, credential_name=credential_name)
        declared = response.headers.get("Content-Length")
        expected = int(declared) if declared and declared.isdigit() else None
        if expected is not None and expected > max_bytes:
            raise PermanentError(
                f"file {target.path} is {expected} bytes, over the limit of {max_bytes}; "
                "raise EXPORT_WORKER_MAX_DOWNLOAD_BYTES to accept it"
            )
        yield _chunks(response, target, expected, max_bytes, chunk_size)
    finally:
        response.close()


def _chunks(response: httpx.Response, url: httpx.URL, expected: int | None, max_bytes: int, chunk_size: int) -> Iterator[bytes]:
    received = 0
    try:
        for chunk in response.iter_bytes(chunk_size):
            received += len(chunk)
            if received > max_bytes:
                raise PermanentError(
                    f"file {url.path} exceeded the limit of {max_bytes} bytes; raise EXPORT_WORKER_MAX_DOWNLOAD_BYTES to accept it"
                )
            yield chunk
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        raise TransientError(f"download of {url.path} broke after {received} bytes: {exc.__class__.__name__}") from exc
    compressed = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    on_wire = response.num_bytes_downloaded if compressed else received
    if expected is not None and on_wire < expected:
        raise TransientError(f"download of {url.path} truncated: {on_wire} of {expected} bytes")
