"""What every response carries and what every state change must pass: authentication, same origin, no framing.

State changes are POST only and refused when the browser says the request comes from another site
(``Sec-Fetch-Site``) or names another ``Origin``; no CORS header is ever sent, so no other origin can
read a page or an API answer either. Scripts (no Origin, no Sec-Fetch-Site) authenticate like anyone.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.dashboard.auth import BasicAuth

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def expected_origin(request: Request, public_origin: str | None) -> str:
    return (public_origin or f"{request.url.scheme}://{request.headers.get('host', '')}").rstrip("/")


def cross_origin_reason(request: Request, public_origin: str | None) -> str | None:
    """Why a state-changing request must be refused as coming from another origin, or None."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return f"the browser marked this request Sec-Fetch-Site: {site}"
    origin = request.headers.get("origin")
    expected = expected_origin(request, public_origin)
    if origin is not None and origin.rstrip("/") != expected:
        return f"Origin {origin} is not this dashboard's origin {expected}"
    return None


class SecurityMiddleware:
    """Authenticate every request (401 with a Basic challenge) and add the security headers to every answer."""

    def __init__(self, app: ASGIApp, auth: BasicAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        viewer = self.auth.viewer(HTTPConnection(scope))
        if viewer is None:
            response = PlainTextResponse(
                "authentication required", status_code=401, headers={"www-authenticate": 'Basic realm="export-worker"'}
            )
            await response(scope, receive, self._with_headers(send))
            return
        scope.setdefault("state", {})["viewer"] = viewer
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        return wrapped
