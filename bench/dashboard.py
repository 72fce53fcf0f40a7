"""What the dashboard costs with a large store: Redis round trips and render time per page.

Writes ``size`` export records (with their file records) straight into a store under a private key
prefix on the real Redis, in the shapes a busy deployment has: mostly completed, some failed (at the
provider or in a file), some running, a few stuck. Then it renders each page in-process through the
dashboard's ASGI app (templates, middleware and all) and counts the round trips on the store's own
connections. The prefix's keys are deleted at the end.
"""

from __future__ import annotations

import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import redis
from starlette.testclient import TestClient

from bench.common import Result, redis_url
from bench.pollstep import CountingConnection
from worker.api import ExportClient
from worker.dashboard.app import create_app
from worker.dashboard.settings import DashboardSettings
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.listing import ExportFilter
from worker.models import ExportRecord, ExportStatus, FileRecord, FileStatus, JobRecord, JobStatus
from worker.observability import OperatorGauges
from worker.settings import Settings
from worker.store import ExportStore

NAME = "dashboard"
TITLE = "dashboard pages over a large store: Redis round trips and render time"
SIZES = {"smoke": 500, "full": 10_000}
SIZE_UNIT = "exports stored"
RUNS = 5
SPAN_SECONDS = 7 * 86400
"""The stored exports were created over the last week (the Needs-attention window is 48 h)."""


def _records(count: int, now: float, rng: random.Random) -> list[tuple[ExportRecord, list[FileRecord]]]:
    made = []
    for index in range(count):
        created = now - SPAN_SECONDS * (index + 1) / count
        roll = rng.random()
        job = JobRecord(
            key="0", params={"vehicleIds": [1, 2]}, status=JobStatus.SUCCEEDED, provider_job_id=secrets.token_hex(8), polls=6
        )
        files = [
            FileRecord(key=f"0-{n:04d}", job_key="0", name=f"output-{n:03d}.csv.gz", safe_name=f"0-{n:04d}-output.csv",
                       url="https://bucket.example/x", status=FileStatus.DONE, rows=5000, bytes=400_000, bytes_downloaded=90_000,
                       path=f"/exports/e{index}/0-{n:04d}-output.csv.jsonl", dispatched_at=created + 30)
            for n in range(2)
        ]  # fmt: skip
        status, error = ExportStatus.COMPLETED, None
        if roll < 0.01:
            status, job.status, job.next_action_at = ExportStatus.RUNNING, JobStatus.POLLING, now + 30
            files = []
        elif roll < 0.012:
            status, job.status, job.next_action_at = ExportStatus.RUNNING, JobStatus.POLLING, now - 3600  # stuck
            files = []
        elif roll < 0.02:
            status = ExportStatus.DOWNLOADING
            for file in files:
                file.status, file.rows = FileStatus.PENDING, 0
        elif roll < 0.035:
            status, job.status, error = (
                ExportStatus.FAILED,
                JobStatus.FAILED,
                f"provider job {job.provider_job_id} failed: Internal error",
            )
            files = []
        elif roll < 0.05:
            status = ExportStatus.FAILED
            files[1].status, files[1].error, files[1].error_stage = FileStatus.FAILED, "CSV header is unreadable", "parse"
            error = f"1 of 2 file(s) failed ({files[1].name}: CSV header is unreadable); the other files were written"
        record = ExportRecord(
            id=f"{index:06d}{secrets.token_hex(5)}", provider="samsara", params={"startHour": "2026-11-23T00:00:00Z"},
            credential="default", schedule="nightly" if index % 3 == 0 else None, jobs={"0": job}, status=status,
            created_at=created, updated_at=created + 60, deadline_at=created + 21600,
            finished_at=created + 120 if status.terminal else None, error=error, files_total=len(files),
            rows=sum(file.rows for file in files),
        )  # fmt: skip
        made.append((record, files))
    return made


