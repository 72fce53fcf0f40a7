"""HTTP basic authentication against Argon2id hashes, and who is asking.

A browser sends the password with every request (each live refresh too), and one Argon2 check costs
tens of milliseconds and 64 MiB by design, so a successful check is remembered for a few minutes
under a keyed digest of user and password (never the password itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import HTTPConnection

from worker.dashboard.settings import DashboardUser, Role

REMEMBER_SECONDS = 300.0
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """An Argon2id hash (argon2-cffi's defaults, RFC 9106's second recommended option) for the users setting."""
    return _HASHER.hash(password)


@dataclass(frozen=True)
class Viewer:
    """Who is asking: a user name and role, or the unauthenticated local user of a loopback-only dashboard."""

    name: str
    role: Role
    authenticated: bool


class BasicAuth:
    def __init__(self, users: dict[str, DashboardUser]) -> None:
        self.users = users
        self._key = secrets.token_bytes(32)
        self._remembered: dict[bytes, float] = {}

    @property
    def required(self) -> bool:
        return bool(self.users)

    def viewer(self, connection: HTTPConnection) -> Viewer | None:
        """The authenticated user, the local user when no users are configured, or None (answer 401)."""
        if not self.users:
            host = connection.client.host if connection.client else "local"
            return Viewer(name=f"unauthenticated@{host}", role="operator", authenticated=False)
        credentials = _basic_credentials(connection.headers.get("authorization", ""))
        if credentials is None:
            return None
        name, password = credentials
        user = self.users.get(name)
        if user is None or not self._verify(name, password, user.password_hash):
            return None
        return Viewer(name=name, role=user.role, authenticated=True)

    def _verify(self, name: str, password: str, password_hash: str) -> bool:
        digest = hmac.new(self._key, f"{name}\0{password}\0{password_hash}".encode(), hashlib.sha256).digest()
        now = time.monotonic()
        if self._remembered.get(digest, 0.0) > now:
            return True
        try:
            _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        if len(self._remembered) > 1000:
            self._remembered = {key: until for key, until in self._remembered.items() if until > now}
        self._remembered[digest] = now + REMEMBER_SECONDS
        return True


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None
