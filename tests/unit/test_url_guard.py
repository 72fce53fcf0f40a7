"""The download allowlist: which URLs may be fetched, and that refused ones are never requested."""

from __future__ import annotations

import httpx
import pytest

from worker.errors import UrlRejected
from worker.http_download import open_download
from worker.security.urls import UrlGuard

STRICT = UrlGuard(["api.samsara.com", "*.amazonaws.com", "files.example.com:8443"])
LOCAL = UrlGuard(["127.0.0.1:8765", "localhost", "api.samsara.com"], allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.samsara.com/ifta-detail/csv/1",
        "https://API.Samsara.com./x",
        "https://bucket.s3.amazonaws.com/key.csv?X-Amz-Signature=abc",
        "https://a.b.s3.us-west-2.amazonaws.com/key.csv",
        "https://files.example.com:8443/f.csv",
        "https://api.samsara.com:443/x",
    ],
)
def test_allowed_urls_pass_and_come_back_parsed(url: str) -> None:
    assert STRICT.check(url) == httpx.URL(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.org/f.csv",
        "https://amazonaws.com/f.csv",  # the wildcard covers subdomains only
        "https://evilamazonaws.com/f.csv",
        "https://amazonaws.com.evil.org/f.csv",
        "https://api.samsara.com.evil.org/f.csv",
        "https://files.example.com/f.csv",  # allowed only on port 8443
        "https://files.example.com:9443/f.csv",
    ],
)
def test_hosts_outside_the_allowlist_are_refused_with_the_setting_to_change(url: str) -> None:
    with pytest.raises(UrlRejected, match="EXPORT_WORKER_DOWNLOAD_HOSTS"):
        STRICT.check(url)


def test_an_entry_without_port_allows_any_port() -> None:
    assert STRICT.check("https://api.samsara.com:8443/x").port == 8443


@pytest.mark.parametrize("url", ["http://api.samsara.com/x", "http://bucket.s3.amazonaws.com/x"])
def test_plain_http_is_refused_unless_private_networks_are_allowed(url: str) -> None:
    with pytest.raises(UrlRejected, match="EXPORT_WORKER_ALLOW_PRIVATE_NETWORKS"):
        STRICT.check(url)
    assert LOCAL.check("http://api.samsara.com/x").scheme == "http"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://api.samsara.com/x", "gopher://api.samsara.com/", "//api.samsara.com/x", "/x"]
)
def test_other_schemes_are_refused(url: str) -> None:
    for guard in (STRICT, LOCAL):
        with pytest.raises(UrlRejected, match="only https"):
            guard.check(url)


@pytest.mark.parametrize("url", ["https://user:pw@api.samsara.com/x", "https://user@api.samsara.com/x"])
def test_userinfo_is_refused(url: str) -> None:
    for guard in (STRICT, LOCAL):
        with pytest.raises(UrlRejected, match="credentials"):
            guard.check(url)


METADATA_AND_FRIENDS = [
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "https://[::ffff:a9fe:a9fe]/",
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "https://[2002:a9fe:a9fe::1]/",  # 6to4
    "https://[fe80::1%25eth0]/",
    "http://127.0.0.1/",
    "https://127.0.0.1/",
    "https://2130706433/",  # 127.0.0.1 as one decimal number
    "https://0x7f.1/",
    "https://017700000001/",
    "https://127.1/",
    "https://10.0.0.8/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",
    "https://0.0.0.0/",
    "https://[::1]/",
    "https://[::]/",
    "https://224.0.0.1/",
    "https://240.0.0.1/",
]


@pytest.mark.parametrize("url", METADATA_AND_FRIENDS)
def test_internal_addresses_are_refused_even_when_listed(url: str) -> None:
    host = httpx.URL(url).host
    guard = UrlGuard([host, "169.254.169.254", "127.0.0.1", "::1"])
    with pytest.raises(UrlRejected) as caught:
        guard.check(url)
    assert "EXPORT_WORKER_ALLOW_PRIVATE_NETWORKS" in str(caught.value)


def test_loopback_is_fine_when_private_networks_are_allowed_and_listed() -> None:
    assert LOCAL.check("http://127.0.0.1:8765/files/1").port == 8765
    assert LOCAL.check("http://2130706433:8765/files/1").host == "2130706433"
    with pytest.raises(UrlRejected, match="not allowed"):
        LOCAL.check("http://127.0.0.1:9999/files/1")
    with pytest.raises(UrlRejected, match="not allowed"):
        LOCAL.check("http://169.254.169.254/latest/meta-data/")  # private allowed, but not listed


