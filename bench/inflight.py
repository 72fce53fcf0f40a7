"""In-flight scale: N impact.com exports submitted at once to ONE worker process (prefork, concurrency 4).

The simulator runs on an accelerated clock (``time_scale`` 60: one simulated minute per real
second) and five report ids give jobs of 1, 2, 3, 4 and 5 simulated minutes (15 s QUEUED, the rest
RUNNING), assigned round-robin. Each job's result is a small CSV (one file per export).

Why impact.com and not Samsara: Samsara's documented limit of 5 polls per second per credential
is enforced by the worker itself through a Redis rate limiter, so 10,000 Samsara exports on one
credential would take at least (polls per export × 10,000) / 5 seconds — over two hours — and the
benchmark would measure the rate limit, not the worker. impact.com allows an account 100
ReportExports a day, a budget the worker keeps: the exports are spread round-robin over as many
simulated accounts (one credential each) as that takes, 100 for 10,000 exports, as a deployment
exporting that much would hold. The simulator enforces both quotas per account, as the provider does.

Measured while the exports run (sampled about once a second): tasks executing in the pool and how
long each has been running (``celery inspect active``), tasks held for a later countdown
(``inspect scheduled``), the broker queue length, Redis ``used_memory`` and the worker's RSS
(psutil, whole process tree). Afterwards: Redis commands per poll step (INFO commandstats delta,
background subtracted, over the sum of ``jobs[*].polls`` of all records), provider API calls per
export (simulator ``/_sim/stats``), and the delay between a provider job becoming terminal (the
simulator's own timeline, exact to the microsecond; the job JSON rounds ``CompletedDate`` to whole
seconds) and our noticing it (the ``at`` of the ``job_status`` event on ``<prefix>:events``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

from bench.common import (
    CpuMeter,
    Deadline,
    MemorySampler,
    MiB,
    RedisProbe,
    Result,
    bench_stack,
    median,
    percentile,
    tree_memory,
    wait_for_workers,
    worker_names,
)
from worker.dev.localstack import SIM_IMPACT_CREDENTIAL, LocalStack
from worker.dev.simulator import ImpactBehaviour, SimulatorConfig
from worker.models import ExportRecord, JobTaskArgs
from worker.providers.impact import REPORT_EXPORT_QUOTA

NAME = "inflight"
TITLE = "In-flight scale: many exports waiting on the provider, one worker (concurrency 4)"
SIZES = {"smoke": 50, "full": 10_000}
SIZE_UNIT = "exports"
TIME_BOUND = {"smoke": 60.0, "full": 1200.0}
TIME_SCALE = 60.0
JOB_MINUTES = (1, 2, 3, 4, 5)
ROWS = 20
CONCURRENCY = 4
BLOCKED_AFTER_SECONDS = 2.0
"""A task still running after this long would be a slot held while waiting (a poll takes milliseconds)."""
SETTINGS = {
    "poll_initial_seconds": 1.0,
    "poll_max_seconds": 4.0,
    "slow_poll_seconds": 4.0,
    "visibility_timeout_seconds": 1800,
    "unacked_restore_seconds": 60,
    "lease_seconds": 60.0,
}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
LAST_DAY = date(2026, 11, 1)
HOLD_COUNTDOWN_SECONDS = 900.0
"""Longer than the rest of the run, shorter than the visibility timeout: held, never run, never redelivered."""


EXPORTS_PER_ACCOUNT = REPORT_EXPORT_QUOTA.requests
"""An account's daily ReportExport budget, which the worker keeps: more exports on one account wait for tomorrow."""


