"""Redis memory while exports run continuously with a short retention: it stops growing after one retention.

A real worker and beat on a private ``redis-server`` (so other clients' keys and traffic are not in
the figure) run one small Samsara export a second against the simulator, into JSONL, for the whole
run. Every export is forgotten ``RETENTION`` seconds after it ends. Redis ``used_memory``, its key
count and the number of exports kept are sampled every few seconds. Reported: the growth rate
before anything could be forgotten (what a deployment without retention grows by forever), the rate
after the first retention period (flat), and the curve itself.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

import redis

from bench.common import Deadline, PrivateRedis, Result
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig

NAME = "soak"
TITLE = "Redis used_memory while exports run continuously with a short retention (private Redis)"
SIZES = {"smoke": 15, "full": 360}
SIZE_UNIT = "seconds of continuous exports"
RETENTION = {"smoke": 5, "full": 60}
SAMPLE_SECONDS = {"smoke": 1.0, "full": 2.0}
EXPORTS_PER_SECOND = 1.0
"""Samsara allows 100 creates a minute per credential, which the worker enforces."""

HOUR = "2026-11-23T00:00:00Z"
PARAMS = {"startHour": HOUR, "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2]}


def _slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 60 if spread else None


def _families(client: redis.Redis) -> dict[str, int]:
    """Keys by shape (ids and numbers replaced by ``*``): what is left in Redis and how much of it."""
    shapes: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        name = re.sub(r"aew-[0-9a-f]{8}", "<prefix>", name)
        name = re.sub(r"[0-9a-f]{16}|[0-9a-f-]{36}|\d+(?:[.-]\d+)*", "*", name)
        shapes[name] += 1
    return dict(shapes.most_common())


class Submitter(threading.Thread):
    def __init__(self, stack: LocalStack, seconds: float) -> None:
        super().__init__(name="soak-submitter", daemon=True)
        self.stack = stack
        self.seconds = seconds
        self.submitted: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        assert self.stack.client is not None
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < self.seconds:
                self.submitted.append(self.stack.client.submit("samsara", PARAMS))
                time.sleep(max(0.0, len(self.submitted) / EXPORTS_PER_SECOND - elapsed))
        except BaseException as exc:  # reported by the benchmark, which is still sampling
            self.error = exc


def run(result: Result) -> None:
    mode = "smoke" if result.smoke else "full"
    seconds, retention, every = result.size, RETENTION[mode], SAMPLE_SECONDS[mode]
    deadline = Deadline(seconds + 120, "soak")
    config = SimulatorConfig(
        samsara_default=SamsaraBehaviour(requested_seconds=0, processing_seconds=0.5, files=2, rows_per_file=50, gzip=False)
    )
    overrides: dict[str, Any] = {
        "retention_seconds": retention,
        "poll_initial_seconds": 0.3,
        "poll_max_seconds": 1.0,
        "watchdog_interval_seconds": 1.0,
    }
    result.params.update(
        {"seconds": seconds, "retention_seconds": retention, "exports_per_second": EXPORTS_PER_SECOND, **overrides}
    )
    samples: list[dict[str, float]] = []
    with (
        PrivateRedis() as url,
        LocalStack(simulator_config=config, redis_url=url, require_real_redis=True, settings_overrides=overrides) as stack,
    ):
        assert stack.settings is not None and stack.client is not None
        stack.start_worker(concurrency=2)
        stack.start_beat()
        stack.wait_ready()
        probe = redis.Redis.from_url(url)
        prefix = stack.settings.key_prefix
        submitter = Submitter(stack, seconds)
        start = time.monotonic()
        submitter.start()
        while submitter.is_alive():
            deadline.check(f"{len(samples)} samples")
            samples.append(
                {
                    "t": round(time.monotonic() - start, 1),
                    "used_memory": int(probe.info("memory")["used_memory"]),
                    "keys": int(probe.dbsize()),
                    "exports_kept": int(probe.zcard(f"{prefix}:exports")),
                    "submitted": len(submitter.submitted),
                }
            )
            time.sleep(every)
        if submitter.error is not None:
            raise RuntimeError(f"submitting stopped: {submitter.error}") from submitter.error
        completed = sum(1 for record in stack.client.recent(1000) if record.status.value == "COMPLETED")
        result.extra["families_at_end"] = _families(probe)
        probe.close()
    result.extra["samples"] = samples
    _report(result, samples, retention, completed)


def _report(result: Result, samples: list[dict[str, float]], retention: int, completed_kept: int) -> None:
    settled = retention + 5  # an export takes about 2 s, and the watchdog (every 1 s) drops forgotten ids
    before = [(s["t"], s["used_memory"]) for s in samples if s["t"] <= retention]
    after = [(s["t"], s["used_memory"]) for s in samples if s["t"] >= settled]
    kib = 1024
    result.add("exports submitted", samples[-1]["submitted"] if samples else 0)
    result.add(
        "exports kept at the end (completed among them)",
        samples[-1]["exports_kept"] if samples else 0,
        note=f"{completed_kept} completed",
    )
    growth = _slope_per_minute(before)
    flat = _slope_per_minute(after)
    result.add("used_memory growth before the first retention ends", round(growth / kib, 1) if growth else None, "KiB/min")
    result.add(
        "used_memory growth after it",
        round(flat / kib, 1) if flat is not None else None,
        "KiB/min",
        note=f"least squares over t ≥ {settled} s",
    )
    if after:
        values = [value for _, value in after]
        result.add("used_memory after it, min–max", f"{min(values) / 2**20:.2f}–{max(values) / 2**20:.2f}", "MiB")
    step = max(1, len(samples) // 24)
    result.extra["curve"] = [(s["t"], round(s["used_memory"] / 2**20, 2), s["keys"], s["exports_kept"]) for s in samples[::step]]
