"""What every benchmark shares: the result record, time bounds, samplers and Redis probes.

A benchmark module defines ``NAME``, ``TITLE``, ``SIZES`` (``{"smoke": n, "full": n}``),
``SIZE_UNIT`` and ``run(result)``; it fills the :class:`Result` it is handed as it goes, so the
metrics measured before a failure or a time-out are still reported.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import redis

from worker.dev.embedded import redis_reachable
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SimulatorConfig

MB = 1_000_000
"""Throughput and sizes are in decimal megabytes (10^6 bytes), as network and disk rates usually are."""
MiB = 1 << 20


class BenchTimeout(RuntimeError):
    """A benchmark hit its time bound; it is reported as broken, with what it measured so far."""


@dataclass
class Metric:
    name: str
    value: float | int | str | None
    unit: str = ""
    goal: str | None = None
    met: bool | None = None
    """None when the metric has no goal."""
    note: str = ""

    def shown(self) -> str:
        value = self.value
        if value is None:
            return "-"
        if isinstance(value, float):
            magnitude = abs(value)
            text = f"{value:,.0f}" if magnitude >= 1000 else f"{value:.1f}" if magnitude >= 10 else f"{value:.3g}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        return f"{text} {self.unit}".strip()


@dataclass
class Result:
    name: str
    title: str
    size: int
    size_unit: str
    smoke: bool
    params: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def add(
        self,
        name: str,
        value: float | int | str | None,
        unit: str = "",
        *,
        goal: str | None = None,
        met: bool | None = None,
        note: str = "",
    ) -> Metric:
        metric = Metric(name, value, unit, goal, met, note)
        self.metrics.append(metric)
        return metric

    @property
    def goals_missed(self) -> list[Metric]:
        return [metric for metric in self.metrics if metric.met is False]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- time bounds ---------------------------------------------------------------------------------


class Deadline:
    """A benchmark's time bound: every wait loop checks it and gives up with a clear message."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self, progress: str = "") -> None:
        if time.monotonic() > self.end:
            detail = f" ({progress})" if progress else ""
            raise BenchTimeout(f"{self.what}: aborted after the time bound of {self.seconds:.0f}s{detail}")


# -- statistics --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile, ``q`` in 0..100; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# -- processes and memory -----------------------------------------------------------------------------