def _accounts(total: int) -> list[str]:
    """The credentials the exports go to, round-robin: the stack's own account, then further ones."""
    count = -(-total // EXPORTS_PER_ACCOUNT)
    return [SIM_IMPACT_CREDENTIAL, *(f"IRbench{index:04d}" for index in range(1, count))]


def _report_id(index: int) -> str:
    return f"bench_{JOB_MINUTES[index % len(JOB_MINUTES)]}m"


def _report_params(index: int, accounts: int) -> dict[str, str]:
    """A day of its own for each export of an account: impact.com answers identical parameters with the job it
    already has, so exports asking the same would share a few provider jobs and measure less than they claim."""
    day = (LAST_DAY - timedelta(days=index // accounts)).isoformat()
    return {"START_DATE": day, "END_DATE": day}


class Monitor:
    """Samples the worker and Redis about once a second while the exports run."""

    def __init__(self, stack: LocalStack, probe: RedisProbe, total: int) -> None:
        assert stack.client is not None and stack.settings is not None
        self.stack = stack
        self.client = stack.client
        self.probe = probe
        self.total = total
        self.app = stack.client.rt.dispatcher.app  # type: ignore[attr-defined]
        self.worker = worker_names(stack)[0]
        self.queue = stack.settings.queue
        self.last_event = "0-0"
        self.completed_at: dict[str, float] = {}
        """export id → ``at`` of the job_status COMPLETED event."""
        self.event_kinds: Counter[str] = Counter()
        self.samples: list[dict[str, Any]] = []
        self.peak_memory = 0
        self.start = time.monotonic()

    def read_events(self) -> None:
        while True:
            events = self.client.rt.store.read_events(self.last_event, block_ms=None, count=10_000)
            if not events:
                return
            for entry_id, event in events:
                self.last_event = entry_id
                self.event_kinds[event.get("type", "?")] += 1
                if event.get("type") == "job_status" and event.get("provider_status") == "COMPLETED":
                    self.completed_at.setdefault(event["export_id"], float(event["at"]))

    def terminal(self) -> int:
        counts = self.client.rt.store.status_counts()
        return sum(counts.get(status, 0) for status in TERMINAL)

    def sample(self, with_scheduled: bool) -> dict[str, Any]:
        inspect = self.app.control.inspect(destination=[self.worker], timeout=0.5)
        active = (inspect.active() or {}).get(self.worker)
        now = time.time()  # after the reply: ages err on the long side
        sample: dict[str, Any] = {"t": round(time.monotonic() - self.start, 2)}
        if active is not None:
            ages = [now - task["time_start"] for task in active if task.get("time_start")]
            sample.update(
                active=len(active),
                oldest_s=round(max(ages, default=0.0), 3),
                blocked=sum(age > BLOCKED_AFTER_SECONDS for age in ages),
            )
        if with_scheduled:
            scheduled = (inspect.scheduled() or {}).get(self.worker)
            if scheduled is not None:
                sample["scheduled"] = len(scheduled)
        memory = self.probe.used_memory()
        self.peak_memory = max(self.peak_memory, memory)
        sample.update(
            used_memory=memory,
            queue=int(self.client.rt.store.redis.llen(self.queue)),
            terminal=self.terminal(),
        )
        self.samples.append(sample)
        return sample


def run(result: Result) -> None:
    mode = "smoke" if result.smoke else "full"
    deadline = Deadline(TIME_BOUND[mode], f"inflight ({result.size} exports)")
    total = result.size
    accounts = _accounts(total)
    config = SimulatorConfig(
        time_scale=TIME_SCALE,
        impact_more_accounts={sid: f"bench-token-{sid}" for sid in accounts[1:]},
        impact_behaviours={
            f"bench_{minutes}m": ImpactBehaviour(queued_seconds=15, running_seconds=minutes * 60 - 15, rows=ROWS)
            for minutes in JOB_MINUTES
        },
    )
    result.params.update(
        {
            "exports": total,
            "provider": "impact (report_id exports)",
            "accounts": f"{len(accounts)} (one credential each, at most {EXPORTS_PER_ACCOUNT} ReportExports a day)",
            "time_scale": TIME_SCALE,
            "job_simulated_minutes": list(JOB_MINUTES),
            "rows_per_export": ROWS,
            "worker": f"1 process, prefork, concurrency {CONCURRENCY}",
            "settings_overrides": SETTINGS,
            "time_bound_s": TIME_BOUND[mode],
        }
    )
    result.add(
        "impact.com accounts the exports are spread over",
        len(accounts),
        note=f"one credential each, round-robin: an account's ReportExport budget is {EXPORTS_PER_ACCOUNT} a day, "
        "kept per account by the worker and by the simulator",
    )
    with bench_stack(config, dict(SETTINGS)) as stack:
        assert stack.client is not None and stack.simulator is not None and stack.settings is not None
        worker = stack.start_worker(concurrency=CONCURRENCY)
        wait_for_workers(stack, deadline)
        probe = RedisProbe(stack.client.rt.store.redis)
        background_before = probe.background_rate(1.0 if result.smoke else 3.0)
        baseline = probe.snapshot()
        monitor = Monitor(stack, probe, total)
        export_ids: list[str] = []
        submit_error: list[BaseException] = []
        submit_done: list[float] = []

        def submit_all() -> None:
            try:
                for index in range(total):
                    params = {"report_id": _report_id(index), "report_params": _report_params(index, len(accounts))}
                    credential = accounts[index % len(accounts)]
                    export_ids.append(stack.client.submit("impact", params, credential=credential))  # type: ignore[union-attr]
                submit_done.append(time.monotonic())
            except BaseException as exc:  # reported by the main thread
                submit_error.append(exc)

        redis_pid = int(probe.client.info("server")["process_id"])
        cpu = CpuMeter(
            {
                "worker tree": (worker.pid, True),
                "worker main": (worker.pid, False),
                "redis": (redis_pid, False),
                "bench process": (os.getpid(), False),
            }
        )
        rss = MemorySampler(worker.pid, interval=0.25 if result.smoke else 1.0)
        pss = MemorySampler(worker.pid, interval=1.0 if result.smoke else 5.0, pss=True)
        with rss, pss:
            submitter = threading.Thread(target=submit_all, name="submitter", daemon=True)
            submit_start = time.monotonic()
            submitter.start()
            tick = 0
            done = 0
            try:
                while True:
                    sample = monitor.sample(with_scheduled=tick % 5 == 0)
                    monitor.read_events()
                    done = sample["terminal"]
                    if submit_error:
                        raise RuntimeError(f"submitting failed after {len(export_ids)} exports: {submit_error[0]!r}")
                    if not submitter.is_alive() and done >= total:
                        break
                    if worker.poll() is not None:
                        raise RuntimeError(f"the worker exited with {worker.returncode}:\n{stack.logs()}")
                    deadline.check(f"{len(export_ids)} submitted, {done} of {total} finished")
                    tick += 1
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - submit_start) % 1.0))
            finally:
                wall = time.monotonic() - submit_start
                if submit_done:
                    result.extra["submit_seconds"] = round(submit_done[0] - submit_start, 2)
                result.extra["samples"] = monitor.samples
                result.extra["cpu_seconds"] = cpu.used()
                _report_live(result, monitor, rss, pss, wall, total, done)
        monitor.read_events()
        background_after = probe.background_rate(1.0 if result.smoke else 3.0)
        after = probe.snapshot()
        background = (background_before + background_after) / 2
        _report_after(result, stack, probe, baseline, after, background, export_ids, monitor)
        _hold_countdowns(result, stack, worker.pid, export_ids, monitor, deadline)


