"""One watchdog run over many active exports: time, Redis round trips and bytes, peak memory, per export.

Records are written straight into a private ``redis-server`` (no provider, no Celery): N RUNNING
exports, each with one polling job, indexed as the store indexes them. One run is measured in three
states, then the watchdog of the commit before this design (``git show BASELINE:…``) on the same
records:

- *nothing due*: every export was looked at recently and its next poll is not overdue, the steady
  state between two looks;
- *all due*: every export's look is due but nothing is silent (after an upgrade, or a long pause
  of beat), the worst case; a run looks at no more than ``WATCHDOG_MAX_EXPORTS``;
- *before*: the previous watchdog, which read the whole ``active`` set and every record each run.

Round trips and commands are counted on the watchdog's own connections; bytes are what the private
Redis sent (INFO ``total_net_output_bytes``); memory is the Python heap's peak during the run
(tracemalloc).
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.common import Deadline, PrivateRedis, Result
from bench.pollstep import CountingConnection
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.engine.watchdog import run_watchdog
from worker.models import ExportRecord, ExportStatus, JobRecord, JobStatus
from worker.settings import Settings
from worker.store import ExportStore

NAME = "watchdog"
TITLE = "One watchdog run over many active exports (records written directly, private Redis)"
SIZES = {"smoke": 300, "full": 100_000}
SIZE_UNIT = "active exports (full size also measures 10,000)"
TIME_BOUND = {"smoke": 60.0, "full": 1800.0}
BASELINE = "64664c9"
"""The last commit whose watchdog read every active export."""
BASELINE_TWICE_UP_TO = 10_000

PARAMS = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2, 3]}


def _write_exports(client: redis.Redis, prefix: str, count: int, now: float, deadline: Deadline) -> None:
    """N RUNNING exports with one POLLING job due a minute from now, indexed as the store indexes them."""
    due = now + 60
    with client.pipeline(transaction=False) as pipe:
        for number in range(count):
            export_id = f"{number:08x}{uuid.uuid4().hex[:8]}"
            job = JobRecord(
                key="0", params=PARAMS, status=JobStatus.POLLING, provider_job_id=f"j{number}", token=3, next_action_at=due
            )
            record = ExportRecord(
                id=export_id,
                provider="samsara",
                params=PARAMS,
                credential="default",
                status=ExportStatus.RUNNING,
                jobs={"0": job},
                created_at=now - 600,
                updated_at=now,
                deadline_at=now + 6 * 3600,
            )
            pipe.set(f"{prefix}:export:{export_id}", record.model_dump_json())
            pipe.zadd(f"{prefix}:exports", {export_id: record.created_at})
            pipe.sadd(f"{prefix}:active", export_id)
            pipe.zadd(f"{prefix}:watch", {export_id: due})
            pipe.zadd(f"{prefix}:deadlines", {export_id: record.deadline_at})
            if number % 2000 == 1999:
                pipe.execute()
                deadline.check(f"writing exports: {number + 1} of {count}")
        pipe.hset(f"{prefix}:stats:status", "RUNNING", count)
        pipe.execute()


def _baseline_watchdog() -> Callable[[Runtime], Any] | None:
    """``run_watchdog`` as of BASELINE, or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(
            ["git", "show", f"{BASELINE}:worker/engine/watchdog.py"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("baseline_watchdog")
    sys.modules[module.__name__] = module  # its dataclass looks its module up there
    exec(compile(source, f"{BASELINE}:worker/engine/watchdog.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module.run_watchdog  # type: ignore[no-any-return]


def _one_run(run: Callable[[Runtime], Any], rt: Runtime, probe: redis.Redis, again: Callable[[], None] | None) -> dict[str, Any]:
    """Time one run (round trips, bytes), then ``again()`` restores the state and a second run gives the
    memory peak: tracemalloc slows Python down several times, so it never runs under the clock. Without
    ``again`` (a run too long to do twice) the peak is not measured."""
    sent_before = int(probe.info("stats")["total_net_output_bytes"])
    trips, commands = CountingConnection.round_trips, CountingConnection.commands
    start = time.perf_counter()
    report = run(rt)
    seconds = time.perf_counter() - start
    measured = {
        "seconds": round(seconds, 4),
        "round_trips": CountingConnection.round_trips - trips,
        "commands": CountingConnection.commands - commands,
        "redis_bytes_sent": int(probe.info("stats")["total_net_output_bytes"]) - sent_before,
        "scanned": report.scanned,
        "report": vars(report),
    }
    if again is None:
        measured["peak_python_mib"] = None
        return measured
    again()
    tracemalloc.start()
    run(rt)
    measured["peak_python_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 2)
    tracemalloc.stop()
    return measured


def _measure(url: str, count: int, deadline: Deadline) -> dict[str, Any]:
    prefix = f"aew-bench-wd-{uuid.uuid4().hex[:6]}"
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    counted = redis.Redis(connection_pool=pool)
    probe = redis.Redis.from_url(url)
    settings = Settings(_env_file=None, redis_url=url, key_prefix=prefix)
    rt = Runtime(settings=settings, store=ExportStore(counted, prefix), dispatcher=RecordingDispatcher())
    now = time.time()
    _write_exports(probe, prefix, count, now, deadline)
    measured: dict[str, Any] = {
        "active": count,
        "redis_used_memory_mib": round(int(probe.info("memory")["used_memory"]) / 2**20, 1),
    }
    watch = f"{prefix}:watch"

    def every_look_due() -> None:
        probe.zunionstore(watch, {watch: 0})

    run_watchdog(rt)  # the sweep's first page and script loads: what any later run no longer pays
    measured["nothing_due"] = _one_run(run_watchdog, rt, probe, lambda: None)
    deadline.check(f"{count}: nothing due measured")
    every_look_due()
    measured["all_due"] = _one_run(run_watchdog, rt, probe, every_look_due)
    deadline.check(f"{count}: all due measured")
    baseline = _baseline_watchdog()
    if baseline is not None:  # reads every export: at 100,000 one run takes minutes, so it runs once
        measured["before"] = _one_run(baseline, rt, probe, (lambda: None) if count <= BASELINE_TWICE_UP_TO else None)
    for key in probe.scan_iter(match=f"{prefix}:*", count=5000):
        probe.delete(key)
    counted.close()
    pool.disconnect()
    probe.close()
    return measured


def _peak(run: dict[str, Any]) -> str:
    peak = run["peak_python_mib"]
    return f"Python heap peak {peak} MiB" if peak is not None else "heap peak not measured (one run only)"


def _per_export_us(run: dict[str, Any]) -> float | None:
    return round(run["seconds"] / run["scanned"] * 1e6, 1) if run["scanned"] else None


def run(result: Result) -> None:
    deadline = Deadline(TIME_BOUND["smoke" if result.smoke else "full"], "watchdog")
    sizes = [10_000, result.size] if result.size == SIZES["full"] else [result.size]
    result.params.update({"sizes": sizes, "baseline": BASELINE, "settings": "defaults (page 200, 10,000 per pass)"})
    with PrivateRedis() as url:
        for count in sizes:
            measured = _measure(url, count, deadline)
            result.extra[str(count)] = measured
            label = f"{count:,} active"
            quiet, due = measured["nothing_due"], measured["all_due"]
            result.add(
                f"{label}: run with nothing due",
                quiet["seconds"] * 1000,
                "ms",
                note=f"{quiet['round_trips']} round trips, {quiet['redis_bytes_sent'] / 1024:.1f} KiB from Redis",
            )
            result.add(
                f"{label}: run with every look due",
                due["seconds"] * 1000,
                "ms",
                note=f"looked at {due['scanned']:,}; {due['round_trips']} round trips; "
                f"{due['redis_bytes_sent'] / 2**20:.1f} MiB from Redis; {_peak(due)}",
            )
            result.add(f"{label}: µs per export looked at", _per_export_us(due), "µs")
            before = measured.get("before")
            if before is not None:
                result.add(
                    f"{label}: previous watchdog, one run",
                    before["seconds"] * 1000,
                    "ms",
                    note=f"read {before['scanned']:,}; {before['round_trips']:,} round trips; "
                    f"{before['redis_bytes_sent'] / 2**20:.1f} MiB from Redis; {_peak(before)}; "
                    f"{_per_export_us(before)} µs per export",
                )
