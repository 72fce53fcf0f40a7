"""Loaded into the benchmark's worker (``celery worker --include bench.probe``): records when each poll ran.

One RPUSH of ``"<token> <wall-clock time>"`` per finished poll task onto ``<prefix>:bench:polled``,
so the benchmark can tell how long after its due time each poll (numbered by its stale token) ran,
whatever the broker.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Any

import redis
from celery import signals

from worker.dispatch import POLL_TASK
from worker.settings import get_settings


def polled_key(prefix: str) -> str:
    return f"{prefix}:bench:polled"


@lru_cache(maxsize=2)
def _client(pid: int) -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url)


@signals.task_postrun.connect
def _record(sender: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    if getattr(sender, "name", None) == POLL_TASK:
        token = (kwargs or {}).get("token")
        _client(os.getpid()).rpush(polled_key(get_settings().key_prefix), f"{token} {time.time()}")