@pytest.mark.parametrize("url", ["https://localhost/x", "https://LOCALHOST./x", "https://svc.localhost/x"])
def test_localhost_names_are_refused_unless_private_networks_are_allowed(url: str) -> None:
    with pytest.raises(UrlRejected, match="EXPORT_WORKER_ALLOW_PRIVATE_NETWORKS"):
        UrlGuard(["localhost", "*.localhost"]).check(url)
    assert UrlGuard(["localhost", "*.localhost"], allow_private=True).check(url)


def test_public_ip_literal_can_be_listed() -> None:
    assert UrlGuard(["93.184.216.34"]).check("https://93.184.216.34/f.csv").host == "93.184.216.34"


def test_refusal_message_never_echoes_the_query_string() -> None:
    with pytest.raises(UrlRejected) as caught:
        STRICT.check("https://evil.example.org/f.csv?X-Amz-Signature=topsecret")
    assert "topsecret" not in str(caught.value)
    assert "evil.example.org" in str(caught.value)


@pytest.mark.parametrize("entry", ["*", "https://api.samsara.com", "*.", "api.samsara.com:http", "*.127.0.0.1"])
def test_bad_allowlist_entries_fail_loudly(entry: str) -> None:
    with pytest.raises(ValueError):
        UrlGuard([entry])


def test_empty_allowlist_refuses_everything() -> None:
    with pytest.raises(UrlRejected, match="allowed: none"):
        UrlGuard([]).check("https://api.samsara.com/x")


# --- the guard in front of real requests ------------------------------------------------------------


class Recorder:
    def __init__(self, respond: httpx.Response | None = None, redirect_to: str | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.redirect_to = redirect_to
        self.respond = respond

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.redirect_to is not None and len(self.requests) == 1:
            return httpx.Response(302, headers={"Location": self.redirect_to})
        return self.respond or httpx.Response(200, content=b"a,b\n1,2\n")


def _download(client: httpx.Client, url: str, guard: UrlGuard = STRICT, signed: bool = True) -> bytes:
    with open_download(
        client, url, guard=guard, max_bytes=1 << 20, provider="samsara", credential_name="main", signed_url=signed
    ) as chunks:
        return b"".join(chunks)


def test_metadata_url_is_refused_before_any_request() -> None:
    recorder = Recorder()
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    with pytest.raises(UrlRejected):
        _download(client, "http://169.254.169.254/latest/meta-data/")
    assert recorder.requests == []


def test_redirect_to_metadata_is_refused_before_the_second_request() -> None:
    recorder = Recorder(redirect_to="http://169.254.169.254/latest/meta-data/iam")
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    with pytest.raises(UrlRejected, match="169.254.169.254"):
        _download(client, "https://bucket.s3.amazonaws.com/f.csv?sig=1")
    assert len(recorder.requests) == 1


def test_redirect_to_an_unlisted_host_is_refused_before_it_is_requested() -> None:
    recorder = Recorder(redirect_to="https://evil.example.org/f.csv")
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    with pytest.raises(UrlRejected, match="evil.example.org"):
        _download(client, "https://api.samsara.com/f.csv")
    assert [str(r.url) for r in recorder.requests] == ["https://api.samsara.com/f.csv"]


def test_relative_redirect_is_resolved_and_followed() -> None:
    recorder = Recorder(redirect_to="/other/f.csv?v=2")
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    assert _download(client, "https://api.samsara.com/f.csv") == b"a,b\n1,2\n"
    assert str(recorder.requests[1].url) == "https://api.samsara.com/other/f.csv?v=2"


def test_credential_never_follows_a_redirect_to_another_origin() -> None:
    recorder = Recorder(redirect_to="https://bucket.s3.amazonaws.com/f.csv?X-Amz-Signature=abc")
    client = httpx.Client(
        transport=httpx.MockTransport(recorder),
        auth=httpx.BasicAuth("sid", "token"),
        headers={"Cookie": "session=1"},
    )
    assert _download(client, "https://api.samsara.com/download", signed=False) == b"a,b\n1,2\n"
    first, second = recorder.requests
    assert "Authorization" in first.headers
    assert "Authorization" not in second.headers and "Cookie" not in second.headers


def test_relative_provider_url_is_joined_with_the_client_base_url_and_checked() -> None:
    recorder = Recorder()
    client = httpx.Client(transport=httpx.MockTransport(recorder), base_url="https://api.samsara.com/v1/")
    assert _download(client, "jobs/1/Download", signed=False) == b"a,b\n1,2\n"
    assert str(recorder.requests[0].url) == "https://api.samsara.com/v1/jobs/1/Download"
    evil = httpx.Client(transport=httpx.MockTransport(recorder), base_url="http://169.254.169.254/")
    with pytest.raises(UrlRejected):
        _download(evil, "latest/meta-data/", signed=False)
    assert len(recorder.requests) == 1
