"""Stream one result file: allowlist before every hop, chunks out, nothing whole in memory.

Redirects are followed by hand so that each ``Location`` passes the :class:`UrlGuard` before it is
requested, and so that the provider credential never follows a redirect to another origin. Status
codes go through :func:`worker.http.raise_for_status` like every other provider call, except that a
signed storage URL answering 403 (or 400 "expired") means "re-poll for a fresh URL", not "bad
credential". A body shorter than its ``Content-Length`` is a transient failure, never a short file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from worker.errors import DownloadUrlExpired, PermanentError, TransientError, UrlRejected
from worker.http import raise_for_status
from worker.security.urls import UrlGuard

_ERROR_BODY_BYTES = 64 * 1024
_MAX_BYTES_SETTING = "EXPORT_WORKER_MAX_DOWNLOAD_BYTES"
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
_HOP_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


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
    """Yield an iterator of body chunks; the response is closed when the block exits, however it exits.

    Errors: :class:`UrlRejected` (before any request), :class:`DownloadUrlExpired`,
    :class:`TransientError` (transport failures, 5xx, truncated body), ``RetryLater`` (429), and
    :class:`PermanentError` (too large, too many redirects, other 4xx).
    """
    try:
        request = client.build_request("GET", url)  # merges the client's base_url into relative URLs
    except (httpx.InvalidURL, ValueError) as exc:
        raise UrlRejected(f"{provider} download URL is not a valid URL ({exc})") from None
    target = guard.check(request.url)
    response = _follow(client, request, target, guard, provider, max_redirects)
    try:
        final_url = response.request.url
        _check_status(response, provider=provider, credential_name=credential_name, signed_url=signed_url)
        expected = _declared_length(response)
        if expected is not None and expected > max_bytes and not _encoded(response):
            raise PermanentError(
                f"{provider} file {final_url.path} is {expected} bytes, over the limit of {max_bytes}; "
                f"raise {_MAX_BYTES_SETTING} to accept it"
            )
        yield _chunks(response, final_url, expected, max_bytes, chunk_size, provider)
    finally:
        response.close()


def _follow(
    client: httpx.Client,
    request: httpx.Request,
    target: httpx.URL,
    guard: UrlGuard,
    provider: str,
    max_redirects: int,
) -> httpx.Response:
    """Send, and follow redirects hop by hop; every new URL is checked before it is requested."""
    origin = _origin(target)
    left_origin = False
    for hop in range(max_redirects + 1):
        response = _send(client, request, provider, strip_credentials=left_origin)
        if not response.has_redirect_location:  # 301/302/303/307/308 with a Location
            return response
        location = response.headers["Location"]
        response.close()
        if hop == max_redirects:
            raise PermanentError(f"{provider} download was redirected more than {max_redirects} times")
        try:
            target = guard.check(request.url.join(location))
        except httpx.InvalidURL as exc:
            raise UrlRejected(f"{provider} redirected the download to an invalid URL ({exc})") from None
        left_origin = left_origin or _origin(target) != origin
        request = client.build_request("GET", target)
    raise AssertionError("unreachable")  # pragma: no cover


def _send(client: httpx.Client, request: httpx.Request, provider: str, *, strip_credentials: bool) -> httpx.Response:
    if strip_credentials:  # the credential belongs to the first origin; a redirect elsewhere never gets it
        for name in _CREDENTIAL_HEADERS:
            request.headers.pop(name, None)
    try:
        if strip_credentials:
            return client.send(request, stream=True, follow_redirects=False, auth=None)
        return client.send(request, stream=True, follow_redirects=False)
    except httpx.TransportError as exc:
        raise TransientError(f"{provider} download from {request.url.host} failed: {exc.__class__.__name__}: {exc}") from exc


def _check_status(response: httpx.Response, *, provider: str, credential_name: str, signed_url: bool) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status < 400:
        raise PermanentError(f"{provider} answered the download with unexpected HTTP {status}")
    body = _error_body(response)
    if signed_url and (status == 403 or (status == 400 and b"expired" in body.lower())):
        raise DownloadUrlExpired(
            f"{provider} storage refused the signed download URL of {response.request.url.path} "
            f"(HTTP {status}); it has probably expired, re-poll the job for a fresh one"
        )
    headers = [(key, value) for key, value in response.headers.multi_items() if key.lower() not in _HOP_HEADERS]
    raise_for_status(
        httpx.Response(status, headers=headers, content=body, request=response.request),
        provider=provider,
        credential_name=credential_name,
    )
    raise PermanentError(f"{provider} answered the download with HTTP {status}")  # pragma: no cover


def _error_body(response: httpx.Response) -> bytes:
    """At most 64 KiB of an error body: enough for a message, never a whole file."""
    body = bytearray()
    try:
        for piece in response.iter_bytes():
            body += piece
            if len(body) >= _ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass
    return bytes(body[:_ERROR_BODY_BYTES])


def _declared_length(response: httpx.Response) -> int | None:
    declared = response.headers.get("Content-Length", "").strip()
    return int(declared) if declared.isdigit() else None


def _encoded(response: httpx.Response) -> bool:
    """With Content-Encoding, Content-Length counts the compressed bytes on the wire."""
    return response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")


def _chunks(
    response: httpx.Response, url: httpx.URL, expected: int | None, max_bytes: int, chunk_size: int, provider: str
) -> Iterator[bytes]:
    received = 0
    try:
        for chunk in response.iter_bytes(chunk_size):
            received += len(chunk)
            if received > max_bytes:
                raise PermanentError(
                    f"{provider} file {url.path} grew past the limit of {max_bytes} bytes; "
                    f"raise {_MAX_BYTES_SETTING} to accept it"
                )
            yield chunk
    except httpx.TransportError as exc:  # includes RemoteProtocolError: connection closed mid-body
        raise TransientError(
            f"{provider} download of {url.path} broke after {received} bytes: {exc.__class__.__name__}: {exc}"
        ) from exc
    except httpx.DecodingError as exc:
        raise TransientError(f"{provider} download of {url.path} has a corrupt encoded body: {exc}") from exc
    if expected is not None:
        on_wire = response.num_bytes_downloaded if _encoded(response) else received
        if on_wire < expected:
            raise TransientError(f"{provider} download of {url.path} truncated: {on_wire} of {expected} bytes arrived")
        if on_wire > expected:
            raise TransientError(
                f"{provider} download of {url.path} sent {on_wire} bytes, more than its Content-Length {expected}"
            )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port