def tree_memory(pid: int, *, pss: bool = False) -> int:
    """RSS (or PSS) of a process and all its descendants, in bytes; 0 once it is gone.

    RSS sums count pages shared between a prefork parent and its children once per process; PSS
    splits shared pages between the processes that map them, so its sum is the tree's real share.
    """
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss if pss else process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class MemorySampler:
    """Samples the memory of a process tree in a background thread: ``(seconds since start, bytes)``."""

    def __init__(self, pid: int, interval: float = 0.5, *, pss: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.pss = pss
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"memory-sampler-{pid}", daemon=True)
        self._start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((round(time.monotonic() - self._start, 3), tree_memory(self.pid, pss=self.pss)))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.samples.append((round(time.monotonic() - self._start, 3), tree_memory(self.pid, pss=self.pss)))

    @property
    def values(self) -> list[int]:
        return [value for _, value in self.samples if value]

    @property
    def first(self) -> int:
        return self.values[0] if self.values else 0

    @property
    def peak(self) -> int:
        return max(self.values, default=0)

    @property
    def last(self) -> int:
        return self.values[-1] if self.values else 0

    def series(self, points: int = 60) -> list[tuple[float, float]]:
        """At most ``points`` samples (evenly thinned), in MiB, for the JSON report."""
        step = max(1, len(self.samples) // points)
        return [(t, round(v / MiB, 1)) for t, v in self.samples[::step]]


# -- Redis ------------------------------------------------------------------------------------------


def redis_url() -> str:
    """The real Redis the benchmarks measure; the embedded fake would measure nothing meaningful."""
    url = os.environ.get("EXPORT_WORKER_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_reachable(url):
        raise RuntimeError(f"benchmarks need a real Redis and none answers at {url} (set EXPORT_WORKER_REDIS_URL)")
    return url


@dataclass(frozen=True)
class RedisSnapshot:
    at: float
    calls: dict[str, int]
    used_memory: int
    net_in: int
    net_out: int

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


class RedisProbe:
    """Server-wide counters: INFO commandstats, memory and network bytes.

    They count every client of the server, so a benchmark measures the background rate first
    (:meth:`background_rate`) and subtracts it; run the benchmarks on an otherwise idle Redis.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def snapshot(self) -> RedisSnapshot:
        stats = self.client.info("commandstats")
        info = self.client.info()
        calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
        return RedisSnapshot(
            at=time.monotonic(),
            calls=calls,
            used_memory=int(info["used_memory"]),
            net_in=int(info["total_net_input_bytes"]),
            net_out=int(info["total_net_output_bytes"]),
        )

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def background_rate(self, seconds: float = 2.0) -> float:
        """Commands per second the server executes while the benchmark does nothing."""
        before = self.snapshot()
        time.sleep(seconds)
        after = self.snapshot()
        # the two INFO calls of the second snapshot are ours, not background
        return max(0.0, (after.total_calls - before.total_calls - 2) / (after.at - before.at))

    @staticmethod
    def delta(before: RedisSnapshot, after: RedisSnapshot) -> dict[str, int]:
        names = set(before.calls) | set(after.calls)
        changed = {name: after.calls.get(name, 0) - before.calls.get(name, 0) for name in names}
        return dict(sorted(((k, v) for k, v in changed.items() if v), key=lambda kv: -kv[1]))

    def memory_usage(self, keys: Iterable[str]) -> list[int]:
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key, samples=0)
            return [int(value or 0) for value in pipe.execute()]


# -- local deployments ----------------------------------------------------------------------------------


def bench_stack(config: SimulatorConfig, overrides: dict[str, Any]) -> LocalStack:
    """A LocalStack on the real Redis (never the embedded fake) with the given settings."""
    return LocalStack(simulator_config=config, redis_url=redis_url(), require_real_redis=True, settings_overrides=overrides)


def worker_names(stack: LocalStack) -> list[str]:
    import socket

    host = socket.gethostname()
    return [f"w{index}-{stack.run_id}@{host}" for index in range(len(stack.workers))]


def wait_for_workers(stack: LocalStack, deadline: Deadline) -> None:
    """Block until every started worker answers a ping, so work starts on all of them at once."""
    assert stack.client is not None
    app = stack.client.rt.dispatcher.app  # type: ignore[attr-defined]
    wanted = set(worker_names(stack))
    seen: set[str] = set()
    while seen != wanted:
        for process in stack.workers:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited during start-up with code {process.returncode}:\n{stack.logs()}")
        deadline.check(f"workers answering: {len(seen)} of {len(wanted)}")
        replies = app.control.ping(destination=sorted(wanted - seen), timeout=0.5) or []
        for reply in replies:
            seen.update(reply)


class PrivateRedis:
    """A throw-away ``redis-server`` on a free loopback port, no persistence: nothing else talks to it.

    INFO commandstats and used_memory are server-wide, so on a shared Redis every other client's
    traffic is counted too; ``python -m bench --private-redis`` measures on one of these instead.
    """

    def __init__(self, binary: str = "redis-server") -> None:
        self.binary = binary
        self.process: Any = None
        self.url = ""

    def __enter__(self) -> str:
        import shutil
        import socket
        import subprocess

        path = shutil.which(self.binary)
        if path is None:
            raise RuntimeError(f"--private-redis needs {self.binary} on PATH")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = Deadline(10, "starting the private redis-server")
        while not redis_reachable(self.url):
            if self.process.poll() is not None:
                raise RuntimeError(f"the private redis-server exited with {self.process.returncode}")
            deadline.check()
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
                self.process.wait(5)


class CpuMeter:
    """CPU seconds (user + system) spent by named processes (and their descendants) between two reads."""

    def __init__(self, pids: dict[str, tuple[int, bool]]) -> None:
        """``pids``: name → (pid, include descendants)."""
        self.pids = pids
        self.start = self.read()

    def read(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, (pid, descendants) in self.pids.items():
            try:
                root = psutil.Process(pid)
                processes = [root, *(root.children(recursive=True) if descendants else [])]
            except psutil.NoSuchProcess:
                continue
            total = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += times.user + times.system
                if descendants:  # children already reaped count in the parent's children_* times
                    total += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
            seconds[name] = total
        return seconds

    def used(self) -> dict[str, float]:
        now = self.read()
        return {name: round(now[name] - self.start.get(name, 0.0), 2) for name in now}
