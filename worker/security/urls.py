"""The download allowlist: a URL is checked before any request is sent, and again on every redirect.

No DNS resolution happens here: the host allowlist is the primary defence (a provider's signed
URLs live on a few known hosts), and resolving would need the network and still be open to
rebinding. What we can judge from the URL alone (IP literals, localhost) is refused outright.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import httpx

from worker.errors import UrlRejected

HOW_TO_ALLOW = (
    "allow the host with EXPORT_WORKER_DOWNLOAD_HOSTS (per provider), and private or loopback "
    "addresses only with EXPORT_WORKER_ALLOW_PRIVATE_NETWORKS=true"
)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


class UrlGuard:
    def __init__(self, allowed_hosts: Iterable[str], *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for pattern in allowed_hosts:
            pattern = pattern.strip().lower()
            if pattern.startswith("*."):
                self.suffixes.append(pattern[1:])
            elif pattern:
                self.exact.add(pattern)

    def _host_allowed(self, host: str, port: int | None) -> bool:
        if host in self.exact or (port is not None and f"{host}:{port}" in self.exact):
            return True
        return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes)

    def check(self, url: str | httpx.URL) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise UrlRejected(f"refusing to download {str(url)[:200]!r}: not a valid URL ({exc})") from exc
        scheme = parsed.scheme
        if scheme not in ("https", "http"):
            raise UrlRejected(f"refusing to download {str(parsed)[:200]!r}: scheme {scheme!r} is not allowed (only https)")
        if scheme == "http" and not self.allow_private:
            raise UrlRejected(f"refusing to download {str(parsed)[:200]!r}: plain http is not allowed; {HOW_TO_ALLOW}")
        if parsed.userinfo:
            raise UrlRejected(f"refusing to download from {parsed.host!r}: credentials inside a URL are not allowed")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise UrlRejected(f"refusing to download {str(parsed)[:200]!r}: no host")
        address = _ip(host)
        local_name = host == "localhost" or host.endswith(".localhost")
        if not self.allow_private and ((address is not None and _is_private(address)) or local_name):
            raise UrlRejected(f"refusing to download from {host!r}: a private, loopback or link-local address; {HOW_TO_ALLOW}")
        if not self._host_allowed(host, parsed.port):
            raise UrlRejected(f"refusing to download from {host!r}: host is not in the download allowlist; {HOW_TO_ALLOW}")
        return parsed
