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


# --- allowlist entries and refusal messages, with each guard built inside its test ---------------


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        ("Files.Example.COM.", "files.example.com"),
        ("files.example.com:8443", "files.example.com:8443"),
        ("*.Example.com:1", "*.example.com:1"),
        ("[2606:4700::1]:65535", "[2606:4700::1]:65535"),
        ("[2606:4700::1]", "[2606:4700::1]"),
        ("2606:4700::1", "[2606:4700::1]"),
        ("0x7F.1", "127.0.0.1"),
        ("127.0.0.1:8765", "127.0.0.1:8765"),
    ],
)
def test_allowlist_entries_are_canonical(entry: str, shown: str) -> None:
    assert UrlGuard([entry, "  "]).allowed_hosts == (shown,)


def test_an_entry_with_a_port_allows_only_that_port() -> None:
    guard = UrlGuard(["files.example.com:8443", "[2606:4700::1]:8443", "127.0.0.1:8765"], allow_private=True)
    for url in ("https://files.example.com:8443/f", "https://[2606:4700::1]:8443/f", "http://127.0.0.1:8765/f"):
        assert guard.check(url) == httpx.URL(url)
    for url in ("https://files.example.com/f", "https://[2606:4700::1]/f", "http://127.0.0.1:9999/f"):
        with pytest.raises(UrlRejected, match="is not allowed"):
            guard.check(url)


def test_an_entry_with_a_trailing_dot_matches_the_host() -> None:
    assert UrlGuard(["files.example.com."]).check("https://files.example.com/f").host == "files.example.com"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("files.example.com/path", "'files.example.com/path' must be a host name or host:port, not a URL"),
        ("user@files.example.com", "'user@files.example.com' must be a host name or host:port, not a URL"),
        ("https://files.example.com", "'https://files.example.com' must be a host name or host:port, not a URL"),
        ("files.example.com:0", "'files.example.com:0' has an invalid port"),
        ("files.example.com:65536", "'files.example.com:65536' has an invalid port"),
        ("files.example.com:http", "'files.example.com:http' has an invalid port"),
        ("[2606:4700::1]:99999", "'[2606:4700::1]:99999' has an invalid port"),
        ("[::1]]", "'[::1]]' has an invalid port"),
        ("*.", "'*.' is not a host name or *.domain pattern"),
        ("*.127.0.0.1", "'*.127.0.0.1': a wildcard needs a domain, not an address"),
        ("\u2100.com", "'\u2100.com' is not a valid host name (Invalid IDNA hostname"),
    ],
)
def test_bad_allowlist_entries_say_what_is_wrong(entry: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        UrlGuard([entry])
    assert f"download host {message}" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://[::1/x?sig=SECRET", "download URL 'https://[::1/x' is not a valid URL (Invalid port: ':1')"),
        ("//files.example.com/x", "download URL '//files.example.com/x' uses scheme '(none)'; only https is fetched"),
        ("ftp://files.example.com/x?sig=SECRET", "download URL 'ftp://files.example.com/x' uses scheme 'ftp'; only https"),
        ("https:///x", "download URL 'https:/x' has no host"),
        ("https://1.256.1/", "download URL 'https://1.256.1/' has a numeric host that is not a valid address"),
        ("https://4294967296/", "has a numeric host that is not a valid address"),
        ("https://1.16777216/", "has a numeric host that is not a valid address"),
        ("https://1.2.65536/", "has a numeric host that is not a valid address"),
        (
            "https://files example.com/x",
            "has an invalid host name 'files%20example.com': only letters, digits, '-', '_' and dots between labels "
            "can be resolved",
        ),
        ("https://files..example.com/x", "has an invalid host name 'files..example.com'"),
        ("https://files.example.com%2f/x", "has an invalid host name 'files.example.com%2f'"),
        (
            "https://svc.localhost/x?sig=SECRET",
            "download URL 'https://svc.localhost/x' points to svc.localhost; set EXPORT_WORKER_ALLOW_PRIVATE_NETWORKS=true "
            "only if that is intended (local simulators)",
        ),
        ("https://%5b%3a%3a1%5d/", "points to ::1, a loopback"),
        ("https://0x7f.0x.0x.1/", "points to 127.0.0.1, a loopback"),
        ("https://0177.1/", "points to 127.0.0.1, a loopback"),
        ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "a loopback/private/link-local/reserved address"),
        (
            "https://other.example.org/x#frag",
            "download host 'other.example.org' (port 443) of 'https://other.example.org/x' is not allowed "
            "(allowed: files.example.com, *.example.net:8443)",
        ),
    ],
)
def test_refusals_say_what_was_refused_and_why(url: str, message: str) -> None:
    guard = UrlGuard(["files.example.com", "*.example.net:8443"])
    with pytest.raises(UrlRejected) as caught:
        guard.check(url)
    assert message in str(caught.value)
    assert "SECRET" not in str(caught.value) and "frag" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://8.8.8/", "8.8.0.8"),  # three parts: the last one fills 16 bits
        ("https://1.255.1/", "1.255.0.1"),
        ("https://1.65535/", "1.0.255.255"),
        ("https://0x8.0x8.0x.010/", "8.8.0.8"),
        ("https://[2606:4700::a00:1]/", "2606:4700::a00:1"),  # public, although its low 32 bits read 10.0.0.1
    ],
)
def test_legacy_and_ipv6_literals_of_public_addresses_match_their_canonical_entry(url: str, host: str) -> None:
    assert UrlGuard([host]).check(url) == httpx.URL(url)


def test_a_url_too_long_to_show_is_cut_in_the_message() -> None:
    guard = UrlGuard(["files.example.com"])
    for length in (200, 201):
        url = "https://b.example.org/" + "x" * (length - len("https://b.example.org/"))
        with pytest.raises(UrlRejected) as caught:
            guard.check(url + "?sig=SECRET")
        shown = url if length == 200 else url[:200] + "…"
        assert f"of '{shown}' is not allowed" in str(caught.value)
    with pytest.raises(UrlRejected) as caught:
        guard.check("https://[::1/" + "y" * 300)
    assert "download URL 'https://[::1/" + "y" * 187 + "…' is not a valid URL" in str(caught.value)


def test_an_unparsed_url_string_is_shown_without_any_query_or_fragment() -> None:
    with pytest.raises(UrlRejected) as caught:
        UrlGuard(["files.example.com"]).check("https://[::1/x#frag#more?q=1?r=2")
    assert "download URL 'https://[::1/x' is not a valid URL" in str(caught.value)
    with pytest.raises(UrlRejected) as caught:
        UrlGuard(["files.example.com"]).check("https://[::1/x?q=1?r=2")
    assert "download URL 'https://[::1/x' is not a valid URL" in str(caught.value)


def test_a_parsed_url_is_checked_as_given() -> None:
    url = httpx.URL("https://files.example.com/f?sig=1")
    assert UrlGuard(["files.example.com"]).check(url) is url
