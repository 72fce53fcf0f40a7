"""Streaming downloads: chunks out, every failure mapped to the error class that decides the retry."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from worker.errors import AuthError, DownloadUrlExpired, PermanentError, RetryLater, TransientError, UrlRejected
from worker.http_download import open_download
from worker.security.urls import UrlGuard

URL = "https://bucket.s3.amazonaws.com/ifta.csv?X-Amz-Signature=abc"
GUARD = UrlGuard(["*.amazonaws.com", "api.samsara.com"])


class Body(httpx.SyncByteStream):
    """A response body that arrives in pieces, may break off, and remembers being closed."""

    def __init__(self, pieces: list[bytes], fail_with: Exception | None = None) -> None:
        self.pieces = pieces
        self.fail_with = fail_with
        self.closed = False
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            self.sent += len(piece)
            yield piece
        if self.fail_with is not None:
            raise self.fail_with

    def close(self) -> None:
        self.closed = True


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def fetch(client: httpx.Client, *, signed: bool = True, max_bytes: int = 1 << 20, chunk_size: int = 1 << 20) -> list[bytes]:
    with open_download(
        client,
        URL,
        guard=GUARD,
        max_bytes=max_bytes,
        provider="samsara",
        credential_name="main",
        signed_url=signed,
        chunk_size=chunk_size,
    ) as chunks:
        return list(chunks)


def test_body_streams_in_chunks_and_the_response_is_closed() -> None:
    body = Body([b"vehicleId,jurisdiction\n", b"1,CA\n" * 1000, b"2,NV\n"])
    total = sum(len(p) for p in body.pieces)
    client = client_for(lambda r: httpx.Response(200, headers={"Content-Length": str(total)}, stream=body))
    chunks = fetch(client, chunk_size=1024)
    assert len(chunks) > 4 and all(len(c) <= 1024 for c in chunks)
    assert b"".join(chunks) == b"".join(body.pieces)
    assert body.closed


def test_consumer_failure_still_closes_the_response() -> None:
    body = Body([b"a\n"] * 10)
    client = client_for(lambda r: httpx.Response(200, stream=body))
    with pytest.raises(RuntimeError):
        with open_download(client, URL, guard=GUARD, max_bytes=100, provider="p", credential_name="c", signed_url=True) as chunks:
            next(iter(chunks))
            raise RuntimeError("parser blew up")
    assert body.closed


def test_body_shorter_than_content_length_is_transient() -> None:
    body = Body([b"a,b\n", b"1,2\n"])
    client = client_for(lambda r: httpx.Response(200, headers={"Content-Length": "100"}, stream=body))
    with pytest.raises(TransientError, match="truncated: 8 of 100"):
        fetch(client)
    assert body.closed


def test_connection_closed_mid_body_is_transient() -> None:
    body = Body([b"a,b\n", b"1,2\n"], fail_with=httpx.RemoteProtocolError("peer closed connection"))
    client = client_for(lambda r: httpx.Response(200, stream=body))
    with pytest.raises(TransientError, match="RemoteProtocolError"):
        fetch(client)
    assert body.closed


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectTimeout("x")])
def test_transport_errors_before_the_response_are_transient(error: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(TransientError):
        fetch(client_for(handler))


@pytest.mark.parametrize("status", [401, 403])
def test_a_signed_url_refused_means_expired_not_bad_credential(status: int) -> None:
    """A signed URL carries no credential of ours, so storage refusing it cannot be about one: get a fresh URL."""
    client = client_for(lambda r: httpx.Response(status, content=b"<Error><Code>AccessDenied</Code></Error>"))
    with pytest.raises(DownloadUrlExpired, match=f"refused the signed download URL of /ifta.csv \\(HTTP {status}\\)"):
        fetch(client, signed=True)
    with pytest.raises(AuthError, match="'main'"):
        fetch(client, signed=False)


def test_400_saying_expired_on_a_signed_url_means_expired() -> None:
    expired = client_for(lambda r: httpx.Response(400, content=b"<Message>Request has expired</Message>"))
    with pytest.raises(DownloadUrlExpired):
        fetch(expired)
    other = client_for(lambda r: httpx.Response(400, content=b"<Message>Bad digest</Message>"))
    with pytest.raises(PermanentError, match="Bad digest"):
        fetch(other)


def test_expired_message_does_not_leak_the_signature() -> None:
    client = client_for(lambda r: httpx.Response(403))
    with pytest.raises(DownloadUrlExpired) as caught:
        fetch(client)
    assert "X-Amz-Signature" not in str(caught.value) and "abc" not in str(caught.value)


def test_429_is_retry_later_with_retry_after() -> None:
    client = client_for(lambda r: httpx.Response(429, headers={"Retry-After": "7"}))
    with pytest.raises(RetryLater) as caught:
        fetch(client)
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(status: int) -> None:
    with pytest.raises(TransientError, match=str(status)):
        fetch(client_for(lambda r: httpx.Response(status)))


def test_404_is_permanent() -> None:
    with pytest.raises(PermanentError, match="404"):
        fetch(client_for(lambda r: httpx.Response(404, content=b"NoSuchKey")))


def test_huge_error_body_is_not_read_whole() -> None:
    body = Body([b"x" * 65536] * 100)
    with pytest.raises(TransientError):
        fetch(client_for(lambda r: httpx.Response(503, stream=body)))
    assert body.sent < 200_000 and body.closed


def test_declared_size_over_the_limit_is_permanent_before_reading() -> None:
    body = Body([b"a" * 100])
    client = client_for(lambda r: httpx.Response(200, headers={"Content-Length": "5000"}, stream=body))
    with pytest.raises(PermanentError, match="EXPORT_WORKER_MAX_DOWNLOAD_BYTES") as caught:
        fetch(client, max_bytes=1000)
    assert "1000" in str(caught.value)
    assert body.sent == 0 and body.closed


def test_counted_size_over_the_limit_is_permanent() -> None:
    body = Body([b"a" * 400] * 10)  # no Content-Length: chunked
    with pytest.raises(PermanentError, match="EXPORT_WORKER_MAX_DOWNLOAD_BYTES"):
        fetch(client_for(lambda r: httpx.Response(200, stream=body)), max_bytes=1000, chunk_size=100)
    assert body.sent < 4000 and body.closed


def test_compressed_body_is_decoded_and_its_length_checked_on_the_wire() -> None:
    plain = b"vehicleId,jurisdiction\n" + b"1,CA\n" * 5000
    packed = gzip.compress(plain)
    client = client_for(
        lambda r: httpx.Response(
            200, headers={"Content-Encoding": "gzip", "Content-Length": str(len(packed))}, stream=Body([packed])
        )
    )
    assert b"".join(fetch(client)) == plain
    truncated = client_for(
        lambda r: httpx.Response(
            200, headers={"Content-Encoding": "gzip", "Content-Length": str(len(packed) + 10)}, stream=Body([packed])
        )
    )
    with pytest.raises(TransientError, match="truncated"):
        fetch(truncated)


def test_too_many_redirects_is_permanent() -> None:
    calls: list[httpx.URL] = []

    def loop(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        return httpx.Response(302, headers={"Location": f"/again/{len(calls)}"})

    with pytest.raises(PermanentError, match="redirected more than 5"):
        fetch(client_for(loop))
    assert len(calls) == 6


def test_3xx_without_location_is_not_taken_for_the_file() -> None:
    with pytest.raises(PermanentError, match="304"):
        fetch(client_for(lambda r: httpx.Response(304)))


def test_a_status_that_is_neither_success_nor_redirect_is_not_taken_for_the_file() -> None:
    with pytest.raises(PermanentError, match="samsara answered the download with unexpected HTTP 300"):
        fetch(client_for(lambda r: httpx.Response(300, content=b"choose")))


def test_expired_signed_url_says_to_re_poll() -> None:
    with pytest.raises(DownloadUrlExpired) as caught:
        fetch(client_for(lambda r: httpx.Response(403)))
    assert str(caught.value) == (
        "samsara storage refused the signed download URL of /ifta.csv (HTTP 403); "
        "it has probably expired, re-poll the job for a fresh one"
    )


def test_error_message_quotes_the_whole_small_error_body_decoded() -> None:
    packed = gzip.compress(b"NoSuchKey: the object is gone")
    headers = {"Content-Encoding": "gzip", "Content-Length": str(len(packed))}
    client = client_for(lambda r: httpx.Response(404, headers=headers, stream=Body([packed[:10], packed[10:]])))
    with pytest.raises(PermanentError) as caught:
        fetch(client)
    assert str(caught.value) == "samsara refused GET /ifta.csv with HTTP 404: NoSuchKey: the object is gone"
    pieces = client_for(lambda r: httpx.Response(404, stream=Body([b"NoSuch", b"Key"])))
    with pytest.raises(PermanentError, match="HTTP 404: NoSuchKey$"):
        fetch(pieces)


def test_error_body_reading_stops_at_64_kib() -> None:
    body = Body([b"x" * 65536, b"y" * 10])
    with pytest.raises(PermanentError) as caught:
        fetch(client_for(lambda r: httpx.Response(404, stream=body)))
    assert body.sent == 65536 and body.closed
    assert str(caught.value).endswith("HTTP 404: " + "x" * 300)


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    body = Body([b"a" * 500, b"b" * 500])
    assert b"".join(fetch(client_for(lambda r: httpx.Response(200, stream=body)), max_bytes=1000)) == b"a" * 500 + b"b" * 500


def test_an_empty_content_encoding_means_identity() -> None:
    body = Body([b"a" * 100])
    headers = {"Content-Encoding": "", "Content-Length": "5000"}
    with pytest.raises(PermanentError, match="is 5000 bytes, over the limit of 1000"):
        fetch(client_for(lambda r: httpx.Response(200, headers=headers, stream=body)), max_bytes=1000)
    assert body.sent == 0


def test_body_longer_than_content_length_is_transient() -> None:
    client = client_for(lambda r: httpx.Response(200, headers={"Content-Length": "4"}, stream=Body([b"a,b\n", b"1,2\n"])))
    with pytest.raises(TransientError, match="sent 8 bytes, more than its Content-Length 4"):
        fetch(client)


def test_corrupt_compressed_body_is_transient() -> None:
    client = client_for(lambda r: httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=Body([b"not gzip at all"])))
    with pytest.raises(TransientError, match="samsara download of /ifta.csv has a corrupt encoded body"):
        fetch(client)


def test_transport_error_names_provider_and_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(TransientError, match="samsara download from bucket.s3.amazonaws.com failed: ConnectError: refused"):
        fetch(client_for(handler))


def redirecting(hops: dict[str, str], body: Body | None = None) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport that redirects each URL in ``hops`` to its target and serves ``body`` elsewhere."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        location = hops.get(str(request.url.copy_with(query=None)))
        if location is not None:
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, stream=body or Body([b"a,b\n"]))

    return seen, httpx.MockTransport(handler)


def test_credential_follows_a_redirect_within_its_origin() -> None:
    seen, transport = redirecting({"https://api.samsara.com/f": "/g"})
    client = httpx.Client(transport=transport, auth=httpx.BasicAuth("sid", "token"))
    with open_download(
        client, "https://api.samsara.com/f", guard=GUARD, max_bytes=100, provider="samsara", credential_name="c", signed_url=False
    ) as chunks:
        assert b"".join(chunks) == b"a,b\n"
    assert [(r.method, r.url.path, "Authorization" in r.headers) for r in seen] == [("GET", "/f", True), ("GET", "/g", True)]


def test_redirects_are_checked_even_on_a_client_that_follows_them_itself() -> None:
    """Hop 1 stays on the origin, hop 2 leaves it (credential stripped), hop 3 points at the metadata service."""
    hops = {
        "https://api.samsara.com/f": "/g",
        "https://api.samsara.com/g": "https://bucket.s3.amazonaws.com/h",
        "https://bucket.s3.amazonaws.com/h": "http://169.254.169.254/latest/meta-data/",
    }
    seen, transport = redirecting(hops)
    client = httpx.Client(transport=transport, follow_redirects=True, auth=httpx.BasicAuth("sid", "token"))
    with pytest.raises(UrlRejected, match="169.254.169.254"):
        with open_download(
            client,
            "https://api.samsara.com/f",
            guard=GUARD,
            max_bytes=100,
            provider="samsara",
            credential_name="c",
            signed_url=False,
        ):
            pass
    assert [str(r.url) for r in seen] == [
        "https://api.samsara.com/f",
        "https://api.samsara.com/g",
        "https://bucket.s3.amazonaws.com/h",
    ]


def test_a_file_behind_a_cross_origin_redirect_still_streams() -> None:
    body = Body([b"a" * 400] * 10)
    _, transport = redirecting({"https://api.samsara.com/f": "https://bucket.s3.amazonaws.com/h"}, body)
    client = httpx.Client(transport=transport)
    with pytest.raises(PermanentError, match="grew past the limit of 1000"):
        with open_download(
            client, "https://api.samsara.com/f", guard=GUARD, max_bytes=1000, provider="samsara", credential_name="c",
            signed_url=False, chunk_size=100,
        ) as chunks:  # fmt: skip
            list(chunks)
    assert body.sent < 4000 and body.closed


# --- gzip files (Samsara: "The contents will be gzipped", no Content-Encoding) ------------------------

CSV = b"device_id,jurisdiction,distance_meters\n" + b"".join(b"%d,TX,%d.5\n" % (i, i) for i in range(20_000))


def download_body(payload: bytes, *, max_bytes: int = 1 << 24, chunk_size: int = 4096, **headers: str):
    """Serve ``payload`` in 777-byte pieces; the download hands them on in pieces of ``chunk_size``."""
    response_headers = {"Content-Length": str(len(payload)), **headers}
    pieces = [payload[i : i + 777] for i in range(0, len(payload), 777)]
    client = client_for(lambda r: httpx.Response(200, headers=response_headers, stream=Body(pieces)))
    options = {"guard": GUARD, "provider": "samsara", "credential_name": "main", "signed_url": True}
    with open_download(client, URL, max_bytes=max_bytes, chunk_size=chunk_size, **options) as body:
        chunks = list(body)
    return body, chunks


def test_gzip_is_detected_by_its_magic_bytes_and_inflated_in_bounded_chunks() -> None:
    compressed = gzip.compress(CSV)
    body, chunks = download_body(compressed, **{"Content-Type": "application/octet-stream"})
    assert b"".join(chunks) == CSV and body.gzipped
    assert max(map(len, chunks)) <= 4096
    assert (body.wire_bytes, body.content_bytes) == (len(compressed), len(CSV))


def test_plain_csv_passes_through_unchanged_whatever_its_name() -> None:
    body, chunks = download_body(CSV)
    assert b"".join(chunks) == CSV and not body.gzipped
    assert body.wire_bytes == body.content_bytes == len(CSV)


def test_concatenated_gzip_members_are_one_file() -> None:
    half = len(CSV) // 2
    _body, chunks = download_body(gzip.compress(CSV[:half]) + gzip.compress(CSV[half:]))
    assert b"".join(chunks) == CSV


FIRST = gzip.compress(CSV[: len(CSV) // 2], mtime=0)
SECOND = gzip.compress(CSV[len(CSV) // 2 :], mtime=0)


@pytest.mark.parametrize(
    ("chunk", "padding"),
    [
        (len(FIRST), 2 * len(FIRST)),  # the padding fills pieces of its own
        (len(FIRST) + 100, 512),  # a piece holds the member's end and the start of the padding
        (len(FIRST) - 10, len(FIRST) - 20),  # the padding ends a piece; the next member starts the next one
        (len(FIRST), len(FIRST) - 4),  # a piece starts with the zero bytes of the next member's mtime
        (len(FIRST) + 64, 16),  # one piece holds the member's end, the padding and the next member's start
    ],
    ids=["own-pieces", "after-the-end", "ends-a-piece", "zeros-inside-the-next-member", "all-in-one-piece"],
)
def test_zero_padding_after_a_gzip_member_is_skipped_wherever_the_pieces_end(chunk: int, padding: int) -> None:
    """Block-padded storage leaves zeros after a member, which ``gzip -d`` accepts; a zero byte *inside*
    the next member (its header's mtime) is data, even where a piece starts with it. Pieces reach the
    inflater in ``chunk_size`` bytes, so ``chunk`` places their edges."""
    _body, chunks = download_body(FIRST + bytes(padding) + SECOND + bytes(100), chunk_size=chunk)
    assert b"".join(chunks) == CSV


@pytest.mark.parametrize("after", [b"XX", b"\x00\x00XX", zlib.compress(b"more")], ids=["garbage", "padded-garbage", "zlib"])
@pytest.mark.parametrize("chunk", [len(FIRST), 4096], ids=["own-piece", "same-piece"])
def test_bytes_after_a_gzip_member_that_are_not_another_member_are_corruption(after: bytes, chunk: int) -> None:
    with pytest.raises(PermanentError, match="does not decompress"):
        download_body(FIRST + after, chunk_size=chunk)


def test_a_gzip_bomb_hits_the_size_limit_on_the_decompressed_bytes() -> None:
    bomb = gzip.compress(b"0" * (20 << 20), 9)
    assert len(bomb) < 100_000
    with pytest.raises(PermanentError, match=r"^samsara file /ifta\.csv decompresses to more than the limit of 1048576 bytes"):
        download_body(bomb, max_bytes=1 << 20)


def test_a_cut_off_gzip_stream_is_transient_and_a_corrupt_one_permanent() -> None:
    compressed = gzip.compress(CSV)
    with pytest.raises(TransientError, match=r"^gzip stream of /ifta\.csv ended early"):
        download_body(compressed[: len(compressed) // 2])
    corrupt = compressed[:20] + bytes(200) + compressed[220:]
    with pytest.raises(PermanentError, match=r"^/ifta\.csv starts like gzip but does not decompress"):
        download_body(corrupt)


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "plain"])
def test_a_body_arriving_one_byte_at_a_time_is_recognised_and_kept_whole(gzipped: bool) -> None:
    """The gzip magic may straddle pieces: it is looked for in the first bytes, however they arrive."""
    text = CSV[:2000]
    payload = gzip.compress(text) if gzipped else text
    client = client_for(lambda r: httpx.Response(200, stream=Body([payload[i : i + 1] for i in range(len(payload))])))
    assert b"".join(fetch(client, chunk_size=1)) == text


def test_202_not_ready_is_retry_later_never_an_empty_file() -> None:
    client = client_for(lambda r: httpx.Response(202, json={"Id": "j1", "Status": "RUNNING"}))
    with pytest.raises(RetryLater, match="not ready yet") as waited:
        fetch(client, signed=False)
    assert waited.value.retry_after == 30.0
    client = client_for(lambda r: httpx.Response(202, headers={"Retry-After": "7"}))
    with pytest.raises(RetryLater) as told:
        fetch(client, signed=False)
    assert told.value.retry_after == 7.0, "the provider's Retry-After wins over our default"


@pytest.mark.parametrize("location", ["http://[::1", "https://a\x00b/f.csv"])
def test_a_redirect_to_an_invalid_url_is_refused_not_retried(location: str) -> None:
    """httpx refuses such a Location inside ``send()``; the same answer would come on every retry."""
    seen, transport = redirecting({"https://api.samsara.com/f": location})
    with pytest.raises(UrlRejected, match="samsara redirected the download to an invalid URL"):
        with open_download(
            httpx.Client(transport=transport), "https://api.samsara.com/f", guard=GUARD, max_bytes=100,
            provider="samsara", credential_name="c", signed_url=False,
        ):  # fmt: skip
            pass
    assert len(seen) == 1


def test_a_protocol_error_that_is_not_about_a_redirect_stays_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    with pytest.raises(TransientError, match="RemoteProtocolError: peer closed"):
        fetch(client_for(handler))