def _hold_countdowns(
    result: Result, stack: LocalStack, worker_pid: int, export_ids: list[str], monitor: Monitor, deadline: Deadline
) -> None:
    """What a waiting export costs the worker while its next poll is a countdown the worker holds.

    Above, the backlog meant every countdown had expired by the time the worker fetched it, so the
    worker never held any. Here one poll per export is sent with a long countdown (a stale token:
    were it ever run, it would exit at once) and the worker's memory is read once it holds them all.
    """
    assert stack.client is not None
    dispatcher = stack.client.rt.dispatcher
    before = _steady_memory(worker_pid)
    redis_before = monitor.probe.used_memory()
    for export_id in export_ids:
        dispatcher.poll(JobTaskArgs(export_id=export_id, job_key="0", token=0), HOLD_COUNTDOWN_SECONDS)
    redis = stack.client.rt.store.redis
    while int(redis.llen(monitor.queue)) > 0:
        deadline.check(f"the worker still has {redis.llen(monitor.queue)} countdown tasks to fetch")
        time.sleep(0.2)
    held = None
    while held is None or held < len(export_ids):
        deadline.check(f"the worker holds {held} of {len(export_ids)} countdown tasks")
        inspect = monitor.app.control.inspect(destination=[monitor.worker], timeout=5.0)
        scheduled = (inspect.scheduled() or {}).get(monitor.worker)
        held = len(scheduled) if scheduled is not None else held
    after = _steady_memory(worker_pid)
    count = max(len(export_ids), 1)
    result.add(
        "worker memory per held countdown (next poll of a waiting export)",
        (after - before) / count / 1024,
        "KiB",
        note=f"{held:,} countdown tasks held: worker RSS {before / MiB:.0f} → {after / MiB:.0f} MiB; Redis "
        f"{(monitor.probe.used_memory() - redis_before) / count / 1024:.2f} KiB each (message in the unacked hash)",
    )


