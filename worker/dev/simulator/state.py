"""The simulator's in-memory state: config, jobs, counters and pending faults.

Everything lives in one process (uvicorn runs a single worker), guarded by one lock because the
control endpoints, the provider routes and test threads may all touch it.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from typing import Any, Literal, TypeVar

from worker.dev.simulator.config import SimulatorConfig
from worker.dev.simulator.faults import FaultQueue
from worker.dev.simulator.jobs import Clock, SimJob

PROVIDERS = ("samsara", "impact")
_ID_NAMESPACE = uuid.UUID("6f0d8f0e-5b7a-4c43-9d0e-3c1f5b0a9e21")

Counted = Literal["creates", "polls", "downloads"]
J = TypeVar("J", bound=SimJob)


class SimState:
    def __init__(self, config: SimulatorConfig, clock: Clock) -> None:
        self.lock = threading.RLock()
        self.config = config
        self.clock = clock
        self.faults = FaultQueue()
        # Never reset: a reset simulator must not hand out ids a worker may still remember.
        self._sequence = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.jobs: dict[str, SimJob] = {}
            self.counters: dict[Counted, Counter[str]] = {
                name: Counter(dict.fromkeys(PROVIDERS, 0)) for name in ("creates", "polls", "downloads")
            }
            self.statuses: Counter[str] = Counter()
            self.quota_used: Counter[tuple[str, str, int]] = Counter()
            """Requests per (account, quota, window index), for providers that enforce quotas."""
            self.faults.clear()

    def next_id(self, provider: str) -> str:
        """Deterministic (same sequence on every run) yet unique ids."""
        return str(uuid.uuid5(_ID_NAMESPACE, f"{provider}:{next(self._sequence)}"))

    def add_job(self, job: SimJob) -> None:
        with self.lock:
            self.jobs[job.job_id] = job

    def job(self, kind: type[J], job_id: str) -> J | None:
        """The job with this id if it belongs to the provider ``kind`` models."""
        with self.lock:
            job = self.jobs.get(job_id)
        return job if isinstance(job, kind) else None

    def count(self, what: Counted, provider: str) -> None:
        with self.lock:
            self.counters[what][provider] += 1

    def count_status(self, status: int) -> None:
        with self.lock:
            self.statuses[str(status)] += 1

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        with self.lock:
            return {
                **{name: dict(counter) for name, counter in self.counters.items()},
                "responses_by_status": dict(self.statuses),
                "jobs": {job_id: job.stats(now) for job_id, job in self.jobs.items()},
            }
