"""Building httpx auth from a named credential, with a clear error when it is not configured."""

from __future__ import annotations

from collections.abc import Generator

import httpx

from worker.errors import PermanentError
from worker.settings import Credential


def missing(credential_name: str, provider: str, fields: str) -> PermanentError:
    env = f"EXPORT_WORKER_CREDENTIALS__{credential_name.upper()}"
    return PermanentError(
        f"credential {credential_name!r} for {provider} is not configured on the worker: set {fields} "
        f"(e.g. {env}__{fields.split(',')[0].strip().upper()}) in the worker's environment or .env"
    )


class BearerAuth(httpx.Auth):
    """Bearer token auth that keeps the token out of reprs and logs."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    @classmethod
    def from_credential(cls, credential: Credential, credential_name: str, provider: str) -> BearerAuth:
        if credential.token is None:
            raise missing(credential_name, provider, "token")
        return cls(credential.token.get_secret_value())

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<redacted>)"


def basic_auth(credential: Credential, credential_name: str, provider: str) -> httpx.BasicAuth:
    if credential.account_sid is None or credential.auth_token is None:
        raise missing(credential_name, provider, "account_sid, auth_token")
    return httpx.BasicAuth(credential.account_sid, credential.auth_token.get_secret_value())
