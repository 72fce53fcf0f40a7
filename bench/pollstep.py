"""Cost of one poll step: ``run_poll`` against the real Redis, the provider behind ``httpx.MockTransport``.

Each step loads the export, calls the (mocked) provider, saves the record in a WATCH/MULTI/EXEC
transaction and reschedules itself through a recording dispatcher; the next step runs with the
token the previous one dispatched, exactly as the next Celery task would. No Celery, no network:
this is the engine's own cost per poll. Redis round trips and commands are counted on the
runtime's own connections (a counting connection class), and cross-checked with INFO commandstats.

Both providers are measured. Each poll spends from its provider's shared budgets (Samsara's polls per
second, impact.com's requests per hour) in the script that reads the export; their keys are deleted
between steps (by another connection, outside the timing) so that no step is refused, and a run in
which one was refused is an error. A poll that returns "still running" is the steady state of a
waiting export.

Then one whole Samsara export runs the same way, every step in turn (submit, its submit step, polls
until the job lists 3 files, 3 downloads into JSONL, the completion that ends it), and its Redis round
trips and commands are counted on the same connections.
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.common import Deadline, RedisProbe, Result, median, percentile, redis_url
from worker.api import ExportClient
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit
from worker.providers.base import Operation
from worker.settings import Credential, Settings
from worker.store import ExportStore

NAME = "pollstep"
TITLE = "Cost of a poll step (run_poll on real Redis, mocked provider)"
SIZES = {"smoke": 50, "full": 2000}
SIZE_UNIT = "steps per provider"
TIME_BOUND = {"smoke": 30.0, "full": 300.0}

EXPORT_FILES = ("a.csv", "b.csv", "c.csv")
EXPORT_ROWS = 50
EXPORT_POLLS = 3
"""The whole export's job is still running at its first polls and lists its files at the last."""

SAMSARA_BASE = "https://api.samsara.bench"
IMPACT_BASE = "https://api.impact.bench"
IMPACT_SID = "IRbench"


class CountingConnection(redis.connection.Connection):
    """Counts what this process sends: one round trip per packed send, and every command in it."""

    round_trips = 0
    commands = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.commands += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        commands = list(commands)
        CountingConnection.commands += len(commands)
        return super().pack_commands(commands)


def _json_response(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})


def _samsara_provider(job_id: str) -> httpx.MockTransport:
    args = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2, 3]}
    common = {"args": args, "jobId": job_id, "requestedAtTime": "2026-11-24T02:00:00.000Z"}
    created = httpx.Response(201, json={"data": {**common, "jobStatus": "Requested"}}).content
    running = httpx.Response(
        200, json={"data": {**common, "jobStatus": "Processing", "startedAtTime": "2026-11-24T02:00:01.000Z"}}
    ).content

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/ifta-detail/csv":
            return _json_response(201, created)
        if request.method == "GET" and request.url.path == f"/ifta-detail/csv/{job_id}":
            return _json_response(200, running)
        return _json_response(404, b'{"message": "unexpected request"}')

    return httpx.MockTransport(handler)


def _impact_provider(job_id: str) -> httpx.MockTransport:
    uri = f"/Mediapartners/{IMPACT_SID}/Jobs/{job_id}"
    created = httpx.Response(200, json={"Status": "QUEUED", "QueuedUri": uri, "ResultUri": f"{uri}/Download"}).content
    running = httpx.Response(
        200,
        json={
            "Id": job_id,
            "Type": "DownloadReport",
            "ProgramId": "",
            "CreatedBy": IMPACT_SID,
            "CreatedDate": "2026-11-24T02:00:00-05:00",
            "StartedDate": "2026-11-24T02:00:05-05:00",
            "CompletedDate": "",
            "AbandonedDate": "",
            "CancelledDate": "",
            "FailedDate": "",
            "LastProgressUpdateDate": "2026-11-24T02:01:00-05:00",
            "Status": "RUNNING",
            "StatusMessage": "Job is running",
            "RecordsProcessed": 1200,
            "PercentageComplete": 40,
            "Replayable": False,
            "ResultUri": f"{uri}/Download",
            "Uri": uri,
        },
    ).content

    dates = [{"Name": name, "DataType": "String", "Format": "yyyy-MM-dd"} for name in ("START_DATE", "END_DATE")]
    metadata = httpx.Response(200, json={"Id": "att_adv_performance_by_day", "Filters": dates}).content

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(f"/Mediapartners/{IMPACT_SID}/ReportExport/"):
            return _json_response(200, created)
        if request.url.path.endswith("/MetaData"):  # the report's parameters, checked before the job is created
            return _json_response(200, metadata)
        if request.url.path == uri:
            return _json_response(200, running)
        return _json_response(404, b'{"Status": "ERROR", "Message": "unexpected request"}')

    return httpx.MockTransport(handler)


