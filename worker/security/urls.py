"""Decide whether a download URL handed to us by a provider may be fetched at all.

Download URLs come from provider responses, so they are untrusted input: a compromised or buggy
provider (or a man in the middle of a redirect) must not make the worker fetch
``http://169.254.169.254/latest/meta-data/`` or anything else on the worker's own network (SSRF).

The defence is an allowlist of hosts (exact names or ``*.example.com``), checked for the first URL
and for every redirect hop, plus a refusal of loopback/private/link-local/... IP literals and
``localhost`` names unless private networks are explicitly allowed (the local simulator needs that).

There is deliberately no DNS resolution here: the check must not touch the network, the answer
could change between our lookup and the connection's own (DNS rebinding would win that race
anyway), and the allowlist - only hosts you trust - is the primary defence.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import httpx

from worker.errors import UrlRejected

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOSTS_SETTING = "EXPORT_WORKER_DOWNLOAD_HOSTS"
_PRIVATE_SETTING = "EXPORT_WORKER_ALLOW_PRIVATE_NETWORKS"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
"""DNS labels as resolvers take them (``_`` too: some real hosts have it); anything else cannot be fetched."""
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")


@dataclass(frozen=True, slots=True)
class _Pattern:
    host: str
    """Canonical host; for a wildcard, the suffix without ``*.``."""
    wildcard: bool
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


class UrlGuard:
    """Allowlist check for download URLs; :meth:`check` runs before every request and redirect hop.

    ``allowed_hosts`` entries are ``host``, ``host:port``, ``*.domain`` or ``*.domain:port``; an
    entry without a port allows any port. ``*.domain`` matches subdomains at any depth, not
    ``domain`` itself. ``allow_private`` permits plain ``http``, loopback/private addresses and
    ``localhost`` (for local simulators and tests only); the allowlist still applies.
    """

    def __init__(self, allowed_hosts: Iterable[str], *, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self._patterns = tuple(_parse_pattern(entry) for entry in allowed_hosts if entry.strip())

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        return tuple(
            ("*." if p.wildcard else "") + (f"[{p.host}]" if ":" in p.host else p.host) + (f":{p.port}" if p.port else "")
            for p in self._patterns
        )

    def check(self, url: str | httpx.URL) -> httpx.URL:
        """Return the parsed URL if it may be fetched; raise :class:`UrlRejected` saying why not."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise UrlRejected(f"download URL {_shown(url)!r} is not a valid URL ({exc})") from None
        shown = _shown(parsed)
        scheme = parsed.scheme
        if scheme not in _DEFAULT_PORTS:
            raise UrlRejected(f"download URL {shown!r} uses scheme {scheme or '(none)'!r}; only https is fetched")
        if parsed.userinfo:
            raise UrlRejected(f"download URL {shown!r} carries credentials (user:password@); refusing it")
        try:
            host = parsed.raw_host.decode("ascii").lower().rstrip(".")
        except UnicodeDecodeError:
            raise UrlRejected(f"download URL {shown!r} has an invalid host") from None
        if not host:
            raise UrlRejected(f"download URL {shown!r} has no host")
        address = _ip_of(host)
        if address is None and _NUMERIC_HOST.fullmatch(host):
            raise UrlRejected(f"download URL {shown!r} has a numeric host that is not a valid address")
        if address is None and not _HOST_NAME.fullmatch(host):
            raise UrlRejected(
                f"download URL {shown!r} has an invalid host name {host!r}: only letters, digits, '-', '_' and dots "
                "between labels can be resolved"
            )
        if not self.allow_private:
            if address is not None and _is_internal(address):
                raise UrlRejected(
                    f"download URL {shown!r} points to {address}, a loopback/private/link-local/reserved "
                    f"address; set {_PRIVATE_SETTING}=true only if that is intended (local simulators)"
                )
            if address is None and (host == "localhost" or host.endswith(".localhost")):
                raise UrlRejected(
                    f"download URL {shown!r} points to {host}; set {_PRIVATE_SETTING}=true only if that "
                    "is intended (local simulators)"
                )
        if scheme == "http" and not self.allow_private:
            raise UrlRejected(
                f"download URL {shown!r} is plain http; only https is fetched unless "
                f"{_PRIVATE_SETTING}=true (meant for local simulators)"
            )
        canonical = str(address) if address is not None else host
        port = parsed.port or _DEFAULT_PORTS[scheme]
        if not any(pattern.matches(canonical, port) for pattern in self._patterns):
            allowed = ", ".join(self.allowed_hosts) or "none"
            raise UrlRejected(
                f"download host {canonical!r} (port {port}) of {shown!r} is not allowed (allowed: {allowed}); "
                f"add it to {_HOSTS_SETTING} for this provider if it is legitimate"
            )
        return parsed


def _parse_pattern(entry: str) -> _Pattern:
    text = entry.strip().lower()
    if "://" in text or "/" in text or "@" in text:
        raise ValueError(f"download host {entry!r} must be a host name or host:port, not a URL")
    wildcard = text.startswith("*.")
    if wildcard:
        text = text[2:]
    port: int | None = None
    if text.startswith("["):  # [v6] or [v6]:port
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), entry)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, entry)
    else:
        host = text  # a name, or a bare IPv6 address
    host = host.rstrip(".")
    if not host or "*" in host:
        raise ValueError(f"download host {entry!r} is not a host name or *.domain pattern")
    address = _ip_of(host)
    if address is not None:
        if wildcard:
            raise ValueError(f"download host {entry!r}: a wildcard needs a domain, not an address")
        return _Pattern(str(address), False, port)
    try:
        canonical = httpx.URL(f"https://{host}/").raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, UnicodeDecodeError) as exc:
        raise ValueError(f"download host {entry!r} is not a valid host name ({exc})") from None
    return _Pattern(canonical, wildcard, port)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"download host {entry!r} has an invalid port")
    return int(text)


def _ip_of(host: str) -> IPAddress | None:
    """The address a host denotes, including the legacy forms ``inet_aton`` accepts (``2130706433``,
    ``0x7f.1``, ``0177.0.0.1``, ``127.1``): the system resolver would connect to those too."""
    text = unquote(host).strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if not _NUMERIC_HOST.fullmatch(text):
        return None
    try:
        numbers = [_legacy_number(part) for part in text.split(".")]
    except ValueError:
        return None
    *head, last = numbers
    if any(number > 255 for number in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _legacy_number(part: str) -> int:
    """One part of a legacy IPv4 literal: ``0x`` hex, leading-zero octal, or decimal."""
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if part.startswith("0") and part != "0":
        return int(part, 8)
    return int(part)


def _is_internal(address: IPAddress) -> bool:
    """Anything that is not a plain public unicast address, looking through IPv6 wrappers of IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address | None] = [address.ipv4_mapped, address.sixtofour]
        if address.teredo:
            embedded.extend(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and _is_internal(inner) for inner in embedded):
            return True
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


def _shown(url: object) -> str:
    """The URL without its query string: signed URLs carry their signature there."""
    if isinstance(url, httpx.URL):
        text = str(url.copy_with(query=None, fragment=None)) if url.query or url.fragment else str(url)
    else:
        text = str(url).split("?", 1)[0].split("#", 1)[0]
    return text if len(text) <= 200 else text[:200] + "…"
