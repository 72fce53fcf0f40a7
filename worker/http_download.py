"""Stream one result file: allowlist before every hop, chunks out, nothing whole in memory.

Redirects are followed by hand so that each ``Location`` passes the :class:`UrlGuard` before it is
requested, and so that the provider credential never follows a redirect to another origin. Status
codes go through :func:`worker.http.raise_for_status` like every other provider call, except that a
signed storage URL answering 403 (or 400 "expired") means "re-poll for a fresh URL", not "bad
credential". A body shorter than its ``Content-Length`` is a transient failure, never a short file.

Bodies that start with the gzip magic bytes are decompressed while they stream, whatever their name
or headers say (Samsara serves ``*.csv.gz`` from signed storage URLs without ``Content-Encoding``).
Decompression is bounded per step, so memory stays constant and a gzip bomb hits
``MAX_DOWNLOAD_BYTES`` (applied to the compressed and to the decompressed size) as a clear error.
A 202 answer (impact.com: "the file is not ready yet") is never taken as the file.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType

import httpx

from worker.errors import DownloadUrlExpired, PermanentError, RetryLater, TransientError, UrlRejected
from worker.http import parse_retry_after, raise_for_status
from worker.security.urls import UrlGuard

_ERROR_BODY_BYTES = 64 * 1024
_MAX_BYTES_SETTING = "EXPORT_WORKER_MAX_DOWNLOAD_BYTES"
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
_HOP_HEADERS = ("content-encoding", "content-length", "transfer-encoding")
GZIP_MAGIC = b"\x1f\x8b"


def _inflate_library() -> ModuleType:
    """ISA-L's inflate (python-isal, a drop-in for :mod:`zlib`): ~1.5x zlib's speed here; zlib where it is missing."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; a platform without its wheel still works
        return zlib
    return isal_zlib


_INFLATE = _inflate_library()
_INFLATE_ERRORS = (zlib.error, _INFLATE.error)
_INVALID_LOCATION = "Invalid URL in location header"
"""httpx's message when a redirect's Location does not parse: the answer is wrong, a retry gets the same."""
NOT_READY_RETRY_SECONDS = 30.0
"""Re-download delay after a 202 "not ready" that carries no Retry-After."""


class DownloadBody:
    """The body as content chunks (gunzipped when it is gzip), counting bytes on the wire and out.

    ``wire_bytes`` is what was downloaded (compressed when the file is gzip); ``content_bytes`` is
    what the parser gets. Both are final once iteration ends.
    """

    def __init__(self, response: httpx.Response, raw: Iterator[bytes], *, max_bytes: int, chunk_size: int, provider: str):
        self._response = response
        self._raw = raw
        self._max_bytes = max_bytes
        self._chunk_size = chunk_size
        self._provider = provider
        self.content_bytes = 0
        self.gzipped = False

    @property
    def wire_bytes(self) -> int:
        return self._response.num_bytes_downloaded

    def __iter__(self) -> Iterator[bytes]:
        head = b""
        for chunk in self._raw:
            head += chunk
            if len(head) >= len(GZIP_MAGIC):
                break
        self.gzipped = head.startswith(GZIP_MAGIC)
        pieces = _prepend(head, self._raw)
        yield from self._count(_gunzip(pieces, self._chunk_size, self._path) if self.gzipped else pieces)

    @property
    def _path(self) -> str:
        return self._response.request.url.path

    def _count(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            if not piece:
                continue
            self.content_bytes += len(piece)
            if self.content_bytes > self._max_bytes:
                raise PermanentError(
                    f"{self._provider} file {self._path} decompresses to more than the limit of {self._max_bytes} bytes; "
                    f"raise {_MAX_BYTES_SETTING} to accept it"
                )
            yield piece


def _prepend(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest


def _gunzip(pieces: Iterable[bytes], out_size: int, path: str) -> Iterator[bytes]:
    """Inflate gzip members one bounded step at a time (``max_length``), so output never balloons.

    The first member (Samsara's whole file) is inflated by ISA-L, any later one by zlib.
    """
    inflater = _INFLATE.decompressobj(wbits=16 + zlib.MAX_WBITS)
    fed = after_member = False
    try:
        for piece in pieces:
            data = piece.lstrip(b"\x00") if after_member and not fed else piece  # zero padding after a member
            while data:
                fed = True
                yield inflater.decompress(data, out_size)
                while not inflater.unconsumed_tail and not inflater.eof and (pending := inflater.decompress(b"", out_size)):
                    yield pending
                data = inflater.unconsumed_tail
                if inflater.eof:  # concatenated gzip members are one file; unused_data holds all input after the end
                    data = inflater.unused_data.lstrip(b"\x00")
                    # zlib for what follows: it refuses bytes that are not a gzip member, ISA-L waits for more
                    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    fed, after_member = False, True
    except _INFLATE_ERRORS as exc:
        raise PermanentError(f"{path} starts like gzip but does not decompress ({exc}); the file is corrupt") from exc
    if fed and not inflater.eof:
        raise TransientError(f"gzip stream of {path} ended early: the download was probably cut off")


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
) -> Iterator[DownloadBody]:
    """Yield the body (content chunks, gunzipped if gzip); the response is closed when the block exits.

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
        yield DownloadBody(
            response,
            _chunks(response, final_url, expected, max_bytes, chunk_size, provider),
            max_bytes=max_bytes,
            chunk_size=chunk_size,
            provider=provider,
        )
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
        target = guard.check(request.url.join(location))
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
        if isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(_INVALID_LOCATION):
            raise UrlRejected(f"{provider} redirected the download to an invalid URL ({exc})") from None
        raise TransientError(f"{provider} download from {request.url.host} failed: {exc.__class__.__name__}: {exc}") from exc


def _check_status(response: httpx.Response, *, provider: str, credential_name: str, signed_url: bool) -> None:
    status = response.status_code
    if status == 202:
        raise RetryLater(
            f"{provider} answered HTTP 202 for {response.request.url.path}: the file is not ready yet; downloading it later",
            parse_retry_after(response.headers.get("Retry-After"), NOT_READY_RETRY_SECONDS),
        )
    if 200 <= status < 300:
        return
    if status < 400:
        raise PermanentError(f"{provider} answered the download with unexpected HTTP {status}")
    body = _error_body(response)
    if signed_url and (status in (401, 403) or (status == 400 and b"expired" in body.lower())):
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