PROVIDERS: dict[str, dict[str, Any]] = {
    "samsara": {
        "transport": _samsara_provider,
        "credential": "default",
        "params": {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2, 3]},
    },
    "impact": {
        "transport": _impact_provider,
        "credential": "impact",
        "params": {
            "report_id": "att_adv_performance_by_day",
            "report_params": {"START_DATE": "2026-11-01", "END_DATE": "2026-11-01"},
        },
    },
}


def _measure(provider: str, steps: int, url: str, output_dir: Path, deadline: Deadline) -> dict[str, Any]:
    prefix = f"aew-bench-{uuid.uuid4().hex[:8]}"
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    counted = redis.Redis(connection_pool=pool)
    other = redis.Redis.from_url(url)
    settings = Settings(
        _env_file=None,
        redis_url=url,
        key_prefix=prefix,
        output_dir=output_dir,
        base_urls={"samsara": SAMSARA_BASE, "impact": IMPACT_BASE},
        credentials={
            "default": Credential(token="bench-token"),
            "impact": Credential(account_sid=IMPACT_SID, auth_token="bench-impact-token"),
        },
        poll_initial_seconds=2,
        poll_max_seconds=300,
        visibility_timeout_seconds=3600,
    )
    spec = PROVIDERS[provider]
    dispatcher = RecordingDispatcher()
    rt = Runtime(
        settings=settings,
        store=ExportStore(counted, prefix),
        dispatcher=dispatcher,
        rng=random.Random(5),
        transport=spec["transport"](f"bench-{provider}-job"),
    )
    probe = RedisProbe(other)
    try:
        export_id = ExportClient(rt).submit(provider, spec["params"], credential=spec["credential"])
        run_submit(rt, dispatcher.take_one("submit"))
        gateway = rt.gateway(provider, spec["credential"])
        poll_spend = gateway.spend(Operation.POLL, gateway.params(spec["params"]))
        rate_keys = [rt.store.key("rate", bucket) for bucket, _requests, _per in poll_spend.budgets]
        args = dispatcher.take_one("poll")
        warmup = max(5, steps // 20)
        timings: list[float] = []
        trips: list[int] = []
        commands: list[int] = []
        before = None
        for index in range(warmup + steps):
            if index % 100 == 0:
                deadline.check(f"{provider}: {index} of {warmup + steps} steps")
            if index == warmup:
                before = probe.snapshot()
            other.delete(*rate_keys)  # keep the shared limiter from refusing: we measure the allowed path
            trips_before, commands_before = CountingConnection.round_trips, CountingConnection.commands
            start = time.perf_counter_ns()
            run_poll(rt, args)
            elapsed = time.perf_counter_ns() - start
            args = dispatcher.take_one("poll")
            if index >= warmup:
                timings.append(elapsed / 1000)
                trips.append(CountingConnection.round_trips - trips_before)
                commands.append(CountingConnection.commands - commands_before)
        assert before is not None
        after = probe.snapshot()
        server = RedisProbe.delta(before, after)
        server["del"] = server.get("del", 0) - steps  # the benchmark's own limiter resets
        for name in ("info",):  # the probe's own INFO calls
            server.pop(name, None)
        polls = rt.store.get(export_id).jobs["0"].polls
        if polls != warmup + steps:
            raise RuntimeError(f"{provider}: {warmup + steps - polls} steps were refused by a budget, not polled")
        return {
            "steps": steps,
            "polls_recorded": polls,
            "us_median": median(timings),
            "us_p95": percentile(timings, 95),
            "us_p99": percentile(timings, 99),
            "us_min": min(timings),
            "round_trips": median(trips),
            "round_trips_max": max(trips),
            "commands": median(commands),
            "server_commands_per_step": sum(server.values()) / steps,
            "server_commands": {name: round(calls / steps, 2) for name, calls in server.items() if calls / steps >= 0.5},
        }
    finally:
        for key in other.scan_iter(match=f"{prefix}:*", count=1000):
            other.delete(key)
        counted.close()
        pool.disconnect()
        other.close()


def _export_provider() -> httpx.MockTransport:
    """Samsara: the job runs for ``EXPORT_POLLS - 1`` polls, then lists ``EXPORT_FILES`` of ``EXPORT_ROWS`` rows."""
    header = "vehicleId,vehicleName,jurisdiction,startTime,endTime,distanceMeters\n"
    row = "1,Truck 1,CA,2026-11-23T01:00:00Z,2026-11-23T02:00:00Z,{}.5\n"
    body = header + "".join(row.format(i) for i in range(EXPORT_ROWS))
    files = [
        {
            "name": name,
            "downloadUrl": f"https://files.bench/{name}",
            "downloadUrlExpirationTime": "2099-01-01T00:00:00Z",
            "createdAtTime": "2026-11-24T02:00:00Z",
            "recordCount": EXPORT_ROWS,
        }
        for name in EXPORT_FILES
    ]
    args = PROVIDERS["samsara"]["params"]
    common = {"args": args, "jobId": "bench-export-job", "requestedAtTime": "2026-11-24T02:00:00Z"}
    polls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if request.url.host == "files.bench":
            return httpx.Response(200, text=body)
        if request.method == "POST":
            return httpx.Response(201, json={"data": {**common, "jobStatus": "Requested"}})
        polls += 1
        if polls < EXPORT_POLLS:
            return httpx.Response(200, json={"data": {**common, "jobStatus": "Processing"}})
        return httpx.Response(200, json={"data": {**common, "jobStatus": "Completed", "files": files}})

    return httpx.MockTransport(handler)


def _whole_export(url: str, output_dir: Path) -> dict[str, Any]:
    """Round trips and commands of one whole export, per kind of step, on the runtime's own connections."""
    prefix = f"aew-bench-{uuid.uuid4().hex[:8]}"
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    counted = redis.Redis(connection_pool=pool)
    settings = Settings(
        _env_file=None,
        redis_url=url,
        key_prefix=prefix,
        output_dir=output_dir,
        base_urls={"samsara": SAMSARA_BASE},
        download_hosts={"samsara": ["files.bench"]},
        credentials={"default": Credential(token="bench-token")},
    )
    dispatcher = RecordingDispatcher()
    rt = Runtime(settings=settings, store=ExportStore(counted, prefix), dispatcher=dispatcher, transport=_export_provider())
    steps: dict[str, dict[str, int]] = {}

    def counted_step(kind: str, step: Any) -> None:
        trips, commands = CountingConnection.round_trips, CountingConnection.commands
        step()
        tally = steps.setdefault(kind, {"steps": 0, "round_trips": 0, "commands": 0})
        tally["steps"] += 1
        tally["round_trips"] += CountingConnection.round_trips - trips
        tally["commands"] += CountingConnection.commands - commands

    try:
        counted.ping()  # the connection's handshake is not the export's
        export_id = ""

        def submit() -> None:
            nonlocal export_id
            export_id = ExportClient(rt).submit("samsara", PROVIDERS["samsara"]["params"], credential="default")

        counted_step("submit (API)", submit)
        while dispatcher.sent:
            kind, args, _countdown = dispatcher.sent.pop(0)
            if kind == "submit":
                counted_step("submit step", lambda args=args: run_submit(rt, args))
            elif kind == "poll":
                counted_step("poll step", lambda args=args: run_poll(rt, args))
            else:
                counted_step("download step", lambda args=args: run_download(rt, args, owner=f"bench-{args.file_key}"))
        record = rt.store.get(export_id)
        if record.status.value != "COMPLETED" or record.rows != EXPORT_ROWS * len(EXPORT_FILES):
            raise RuntimeError(f"the export ended {record.status.value} with {record.rows} rows: {record.error}")
        return {
            "files": len(EXPORT_FILES),
            "polls": EXPORT_POLLS,
            "round_trips": sum(tally["round_trips"] for tally in steps.values()),
            "commands": sum(tally["commands"] for tally in steps.values()),
            "by_step": steps,
        }
    finally:
        for key in counted.scan_iter(match=f"{prefix}:*", count=1000):
            counted.delete(key)
        counted.close()
        pool.disconnect()


def run(result: Result) -> None:
    url = redis_url()
    deadline = Deadline(TIME_BOUND["smoke" if result.smoke else "full"], "pollstep")
    result.params.update(
        {
            "steps": result.size,
            "redis": url,
            "provider": "httpx.MockTransport answering 'still running' (Samsara Processing, impact.com RUNNING)",
            "dispatcher": "recording (no Celery send)",
        }
    )
    with tempfile.TemporaryDirectory(prefix="aew-bench-pollstep-") as tmp:
        for provider in PROVIDERS:
            measured = _measure(provider, result.size, url, Path(tmp), deadline)
            result.extra[provider] = measured
            result.add(f"{provider}: µs per poll step (median)", measured["us_median"], "µs")
            result.add(f"{provider}: µs per poll step (p95)", measured["us_p95"], "µs")
            result.add(
                f"{provider}: Redis round trips per step",
                measured["round_trips"],
                goal="≤ 2",
                met=measured["round_trips_max"] <= 2,
                note=f"{measured['commands']:.0f} commands; server-side {measured['server_commands_per_step']:.1f} "
                "commands/step (Lua inner calls included, background not subtracted)",
            )
        export = _whole_export(url, Path(tmp))
        result.extra["whole_export"] = export
        by_step = ", ".join(f"{kind} {tally['round_trips']}/{tally['commands']}" for kind, tally in export["by_step"].items())
        result.add(
            f"samsara: Redis commands per whole export ({export['files']} files, {export['polls']} polls)",
            export["commands"],
            note=f"{export['round_trips']} round trips; round trips/commands by step: {by_step}",
        )
