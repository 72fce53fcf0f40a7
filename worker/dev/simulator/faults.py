"""Scripted, deterministic faults and the middleware that applies them.

Tests queue faults through ``POST /_sim/faults``: the next requests whose path contains a string
(and, optionally, whose method matches) get the scripted statuses in order, or have their body cut
off after about half of it, and then normal behaviour resumes. Faults, added latency and the
response counters apply to provider calls only, never to the ``/_sim`` control endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTROL_PREFIX = "/_sim"
TRUNCATE = "truncate"


class SimulatedTruncation(Exception):
    """Raised mid-stream so that the server drops the connection with the body half sent."""


class FaultSpec(BaseModel):
    """Body of ``POST /_sim/faults``."""

    model_config = ConfigDict(extra="forbid")

    path_contains: str
    method: str | None = None
    statuses: list[int] = Field(default_factory=list)
    retry_after: str | None = None
    """Sent as ``Retry-After`` with every scripted 429 of this spec."""
    truncate: int = Field(0, ge=0)
    """How many matching responses to cut off after about half of their body."""

    @model_validator(mode="after")
    def _does_something(self) -> FaultSpec:
        if not self.statuses and not self.truncate:
            raise ValueError("a fault needs statuses or truncate")
        return self


@dataclass
class _PendingFault:
    spec: FaultSpec
    actions: list[int | str] = field(default_factory=list)

    def matches(self, method: str, path: str) -> bool:
        wanted = self.spec.method
        return self.spec.path_contains in path and (wanted is None or wanted.upper() == method)


class FaultQueue:
    """Faults waiting for their requests, consumed first-queued first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_PendingFault] = []

    def add(self, spec: FaultSpec) -> None:
        with self._lock:
            self._pending.append(_PendingFault(spec, [*spec.statuses, *[TRUNCATE] * spec.truncate]))

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self, method: str, path: str) -> tuple[FaultSpec, int | str] | None:
        """Consume the next action (a status code or ``TRUNCATE``) scripted for this request."""
        with self._lock:
            for pending in self._pending:
                if pending.matches(method, path):
                    action = pending.actions.pop(0)
                    if not pending.actions:
                        self._pending.remove(pending)
                    return pending.spec, action
        return None

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**p.spec.model_dump(), "remaining": list(p.actions)} for p in self._pending]


class _QuietTruncation(logging.Filter):
    """Drops uvicorn's traceback for connections we cut on purpose; real errors still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BaseExceptionGroup):
            return error.subgroup(SimulatedTruncation) is None
        return not isinstance(error, SimulatedTruncation)


def quiet_truncation_logs() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietTruncation) for f in logger.filters):
        logger.addFilter(_QuietTruncation())


class FaultMiddleware:
    """Pure ASGI middleware (no per-chunk overhead on large downloads) for latency and faults."""

    def __init__(
        self,
        app: ASGIApp,
        faults: FaultQueue,
        latency: Callable[[], float],
        on_status: Callable[[int], None],
    ) -> None:
        self.app = app
        self.faults = faults
        self.latency = latency
        self.on_status = on_status
        quiet_truncation_logs()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        if delay := self.latency():
            await asyncio.sleep(delay)
        send = self._counting(send)
        fault = self.faults.take(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
        elif fault[1] == TRUNCATE:
            await self.app(scope, receive, _truncating(send))
        else:
            await _fault_response(send, int(fault[1]), fault[0].retry_after)

    def _counting(self, send: Send) -> Send:
        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.on_status(message["status"])
            await send(message)

        return counting_send


def _truncating(send: Send) -> Send:
    """Passes the response through until about half the declared length, then aborts it."""
    sent = 0
    cut_at = 0

    async def truncating_send(message: Message) -> None:
        nonlocal sent, cut_at
        if message["type"] == "http.response.start":
            lengths = [v for k, v in message.get("headers", []) if k.lower() == b"content-length"]
            cut_at = int(lengths[0]) // 2 if lengths else 0
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if sent + len(body) > cut_at:
                await send({"type": "http.response.body", "body": body[: cut_at - sent], "more_body": True})
                raise SimulatedTruncation(f"simulated truncation after {cut_at} bytes")
            sent += len(body)
        await send(message)

    return truncating_send


async def _fault_response(send: Send, status: int, retry_after: str | None) -> None:
    body = orjson.dumps({"message": f"Simulated fault: HTTP {status}", "requestId": "sim-fault"})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 429 and retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
