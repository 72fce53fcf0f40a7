"""Download-and-parse throughput of one big Samsara CSV into each sink, next to the raw tool for that sink.

The simulator serves one Samsara IFTA file of the requested size (rows per byte found from a small
sample). Each run measures, on the same file:

- **csv.reader from disk** against **end to end into JSONL**;
- **raw ``COPY FROM STDIN``** (the CSV file streamed as is into a table with the same typed columns,
  no validation on our side) against **end to end into PostgreSQL**;
- **``pyarrow.csv`` streaming reader → ``ParquetWriter``** (zstd) against **end to end into Parquet**;
- the same three end to end on the file gzipped (as Samsara serves it) and on an error-dense copy
  (1 bad record in 100), reported against the same raw tools on the plain clean file.

End to end is the worker's download path exactly as the download step runs it, in a fresh
subprocess (``ProviderGateway`` client and URL guard → ``open_download`` → ``transfer_file`` → the
sink's writer → ``commit``), with the process's memory sampled every 10 ms so its peak growth is
clean, and its CPU (every thread) counted. Each ratio is taken within one run; the table shows min /
median / max over the runs. Also once: httpx → /dev/null (the transport's ceiling) and the row path
alone (a breakdown). On every
full-size run the JSONL path runs again under cProfile (on a smaller file) and the functions that
dominate are reported.

PostgreSQL is ``EXPORT_WORKER_BENCH_DATABASE_URL`` (default the local ``test`` database); every table
goes into a throw-away schema that is dropped at the end.
"""

from __future__ import annotations

import cProfile
import csv
import importlib
import io
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from bench.common import MB, Deadline, MemorySampler, Result, rate
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig, SimulatorThread
from worker.parsing.schema import ColumnType
from worker.providers.samsara import SamsaraIftaDetail
from worker.sinks.postgres import PG_TYPES

NAME = "throughput"
TITLE = "One Samsara CSV end to end into JSONL, PostgreSQL and Parquet, each against its raw tool"
SIZES = {"smoke": 5, "full": 1000}
SIZE_UNIT = "MB file"
TIME_BOUND = {"smoke": 90.0, "full": 3600.0}
RUNS = {"smoke": 1, "full": 3}
RUNS_SETTING = "EXPORT_WORKER_BENCH_RUNS"
"""Overrides the number of runs (e.g. 1 for a single 1 GB run on a busy machine); more runs get a longer time bound."""