def _write(client: redis.Redis, store: ExportStore, records: list[tuple[ExportRecord, list[FileRecord]]]) -> None:
    """Straight into the layout of ``worker/store/__init__.py``, pipelined (the engine is not what is measured)."""
    key = store.key
    with client.pipeline(transaction=False) as pipe:
        for record, files in records:
            pipe.set(key("export", record.id), record.model_dump_json())
            pipe.zadd(key("exports"), {record.id: record.created_at})
            pipe.hincrby(key("stats", "status"), record.status.value, 1)
            if not record.status.terminal:
                pipe.sadd(key("active"), record.id)
            else:
                pipe.zadd(key("ended"), {record.id: record.finished_at or record.updated_at})
            for file in files:
                pipe.set(key("export", record.id, "file", file.key), file.model_dump_json())
                pipe.sadd(key("export", record.id, "files"), file.key)
                if file.status is not FileStatus.PENDING:
                    pipe.sadd(key("export", record.id, "finished"), file.key)
            if len(pipe) > 5000:
                pipe.execute()
        pipe.execute()


def _measure(web: TestClient, path: str) -> tuple[int, float, int]:
    """(round trips, median ms, bytes of HTML or JSON) over ``RUNS`` renders of ``path``."""
    trips: list[int] = []
    times: list[float] = []
    size = 0
    for _ in range(RUNS):
        before = CountingConnection.round_trips
        start = time.perf_counter()
        answer = web.get(path)
        times.append((time.perf_counter() - start) * 1000)
        trips.append(CountingConnection.round_trips - before)
        answer.raise_for_status()
        size = len(answer.content)
    return max(trips), statistics.median(times), size


def run(result: Result) -> None:
    url = redis_url()
    prefix = f"aew-benchdash-{secrets.token_hex(4)}"
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, connection_class=CountingConnection))
    store = ExportStore(client, prefix)
    now = time.time()
    try:
        records = _records(result.size, now, random.Random(7))
        started = time.perf_counter()
        _write(client, store, records)
        result.add(
            "records written", round(time.perf_counter() - started, 1), "s", note=f"{result.size:,} exports under {prefix}"
        )
        with tempfile.TemporaryDirectory() as scratch:
            settings = Settings(_env_file=None, redis_url=url, key_prefix=prefix, output_dir=Path(scratch))  # type: ignore[call-arg]
            api = ExportClient(Runtime(settings=settings, store=store, dispatcher=RecordingDispatcher()))
            board = DashboardSettings(_env_file=None)  # type: ignore[call-arg]
            web = TestClient(create_app(api, board, allow_actions=True), base_url="http://127.0.0.1:8808")
            failed = next(record.id for record, files in records if record.status is ExportStatus.FAILED and files)
            pages = {
                "home (Needs attention)": "/",
                "all exports, first page": "/exports",
                "all exports, page 3": "",
                "FAILED only": "/exports?status=FAILED",
                "error text matching nothing (reads every record)": "/exports?text=no-such-error-text",
                "one export": f"/exports/{failed}",
                "/api/attention": "/api/attention",
            }
            cursor = api.page(ExportFilter(), size=100).next_before
            pages["all exports, page 3"] = f"/exports?before={cursor}"
            for label, path in pages.items():
                trips, ms, size = _measure(web, path)
                result.add(f"{label}: round trips", trips)
                result.add(f"{label}: render", round(ms, 1), "ms", note=f"median of {RUNS}, {size / 1000:.0f} kB")
            gauges = OperatorGauges(store, settings)
            before = CountingConnection.round_trips
            start = time.perf_counter()
            list(gauges.collect())
            result.add("metrics scrape (operator gauges): round trips", CountingConnection.round_trips - before)
            result.add("metrics scrape (operator gauges): time", round((time.perf_counter() - start) * 1000, 1), "ms")
    finally:
        for keys in _batches(client.scan_iter(match=f"{prefix}:*", count=1000)):
            client.delete(*keys)


def _batches(keys, size: int = 500):  # type: ignore[no-untyped-def]
    batch = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
