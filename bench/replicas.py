"""What waiting for a replica costs per export: whole exports through Sentinel, with WAIT and without.

A private :class:`~worker.dev.sentinel_cluster.SentinelCluster` (a primary, one replica, three
sentinels on loopback) runs whole Samsara exports in this process: submit, the submit step, one
poll that lists 3 files, 3 downloads into the JSONL sink and the completion that ends the export.
The engine runs as the Celery tasks would (a recording dispatcher; the provider behind
``httpx.MockTransport``), so what is measured is the store's own cost, Redis and the replica. Each
round runs the same number of exports with ``EXPORT_WORKER_REDIS_WAIT_REPLICAS=1`` and with 0,
alternating, and the primary's INFO commandstats counts the WAITs and the time Redis spent in them.

The cost per export is measured twice: directly, as the time the store spends in its ROLE + WAIT
round trips (timed around :func:`worker.store.transactions.replication_of`), and as the difference
of the two medians of whole exports, with the ratio to the same exports without WAIT in the same
run (that difference is small beside the sink's fsyncs and noisy on a busy machine). Loopback
replication is the best case: on a network, add one round trip to the replica per WAIT.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Deadline, Result, median
from worker.api import ExportClient
from worker.dev.sentinel_cluster import SentinelCluster
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit
from worker.settings import Credential, Settings
from worker.store import transactions
from worker.wiring import make_store

NAME = "replicas"
TITLE = "Cost of waiting for a replica (WAIT) per export, through Sentinel"
SIZES = {"smoke": 20, "full": 200}
SIZE_UNIT = "exports per mode"
TIME_BOUND = {"smoke": 60.0, "full": 300.0}
ROUNDS = 4
FILES = ("a.csv", "b.csv", "c.csv")
ROWS = 50


def _provider() -> httpx.MockTransport:
    args = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1]}
    header = "vehicleId,vehicleName,jurisdiction,startTime,endTime,distanceMeters\n"
    body = header + "".join(f"1,Truck 1,CA,2026-11-23T01:00:00Z,2026-11-23T02:00:00Z,{i}.5\n" for i in range(ROWS))
    files = [
        {
            "name": name,
            "downloadUrl": f"https://files.bench/{name}",
            "downloadUrlExpirationTime": "2099-01-01T00:00:00Z",
            "createdAtTime": "2026-11-24T02:00:00Z",
            "recordCount": ROWS,
        }
        for name in FILES
    ]
    common = {"args": args, "jobId": "bench-job", "requestedAtTime": "2026-11-24T02:00:00Z"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "files.bench":
            return httpx.Response(200, text=body)
        if request.method == "POST":
            return httpx.Response(201, json={"data": {**common, "jobStatus": "Requested"}})
        return httpx.Response(200, json={"data": {**common, "jobStatus": "Completed", "files": files}})

    return httpx.MockTransport(handler)


def _runtime(cluster: SentinelCluster, output: Path, wait_replicas: int) -> Runtime:
    settings = Settings(
        _env_file=None,
        **cluster.settings(),
        key_prefix="aew-bench",
        redis_wait_replicas=wait_replicas,
        output_dir=output,
        credentials={"default": Credential(token="bench-token")},
        base_urls={"samsara": "https://api.samsara.bench"},
        download_hosts={"samsara": ["files.bench"]},
        allow_private_networks=True,
    )
    return Runtime(
        settings=settings,
        store=make_store(settings),
        dispatcher=RecordingDispatcher(),
        rng=random.Random(3),
        transport=_provider(),
    )


def _one_export(rt: Runtime, number: int) -> float:
    """Seconds from submit to the end of the export, every step run in turn.

    The provider budgets (100 creates a minute...) are reset first, outside the timing: the benchmark
    creates far more exports than Samsara allows, and a refused step would measure the budget.
    """
    dispatcher = rt.dispatcher
    assert isinstance(dispatcher, RecordingDispatcher)
    store = rt.store
    store.redis.delete(*(key for key in store.redis.scan_iter(match=store.key("rate", "*"))), store.key("absent"))
    start = time.perf_counter()
    params = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [number + 1]}
    export_id = ExportClient(rt).submit("samsara", params)
    while dispatcher.sent:
        kind, args, _countdown = dispatcher.sent.pop(0)
        if kind == "submit":
            run_submit(rt, args)
        elif kind == "poll":
            run_poll(rt, args)
        else:
            run_download(rt, args, owner=f"bench-{number}-{args.file_key}")
    elapsed = time.perf_counter() - start
    if not rt.store.get(export_id).status.terminal:
        raise RuntimeError(f"export {export_id} did not end: {rt.store.get(export_id).status.value}")
    return elapsed


def _wait_stats(cluster: SentinelCluster) -> tuple[int, int]:
    """(WAIT calls, microseconds Redis spent in them) on the current primary."""
    with cluster.client(cluster.primary()) as client:
        stats: Any = client.info("commandstats")
    wait = stats.get("cmdstat_wait", {"calls": 0, "usec": 0})
    return int(wait["calls"]), int(wait["usec"])


class TimedWaits:
    """Wraps the store's ROLE + WAIT so the time spent in it is counted (it runs inside the EXEC's pipeline)."""

    def __init__(self) -> None:
        self.original = transactions.replication_of
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, connection: Any, replicas: int, timeout_ms: int) -> transactions.Replication:
        start = time.perf_counter()
        try:
            return self.original(connection, replicas, timeout_ms)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def run(result: Result) -> None:
    timed = TimedWaits()
    transactions.replication_of = timed  # type: ignore[assignment]
    try:
        _run(result, timed)
    finally:
        transactions.replication_of = timed.original  # type: ignore[assignment]


def _run(result: Result, timed: TimedWaits) -> None:
    per_mode = result.size
    deadline = Deadline(TIME_BOUND["smoke" if result.smoke else "full"], NAME)
    result.params.update({"files_per_export": len(FILES), "rows_per_file": ROWS, "rounds": ROUNDS, "replicas": 1})
    with SentinelCluster(master_name="aew-bench") as cluster, tempfile.TemporaryDirectory(prefix="aew-bench-") as out:
        runtimes = {replicas: _runtime(cluster, Path(out) / str(replicas), replicas) for replicas in (1, 0)}
        times: dict[int, list[float]] = {1: [], 0: []}
        waits = {1: [0, 0], 0: [0, 0]}
        for warm in range(3):  # connections, scripts, imports
            _one_export(runtimes[0], 10_000 + warm)
        for round_number in range(ROUNDS):
            for replicas in (1, 0) if round_number % 2 == 0 else (0, 1):
                calls_before, usec_before = _wait_stats(cluster)
                for index in range(per_mode // ROUNDS):
                    deadline.check(f"round {round_number}, {replicas} replica(s), export {index}")
                    times[replicas].append(_one_export(runtimes[replicas], round_number * 1000 + index))
                calls_after, usec_after = _wait_stats(cluster)
                waits[replicas][0] += calls_after - calls_before
                waits[replicas][1] += usec_after - usec_before
    with_wait, without = (median(times[1]) or 0.0) * 1000, (median(times[0]) or 0.0) * 1000
    exports = len(times[1])
    result.add("ROLE + WAIT time per export (client side)", timed.seconds / exports * 1000 if exports else None, "ms")
    result.add("ROLE + WAIT per call (client side)", timed.seconds / timed.calls * 1000 if timed.calls else None, "ms")
    result.add("export, WAIT for 1 replica (median)", with_wait, "ms")
    result.add("export, no WAIT (median)", without, "ms")
    result.add("added per export", with_wait - without, "ms", note="difference of the medians")
    result.add("ratio to no WAIT", with_wait / without if without else None, "x", goal="<= 1.5", met=with_wait <= 1.5 * without)
    result.add("WAITs per export", waits[1][0] / exports if exports else None)
    result.add("Redis time in WAIT per export", waits[1][1] / exports / 1000 if exports else None, "ms")
    result.add("WAITs without waiting (check)", waits[0][0], goal="0", met=waits[0][0] == 0)
    result.extra["ms"] = {str(key): [round(value * 1000, 3) for value in values] for key, values in times.items()}
    result.extra["stdev_ms"] = {str(key): round(statistics.pstdev(values) * 1000, 3) for key, values in times.items()}
