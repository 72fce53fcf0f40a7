"""What every engine step runs with: settings, the Redis store, a dispatcher, a clock.

Injecting the dispatcher, clock, random source and HTTP transport is what lets the whole engine run
in unit tests (fakeredis, MockTransport, a list instead of Celery).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from worker.engine.backoff import BackoffPolicy
from worker.models import Callback, ExportRecord, FileTaskArgs, JobRecord, JobTaskArgs
from worker.providers.gateway import ProviderGateway
from worker.settings import Settings
from worker.sinks import Sink, SinkContext, open_sink
from worker.store import ExportStore

log = logging.getLogger("worker.engine")


class Dispatcher(Protocol):
    """How the engine schedules its next step; Celery in production, a list in unit tests."""

    def submit(self, args: JobTaskArgs, countdown: float) -> None: ...

    def poll(self, args: JobTaskArgs, countdown: float) -> None: ...

    def download(self, args: FileTaskArgs, countdown: float) -> None: ...

    def callback(self, callback: Callback, record: ExportRecord) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    store: ExportStore
    dispatcher: Dispatcher
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    transport: httpx.BaseTransport | None = None
    _gateways: dict[tuple[str, str], ProviderGateway] = field(default_factory=dict)

    @property
    def policy(self) -> BackoffPolicy:
        return BackoffPolicy.from_settings(self.settings)

    def sink(self, record: ExportRecord) -> Sink:
        return open_sink(SinkContext(self.settings, self.store, record))

    def gateway(self, provider: str, credential: str) -> ProviderGateway:
        key = (provider, credential)
        if key not in self._gateways:
            self._gateways[key] = ProviderGateway(provider, credential, self.settings, self.store, self.transport)
        return self._gateways[key]


def export_log(record: ExportRecord, job: JobRecord | None = None) -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(
        log,
        {
            "export_id": record.id,
            "provider": record.provider,
            "provider_job_id": job.provider_job_id if job else None,
        },
    )
