"""Fan-out: one Samsara export with many files on four worker processes (4 × concurrency 1).

Four separate ``celery worker`` processes with one pool slot each stand for four small hosts (each
with its own consumer, prefetch and Redis connections), which is how the work spreads in
production. The simulator records when each file request arrives (an ASGI middleware added before
the first request); each file record says when its download step finished. So:

- per-file time = ``FileRecord.finished_at`` − arrival of its request at the provider (download,
  parse, JSONL write, fsync and rename; not the queue wait before it);
- wall time = export ``finished_at`` − arrival of the first file request;
- parallel speed-up = sum of per-file times / wall time, as asked; but when four processes share
  two CPUs each file takes longer, and this ratio counts that stretch as parallelism. So a one-file
  export runs first, alone, and the honest speed-up is files × that solo time / wall time;
- Redis commands per file = INFO commandstats delta over the whole export / files, less the
  background rate measured just before and just after.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bench.common import MB, Deadline, RedisProbe, Result, bench_stack, median, wait_for_workers
from worker.api import ExportView
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.models import ExportStatus

NAME = "fanout"
TITLE = "Fan-out of one export's files over 4 worker processes"
SIZES = {"smoke": 10, "full": 200}
SIZE_UNIT = "files"
TIME_BOUND = {"smoke": 45.0, "full": 900.0}
ROWS_PER_FILE = {"smoke": 5_000, "full": 50_000}
WORKERS, CONCURRENCY = 4, 1
START_HOUR = "2026-02-01T00:00:00Z"
SOLO_HOUR = "2026-02-02T00:00:00Z"


class RequestTimes:
    """Pure ASGI middleware: when each ``/_files/`` request arrived and when its body was sent."""

    def __init__(self, app: Callable[..., Any], log: dict[str, list[float]]) -> None:
        self.app = app
        self.log = log
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/_files/"):
            await self.app(scope, receive, send)
            return
        arrived = time.time()

        async def timed_send(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with self.lock:
                    self.log.setdefault(path, []).extend([arrived, time.time()])

        await self.app(scope, receive, timed_send)


def _export(
    stack: LocalStack, start_hour: str, times: dict[str, list[float]], deadline: Deadline
) -> tuple[ExportView, list[dict[str, Any]]]:
    """Run one export to completion; per file: queue wait and work time (request arrival → finished)."""
    assert stack.client is not None
    client = stack.client
    end_hour = start_hour.replace("T00:", "T23:")
    export_id = client.submit("samsara", {"startHour": start_hour, "endHour": end_hour, "vehicleIds": [1, 2, 3]})
    while not client.rt.store.get(export_id).status.terminal:
        view = client.get(export_id)
        deadline.check(f"{view.record.status.value}, {view.progress.files_done} of {view.progress.files_total} files done")
        time.sleep(0.1)
    view = client.get(export_id)
    if view.record.status is not ExportStatus.COMPLETED:
        raise RuntimeError(f"export ended {view.record.status.value}: {view.record.error}\n{stack.logs()}")
    per_file: list[dict[str, Any]] = []
    for file in view.files:
        arrivals = times.get(urlsplit(file.url).path)
        if not arrivals or file.finished_at is None:
            raise RuntimeError(f"no download timing for {file.name}")
        per_file.append(
            {
                "file": file.key,
                "first_request": arrivals[0],
                "queued_s": arrivals[-2] - file.dispatched_at,
                "work_s": file.finished_at - arrivals[-2],  # the attempt that finished (the last one)
                "requests": len(arrivals) // 2,
                "bytes": file.bytes,
            }
        )
    return view, per_file


def run(result: Result) -> None:
    mode = "smoke" if result.smoke else "full"
    deadline = Deadline(TIME_BOUND[mode], "fanout")
    files, rows = result.size, ROWS_PER_FILE[mode]
    behaviour = SamsaraBehaviour(requested_seconds=0.2, processing_seconds=0.3, files=files, rows_per_file=rows)
    config = SimulatorConfig(samsara_behaviours={SOLO_HOUR: behaviour.model_copy(update={"files": 1}), START_HOUR: behaviour})
    overrides = {"poll_initial_seconds": 0.3, "poll_max_seconds": 1.0, "visibility_timeout_seconds": 1800, "lease_seconds": 60.0}
    result.params.update(
        {
            "files": files,
            "rows_per_file": rows,
            "workers": f"{WORKERS} processes × concurrency {CONCURRENCY} (prefork)",
            "settings_overrides": overrides,
        }
    )
    times: dict[str, list[float]] = {}
    with bench_stack(config, overrides) as stack:
        assert stack.simulator is not None and stack.client is not None and stack.settings is not None
        stack.simulator.app.add_middleware(RequestTimes, log=times)
        for _ in range(WORKERS):
            stack.start_worker(concurrency=CONCURRENCY)
        wait_for_workers(stack, deadline)
        _, solo = _export(stack, SOLO_HOUR, times, deadline)  # one file alone: the uncontended per-file time
        solo_seconds = solo[0]["work_s"]

        probe = RedisProbe(stack.client.rt.store.redis)
        quiet = 1.0 if result.smoke else 2.0
        background_before = probe.background_rate(quiet)
        before = probe.snapshot()
        view, per_file = _export(stack, START_HOUR, times, deadline)
        after = probe.snapshot()
        background = (background_before + probe.background_rate(quiet)) / 2

    assert view.record.finished_at is not None
    if view.record.rows != files * rows:
        raise RuntimeError(f"export wrote {view.record.rows} rows, expected {files * rows}")
    first_start = min(item["first_request"] for item in per_file)
    wall = view.record.finished_at - first_start
    work = sum(item["work_s"] for item in per_file)
    elapsed = after.at - before.at
    commands = after.total_calls - before.total_calls
    net_commands = max(0.0, commands - background * elapsed)
    total_bytes = sum(item["bytes"] for item in per_file)

    result.add("wall time, first download start → export completed", wall, "s")
    result.add(
        "sum of per-file times (download → parse → JSONL → recorded)",
        work,
        "s",
        note=f"median {median([item['work_s'] for item in per_file]):.3f} s per file while {WORKERS} run at once; "
        f"{solo_seconds:.3f} s for the same file alone",
    )
    result.add(
        "parallel speed-up: sum of per-file times / wall",
        work / wall,
        "×",
        note=f"per-file times stretch when {WORKERS} processes share {_cpus()} CPUs, which this ratio counts as parallelism",
    )
    result.add(
        "speed-up over one file at a time: files × solo time / wall",
        files * solo_seconds / wall,
        "×",
        note=f"{WORKERS} workers on {_cpus()} CPUs (with Redis, the simulator and the benchmark)",
    )
    result.add("aggregate throughput", total_bytes / MB / wall, "MB/s", note=f"{view.record.rows / wall:,.0f} rows/s")
    result.add(
        "Redis commands per file",
        net_commands / files,
        note=f"whole export incl. submit and polls; {commands / files:.1f} gross, background {background:.1f}/s subtracted",
    )
    result.add(
        "Redis bytes sent to clients per file",
        (after.net_out - before.net_out) / files / 1024,
        "KiB",
        note="grows with the number of files: each finished file re-reads every file record (finish_if_complete)",
    )
    result.extra.update(
        {
            "redis_commands": RedisProbe.delta(before, after),
            "redis_background_per_s": background,
            "solo_file_seconds": solo_seconds,
            "per_file": per_file,
            "export_seconds_submit_to_done": view.record.finished_at - view.record.created_at,
            "max_queue_wait_s": max(item["queued_s"] for item in per_file),
            "retried_requests": sum(item["requests"] - 1 for item in per_file),
        }
    )


def _cpus() -> int:
    return os.cpu_count() or 1