GOALS = {"jsonl": 1.0, "postgres": 0.8, "parquet": 0.8}
RAW_TOOL = {"jsonl": "csv.reader", "postgres": "raw COPY FROM STDIN", "parquet": "pyarrow.csv → ParquetWriter"}
DATABASE_URL = os.environ.get("EXPORT_WORKER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = "samsara_ifta_detail"
RSS_GOAL_BYTES = 200 * MB
VARIANTS = {"gzip": "gzipped, as Samsara serves it", "dense": "1 bad record in 100"}
"""Reported beside the goals, against the same raw tool on the plain clean file."""
SAMPLE_ROWS = 20_000
PROFILE_MB = 100
CHUNK = 1 << 20
SAMPLE_HOUR = "2026-01-01T00:00:00Z"
BIG_HOUR = "2026-01-02T00:00:00Z"
PROFILE_HOUR = "2026-01-03T00:00:00Z"
GZIP_HOUR = "2026-01-04T00:00:00Z"
DENSE_HOUR = "2026-01-05T00:00:00Z"
TOKEN = "bench-samsara-token"


def _create_job(client: httpx.Client, start_hour: str) -> dict[str, Any]:
    end_hour = start_hour.replace("T00:", "T23:")
    response = client.post("/ifta-detail/csv", json={"startHour": start_hour, "endHour": end_hour, "vehicleIds": "1,2,3"})
    data: dict[str, Any] = response.raise_for_status().json()["data"]
    if data["jobStatus"] != "Completed" or not data.get("files"):
        raise RuntimeError(f"the simulator job should be Completed with one file at once: {data}")
    return data["files"][0]


def _stream(url: str, sink: io.RawIOBase | io.BufferedIOBase) -> tuple[int, float]:
    with httpx.Client(timeout=60) as client:
        start = time.perf_counter()
        received = 0
        with client.stream("GET", url) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(CHUNK):
                sink.write(chunk)
                received += len(chunk)
        return received, time.perf_counter() - start


def _csv_reader(path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)  # header
        rows = sum(1 for _ in reader)
    return rows, time.perf_counter() - start


def _parse_only(path: Path) -> tuple[int, int, float]:
    from worker.parsing.row_path import parse_rows
    from worker.providers.samsara import SamsaraIftaDetail

    def chunks() -> Any:
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                yield block

    start = time.perf_counter()
    rows = bad = 0
    for batch in parse_rows(chunks(), SamsaraIftaDetail.row_schema, max_field_bytes=1 << 20, batch_rows=1 << 16):
        rows += len(batch.lines)
        bad += len(batch.bad)
    return rows, bad, time.perf_counter() - start


def _raw_copy(path: Path, schema: str, table: str) -> tuple[int, float]:
    """The CSV file as is through ``COPY ... FROM STDIN (FORMAT csv, HEADER)`` into the same typed columns."""
    with open(path, encoding="utf-8") as handle:
        header = next(csv.reader([handle.readline()]))
    types = SamsaraIftaDetail.row_schema.types
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(PG_TYPES[types.get(name, ColumnType.STR)])) for name in header
    )
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), columns))
        conn.commit()
        start = time.perf_counter()
        with (
            open(path, "rb") as handle,
            conn.cursor().copy(
                sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(sql.Identifier(schema, table))
            ) as copy,
        ):
            while block := handle.read(CHUNK):
                copy.write(block)
        conn.commit()
        seconds = time.perf_counter() - start
        ((rows,),) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchall()
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, table)))
    return rows, seconds


def _raw_parquet(path: Path, out: Path) -> tuple[int, float]:
    """pyarrow's own streaming CSV reader (multi-threaded C++) straight into a zstd ParquetWriter."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    start = time.perf_counter()
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CHUNK))
    rows = 0
    with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    seconds = time.perf_counter() - start
    out.unlink()
    return rows, seconds


@contextmanager
def _scratch_schema() -> Iterator[str]:
    schema = f"aew_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- the end-to-end measure, in a fresh process -------------------------------------------------------


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in ``python -m bench.throughput child '<json>'``: the worker's download path, measured."""
    import redis

    from worker.file_transfer import transfer_file
    from worker.http_download import open_download
    from worker.providers.gateway import ProviderGateway
    from worker.settings import Credential, Settings
    from worker.sinks.base import Sink
    from worker.sinks.jsonl import JsonlSink
    from worker.sinks.parquet import ParquetSink
    from worker.sinks.postgres import PostgresSink
    from worker.store import ExportStore

    # What the sinks and the row path import with their first file: a worker has them loaded after it,
    # and the raw tools run in a process that has theirs, so the clock measures the transfer only.
    for module in ("worker.parsing.arrow_chunks", "worker.sinks.arrow_text", "worker.sinks.pg_binary"):
        importlib.import_module(module)

    settings = Settings(
        _env_file=None,
        base_urls={"samsara": spec["base_url"]},
        credentials={"default": Credential(token=TOKEN)},
        allow_private_networks=True,
        # The simulator gzips a whole file once for its exact Content-Length before it answers: allow for it.
        http_timeout_seconds=600.0,
        output_dir=Path(spec["output_dir"]),
    )
    store = ExportStore(redis.Redis(), "aew-bench-unused")  # never contacted: downloads take no rate limit
    gateway = ProviderGateway("samsara", "default", settings, store)
    client, guard = gateway.download_client(False), gateway.url_guard
    sinks: dict[str, Callable[[], Sink]] = {
        "jsonl": lambda: JsonlSink(settings.output_dir),
        "parquet": lambda: ParquetSink(settings.output_dir),
        "postgres": lambda: PostgresSink(spec["database_url"], "bench", spec["schema"], spec["table"]),
    }
    sink = sinks[spec["sink"]]()
    progress_calls = 0
    commit_seconds = 0.0
    headers_seconds = 0.0
    started = 0.0

    def on_progress(_bytes: int, _rows: int) -> None:  # the download step renews its lease here
        nonlocal progress_calls
        progress_calls += 1

    def transfer() -> tuple[Any, Any]:
        writer = sink.open_file("bench-export", "0-0000", "bench-file")
        try:
            with open_download(
                client,
                spec["url"],
                guard=guard,
                max_bytes=settings.max_download_bytes,
                provider="samsara",
                credential_name="default",
                signed_url=True,
            ) as chunks:
                nonlocal headers_seconds
                headers_seconds = time.perf_counter() - started
                moved = transfer_file(
                    chunks,
                    schema=gateway.provider.row_schema,
                    writer=writer,
                    source_name="bench.csv",
                    max_field_bytes=settings.max_field_bytes,
                    on_progress=on_progress,
                )
            nonlocal commit_seconds
            committing = time.perf_counter()
            committed = writer.commit()  # fsync, rename, fsync of the directory
            commit_seconds = time.perf_counter() - committing
            return committed, moved
        except BaseException:
            writer.abort()
            raise

    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu_before = _cpu_seconds()
    profiler = cProfile.Profile() if spec.get("profile") else None
    with MemorySampler(os.getpid(), interval=0.01) as memory:
        time.sleep(0.05)
        start = started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        committed, moved = transfer()
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_before
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    baseline = memory.first
    peak = max(memory.peak, maxrss_after if maxrss_after > maxrss_before else 0)
    output = Path(committed.path)
    answer: dict[str, Any] = {
        "sink": spec["sink"],
        "rows": committed.rows,
        "quarantined": committed.quarantined,
        "bytes": moved.bytes,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "headers_seconds": headers_seconds,
        "commit_seconds": commit_seconds,
        "output_bytes": output.stat().st_size if output.exists() else None,
        "rss_baseline": baseline,
        "rss_peak": peak,
        "rss_growth": peak - baseline,
        "memory_series_mib": memory.series(40),
        "progress_calls": progress_calls,
    }
    if profiler is not None:
        answer["profile"] = _top_functions(profiler)
    output.unlink(missing_ok=True)
    return answer


