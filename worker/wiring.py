"""Process-wide wiring: settings, Redis store and a dispatcher, built once per process (after fork)."""

from __future__ import annotations

import os
from functools import lru_cache

from celery import Celery

from worker.dispatch import CeleryDispatcher
from worker.engine.context import Runtime
from worker.settings import Settings, get_settings
from worker.store import ExportStore


def make_store(settings: Settings) -> ExportStore:
    return ExportStore.from_url(
        settings.redis_url,
        settings.key_prefix,
        retention_seconds=settings.retention_seconds,
        allow_evicting=settings.allow_evicting_store,
    )


def build_runtime(settings: Settings, app: Celery) -> Runtime:
    """A runtime for ``settings`` that sends its next steps through ``app`` (built for the same settings)."""
    return Runtime(settings=settings, store=make_store(settings), dispatcher=CeleryDispatcher(app, settings))


@lru_cache(maxsize=4)
def _runtime_for_pid(pid: int, app: Celery) -> Runtime:
    return build_runtime(get_settings(), app)


def runtime(app: Celery) -> Runtime:
    """The runtime of this process for ``app``; keyed by pid so prefork children never share sockets."""
    return _runtime_for_pid(os.getpid(), app)