def _steady_memory(pid: int) -> int:
    """The process tree's RSS once it stops moving (max of a few samples)."""
    samples = []
    for _ in range(5):
        samples.append(tree_memory(pid))
        time.sleep(0.2)
    return max(samples)


def _report_live(
    result: Result, monitor: Monitor, rss: MemorySampler, pss: MemorySampler, wall: float, total: int, done: int
) -> None:
    samples = [s for s in monitor.samples if "active" in s]
    busy = [s["active"] for s in samples]
    blocked = max((s["blocked"] for s in samples), default=None)
    waiting = [s for s in samples if total - s["terminal"] > CONCURRENCY * 10]
    result.add("exports finished", f"{done:,} of {total:,}", goal="all, within the time bound", met=done >= total)
    result.extra["wall_seconds"] = wall
    submitted = result.extra.get("submit_seconds")
    result.add(
        "wall time, first submit → last export finished",
        wall,
        "s",
        note=f"{done / wall:.1f} exports/s; submitting took {submitted} s" if submitted else f"{done / wall:.1f} exports/s",
    )
    result.add(
        "worker slots blocked while waiting",
        blocked,
        goal="~0",
        met=blocked == 0 if blocked is not None else None,
        note=f"most tasks seen running > {BLOCKED_AFTER_SECONDS:.0f}s at once, in {len(samples)} samples of "
        f"`inspect active`; slowest task seen {max((s['oldest_s'] for s in samples), default=0):.2f}s",
    )
    result.add(
        "busy slots (mean of samples) while exports wait",
        sum(s["active"] for s in waiting) / len(waiting) if waiting else (sum(busy) / len(busy) if busy else None),
        f"of {CONCURRENCY}",
        note=f"peak {max(busy, default=0)}; peak tasks held for a countdown (inspect scheduled): "
        f"{max((s.get('scheduled', 0) for s in monitor.samples), default=0):,}; "
        f"peak broker queue: {max((s['queue'] for s in monitor.samples), default=0):,}",
    )
    result.add(
        "worker RSS (process tree): start → peak → end",
        f"{rss.first / MiB:.0f} → {rss.peak / MiB:.0f} → {rss.last / MiB:.0f}",
        "MiB",
        note=f"PSS {pss.first / MiB:.0f} → {pss.peak / MiB:.0f} → {pss.last / MiB:.0f} MiB; "
        f"peak growth {(rss.peak - rss.first) / max(total, 1) / 1024:.1f} KiB per export",
    )
    result.extra["worker_rss_mib"] = rss.series()
    result.extra["worker_pss_mib"] = pss.series()


def _backlog_note(monitor: Monitor) -> str:
    peak = max((sample["queue"] for sample in monitor.samples), default=0)
    if peak <= CONCURRENCY * 10:
        return "; no broker backlog: the delay is the poll backoff"
    return f"; mostly broker backlog (up to {peak:,} tasks queued for the one worker), not the poll backoff"


def _records(stack: LocalStack, export_ids: list[str]) -> list[ExportRecord]:
    assert stack.client is not None
    store = stack.client.rt.store
    records: list[ExportRecord] = []
    for start in range(0, len(export_ids), 1000):
        keys = [store.key("export", export_id) for export_id in export_ids[start : start + 1000]]
        records += [ExportRecord.model_validate_json(raw) for raw in store.redis.mget(keys) if raw is not None]
    return records