def _cpu_seconds() -> float:
    """User + system CPU of this process, every thread (the row path, the encoders and Arrow's own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _top_functions(profiler: cProfile.Profile, count: int = 15) -> list[dict[str, Any]]:
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_calls, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({function})",
                "calls": ncalls,
                "tottime_s": round(tottime, 3),
                "share_of_total": round(tottime / total, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    rows.sort(key=lambda row: -row["tottime_s"])
    return rows[:count]


def _run_child(spec: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=max(1.0, deadline.remaining()),
        cwd=Path(__file__).resolve().parent.parent,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"end-to-end subprocess failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return answer


# -- the benchmark --------------------------------------------------------------------------------------


def _spread(values: list[float], fmt: Callable[[float], str]) -> str:
    """``median (min–max)`` over the runs, or the single value."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def _rows_per_second(value: float) -> str:
    return f"{value:,.0f}"


def _percent(value: float) -> str:
    return f"{value:.0%}"


def run(result: Result) -> None:
    scale = "smoke" if result.smoke else "full"
    runs = int(os.environ.get(RUNS_SETTING, RUNS[scale]))
    deadline = Deadline(TIME_BOUND[scale] * max(runs, RUNS[scale]) / RUNS[scale], "throughput")
    target = result.size * MB
    sample_behaviour = SamsaraBehaviour(requested_seconds=0, processing_seconds=0, files=1, rows_per_file=SAMPLE_ROWS, gzip=False)
    config = SimulatorConfig(samsara_token=TOKEN, samsara_behaviours={SAMPLE_HOUR: sample_behaviour})
    with (
        SimulatorThread(config) as simulator,
        tempfile.TemporaryDirectory(prefix="aew-bench-throughput-") as tmp,
        _scratch_schema() as schema,
    ):
        control = httpx.Client(base_url=simulator.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        sample = io.BytesIO()
        _stream(_create_job(control, SAMPLE_HOUR)["downloadUrl"], sample)
        header = sample.getvalue().index(b"\n") + 1
        bytes_per_row = (len(sample.getvalue()) - header) / SAMPLE_ROWS
        rows = max(1, round((target - header) / bytes_per_row))
        big = sample_behaviour.model_copy(update={"rows_per_file": rows})
        behaviours = {
            SAMPLE_HOUR: sample_behaviour,
            BIG_HOUR: big,
            GZIP_HOUR: big.model_copy(update={"gzip": True}),
            DENSE_HOUR: big.model_copy(update={"bad_rows_every": 100}),
        }
        config = config.model_copy(update={"samsara_behaviours": behaviours})
        control.post("/_sim/config", json=config.model_dump(mode="json")).raise_for_status()
        url = _create_job(control, BIG_HOUR)["downloadUrl"]
        variant_hours = {"gzip": GZIP_HOUR, "dense": DENSE_HOUR} if not result.smoke else {}  # smoke stays quick
        variant_urls = {variant: _create_job(control, hour)["downloadUrl"] for variant, hour in variant_hours.items()}
        result.params.update(
            {
                "file_bytes_target": target,
                "rows": rows,
                "bytes_per_row": round(bytes_per_row, 2),
                "columns": "Samsara IFTA detail (13 snake_case columns: 3 ints, 7 floats, 3 strings)",
                "chunk_bytes": CHUNK,
                "runs": runs,
                "variants": VARIANTS,
            }
        )

        with open(os.devnull, "wb") as devnull:
            size, seconds = _stream(url, devnull)
        result.extra["httpx_devnull"] = {"bytes": size, "seconds": seconds}
        result.add("httpx stream → /dev/null", rate(size, seconds) / MB, "MB/s", note=f"{rate(rows, seconds):,.0f} rows/s")
        deadline.check("after httpx → /dev/null")

        path = Path(tmp) / "samsara.csv"
        with open(path, "wb") as handle:
            size_on_disk, seconds = _stream(url, handle)
        result.extra["download_to_disk"] = {"bytes": size_on_disk, "seconds": seconds}

        parsed_rows, parsed_bad, parse_seconds = _parse_only(path)
        result.extra["parse_only"] = {"rows": parsed_rows, "bad": parsed_bad, "seconds": parse_seconds}
        deadline.check("after parse_csv")

        samples: dict[str, list[dict[str, Any]]] = {"raw_jsonl": [], "raw_postgres": [], "raw_parquet": []}
        samples.update({sink: [] for sink in GOALS})
        samples.update({f"{sink} {variant}": [] for sink in GOALS for variant in VARIANTS})
        result.extra["runs"] = samples  # filled as it goes: a break still reports what was measured
        for number in range(runs):
            raw: dict[str, tuple[int, float]] = {
                "jsonl": _csv_reader(path),
                "postgres": _raw_copy(path, schema, f"raw_{number}"),
                "parquet": _raw_parquet(path, Path(tmp) / "raw.parquet"),
            }
            for sink, (raw_rows, raw_seconds) in raw.items():
                if raw_rows != rows:
                    raise RuntimeError(f"{RAW_TOOL[sink]} read {raw_rows} rows, the simulator served {rows}")
                samples[f"raw_{sink}"].append({"rows": raw_rows, "seconds": raw_seconds})
            deadline.check(f"after the raw tools of run {number + 1}")
            for sink in GOALS:
                spec = {
                    "sink": sink,
                    "base_url": simulator.url,
                    "url": url,
                    "output_dir": str(Path(tmp) / "out"),
                    "database_url": DATABASE_URL,
                    "schema": schema,
                    "table": f"{TABLE}_{number}",
                }
                e2e = _run_child(spec, deadline)
                if e2e["rows"] != rows or e2e["bytes"] != size:
                    raise RuntimeError(f"{sink}: end to end wrote {e2e['rows']} rows from {e2e['bytes']} bytes; expected {rows}")
                samples[sink].append(e2e)
                deadline.check(f"after {sink} end to end, run {number + 1}")
                for variant, variant_url in variant_urls.items():
                    try:
                        measured = _run_child({**spec, "url": variant_url, "table": f"{TABLE}_{variant}_{number}"}, deadline)
                    except RuntimeError as exc:  # reported, not fatal: the variants have no goal
                        result.extra.setdefault("variant_errors", []).append(f"{sink} {variant}: {str(exc)[-500:]}")
                        continue
                    if measured["rows"] + measured["quarantined"] != rows:
                        counted = f"{measured['rows']} rows + {measured['quarantined']} bad"
                        raise RuntimeError(f"{sink} {variant}: {counted}, not {rows}")
                    samples[f"{sink} {variant}"].append(measured)
                    deadline.check(f"after {sink} {variant}, run {number + 1}")

        raw_rates = {sink: [rate(s["rows"], s["seconds"]) for s in samples[f"raw_{sink}"]] for sink in GOALS}
        result.add("row path (parse + validate) from disk", rate(parsed_rows, parse_seconds), "rows/s")
        for sink in GOALS:
            result.add(f"{RAW_TOOL[sink]} from disk", _spread(raw_rates[sink], _rows_per_second), "rows/s")
        for sink, goal in GOALS.items():
            e2e_rates = [rate(s["rows"], s["seconds"]) for s in samples[sink]]
            ratios = [e2e / raw for e2e, raw in zip(e2e_rates, raw_rates[sink], strict=True)]
            written = samples[sink][-1]["output_bytes"]
            cpu = _spread([s["cpu_seconds"] / s["rows"] * 1e6 for s in samples[sink]], lambda value: f"{value:.2f}")
            result.add(
                f"end to end → {sink}",
                _spread(e2e_rates, _rows_per_second),
                "rows/s",
                note=(f"{written / MB:,.0f} MB written; " if written else "") + f"CPU {cpu} s per million rows",
            )
            result.add(
                f"end to end → {sink} / {RAW_TOOL[sink]}",
                _spread(ratios, _percent),
                goal=f"≥ {goal:.0%}",
                met=statistics.median(ratios) >= goal,
            )
            growth = max(s["rss_growth"] for s in samples[sink])
            result.add(
                f"end to end → {sink}: peak RSS growth (max over runs)",
                growth / MB,
                "MB",
                goal=f"< {RSS_GOAL_BYTES / MB:.0f} MB",
                met=growth < RSS_GOAL_BYTES,
            )

        for variant, label in VARIANTS.items():
            for sink in GOALS if variant in variant_urls else ():
                variant_samples = samples[f"{sink} {variant}"]
                if not variant_samples:
                    result.add(f"end to end → {sink}, {label}", "failed", note="see variant_errors in the JSON")
                    continue
                # gzip: the simulator's own compression pass before it answers is not the worker's time
                variant_rates = [rate(s["rows"] + s["quarantined"], s["seconds"] - s["headers_seconds"]) for s in variant_samples]
                ratios = [e2e / raw for e2e, raw in zip(variant_rates, raw_rates[sink], strict=False)]
                growth = max(s["rss_growth"] for s in variant_samples)
                result.add(
                    f"end to end → {sink}, {label} / {RAW_TOOL[sink]}",
                    _spread(ratios, _percent),
                    note=f"{_spread(variant_rates, _rows_per_second)} records/s; peak RSS growth {growth / MB:.0f} MB",
                )

        if not result.smoke:  # what dominates now, goal met or not
            profile_rows = min(rows, round(PROFILE_MB * MB / bytes_per_row))
            small = big.model_copy(update={"rows_per_file": profile_rows})
            config = config.model_copy(update={"samsara_behaviours": {**config.samsara_behaviours, PROFILE_HOUR: small}})
            control.post("/_sim/config", json=config.model_dump(mode="json")).raise_for_status()
            profile_url = _create_job(control, PROFILE_HOUR)["downloadUrl"]
            profiled = _run_child({**spec, "sink": "jsonl", "url": profile_url, "profile": True}, deadline)
            result.extra["profile"] = profiled["profile"]
            top = ", ".join(f"{row['function']} {row['share_of_total']:.0%}" for row in profiled["profile"][:4])
            result.add("profile (cProfile, main thread, JSONL): top self time", top)
        path.unlink()
        control.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m bench throughput  (this module's own entry point is internal)")