def _report_after(
    result: Result,
    stack: LocalStack,
    probe: RedisProbe,
    baseline: Any,
    after: Any,
    background: float,
    export_ids: list[str],
    monitor: Monitor,
) -> None:
    assert stack.simulator is not None and stack.settings is not None and stack.client is not None
    count = len(export_ids)
    records = _records(stack, export_ids)
    statuses = Counter(record.status.value for record in records)
    polls = sum(job.polls for record in records for job in record.jobs.values())
    elapsed = after.at - baseline.at
    gross = after.total_calls - baseline.total_calls
    net = max(0.0, gross - background * elapsed)
    result.add(
        "Redis commands per poll step",
        net / polls if polls else None,
        note=f"all commands of the run (submit, polls, downloads, Celery broker) / {polls:,} poll steps; "
        f"{net / max(count, 1):.0f} per export; background {background:.0f}/s subtracted ({gross / max(polls, 1):.1f} gross)",
    )

    stats = stack.simulator.app.state.sim.stats()
    creates, sim_polls, downloads = (stats[kind]["impact"] for kind in ("creates", "polls", "downloads"))
    result.add(
        "provider API calls per export",
        (creates + sim_polls + downloads) / max(count, 1),
        note=f"{creates / max(count, 1):.2f} create + {sim_polls / max(count, 1):.2f} poll + "
        f"{downloads / max(count, 1):.2f} download",
    )

    tasks = creates + sim_polls + downloads  # one task per provider call here: no retries, one file each
    wall = result.extra.get("wall_seconds") or 0
    cpu = result.extra.get("cpu_seconds", {})
    if cpu and count:
        pool = cpu.get("worker tree", 0.0) - cpu.get("worker main", 0.0)
        result.add(
            "CPU per export (all processes)",
            1000 * (sum(v for k, v in cpu.items() if k != "worker tree") + pool) / count,
            "ms",
            note=f"pool {1000 * pool / count:.1f}, worker main {1000 * cpu.get('worker main', 0) / count:.1f}, "
            f"Redis {1000 * cpu.get('redis', 0) / count:.1f}, "
            f"simulator+submitter {1000 * cpu.get('bench process', 0) / count:.1f} ms; "
            f"{tasks / wall if wall else 0:,.0f} tasks/s through the worker",
        )

    jobs = stack.simulator.app.state.sim.jobs
    delays = []
    for record in records:
        job = record.jobs.get("0")
        seen = monitor.completed_at.get(record.id)
        if job is None or job.provider_job_id is None or seen is None or job.provider_job_id not in jobs:
            continue
        terminal = jobs[job.provider_job_id].timeline.phases[-1].start
        delays.append(seen - terminal)
    if delays:
        result.add(
            "detection delay, provider terminal → noticed (median)",
            median(delays),
            "s",
            note=f"p95 {percentile(delays, 95):.2f} s; {len(delays):,} jobs" + _backlog_note(monitor),
        )
        result.add("detection delay (max)", max(delays), "s")

    peak = monitor.peak_memory - baseline.used_memory
    retained = after.used_memory - baseline.used_memory
    result.add(
        "Redis memory per export: peak in flight / retained after completion",
        f"{peak / max(count, 1) / 1024:.2f} / {retained / max(count, 1) / 1024:.2f}",
        "KiB",
        note="INFO used_memory delta / exports; in flight includes the Celery messages",
    )
    sample_ids = export_ids[:: max(1, count // 20)][:20]
    prefix = stack.settings.key_prefix
    keys = {
        "export record": [f"{prefix}:export:{export_id}" for export_id in sample_ids],
        "file record": [f"{prefix}:export:{export_id}:file:0-0000" for export_id in sample_ids],
        "files set": [f"{prefix}:export:{export_id}:files" for export_id in sample_ids],
        "finished set": [f"{prefix}:export:{export_id}:finished" for export_id in sample_ids],
    }
    usage = {kind: median(probe.memory_usage(names)) for kind, names in keys.items()}
    events_bytes = probe.memory_usage([f"{prefix}:events"])[0]
    usage["events stream share"] = events_bytes / max(count, 1)
    usage["exports zset + active set share"] = sum(probe.memory_usage([f"{prefix}:exports", f"{prefix}:active"])) / max(count, 1)
    result.add(
        "MEMORY USAGE per export (median of 20 exports)",
        sum(value or 0 for value in usage.values()),
        "B",
        note="; ".join(f"{kind} {value or 0:.0f} B" for kind, value in usage.items()),
    )
    result.extra.update(
        {
            "statuses": dict(statuses),
            "poll_steps": polls,
            "redis_commands": RedisProbe.delta(baseline, after),
            "redis_background_per_s": background,
            "redis_used_memory": {"baseline": baseline.used_memory, "peak": monitor.peak_memory, "after": after.used_memory},
            "memory_usage_bytes": usage,
            "simulator_calls": {"creates": creates, "polls": sim_polls, "downloads": downloads},
            "events": dict(monitor.event_kinds),
            "detection_delays_s": {
                "median": median(delays),
                "p95": percentile(delays, 95),
                "p99": percentile(delays, 99),
                "max": max(delays, default=None),
                "min": min(delays, default=None),
            },
        }
    )
    if statuses.get("COMPLETED", 0) != count:
        raise RuntimeError(f"not every export completed: {dict(statuses)}")
