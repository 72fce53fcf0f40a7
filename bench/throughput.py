"""Download-and-parse throughput of one big Samsara CSV, next to what the machine can do at best.

The simulator serves one Samsara IFTA file of the requested size (rows per byte found from a small
sample). In the same run we measure:

- **httpx → /dev/null**: streaming the file over loopback and throwing it away (the transport's
  ceiling);
- **csv.reader from disk**: the standard library reader over the same file, downloaded once to a
  temp file (the parsing ceiling the goal refers to);
- **parse_csv from disk**: our streaming parser and validator alone, no HTTP, no sink (a breakdown);
- **end to end**: in a fresh subprocess, the worker's download path exactly as the download step
  runs it (``ProviderGateway`` client and URL guard → ``open_download`` → ``transfer_file`` →
  ``JsonlSink`` writer → ``commit`` with its fsync), with the process's memory sampled every 10 ms
  so its peak growth is clean.

Goals: end to end at least 50% of the csv.reader row rate; peak RSS growth under 100 MB. When the
rate goal is missed, the end-to-end run is repeated under cProfile (on a smaller file) and the
functions that dominate are reported.
"""

from __future__ import annotations

import cProfile
import csv
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import MB, Deadline, MemorySampler, Result, rate
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig, SimulatorThread

NAME = "throughput"
TITLE = "Download + parse + validate + JSONL sink throughput of one Samsara CSV"
SIZES = {"smoke": 5, "full": 1000}
SIZE_UNIT = "MB file"
TIME_BOUND = {"smoke": 40.0, "full": 900.0}

RATE_GOAL = 0.5
RSS_GOAL_BYTES = 100 * MB
SAMPLE_ROWS = 20_000
PROFILE_MB = 100
CHUNK = 1 << 20
SAMPLE_HOUR = "2026-01-01T00:00:00Z"
BIG_HOUR = "2026-01-02T00:00:00Z"
PROFILE_HOUR = "2026-01-03T00:00:00Z"
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
    from worker.parsing.csv_stream import parse_csv
    from worker.providers.samsara import SamsaraIftaDetail

    def chunks() -> Any:
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                yield block

    start = time.perf_counter()
    rows = bad = 0
    for batch in parse_csv(chunks(), SamsaraIftaDetail.row_schema, max_field_bytes=1 << 20):
        rows += len(batch.rows)
        bad += len(batch.bad)
    return rows, bad, time.perf_counter() - start


# -- the end-to-end measure, in a fresh process -------------------------------------------------------


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in ``python -m bench.throughput child '<json>'``: the worker's download path, measured."""
    import redis

    from worker.file_transfer import transfer_file
    from worker.http_download import open_download
    from worker.providers.gateway import ProviderGateway
    from worker.settings import Credential, Settings
    from worker.sinks.jsonl import JsonlSink
    from worker.store import ExportStore

    settings = Settings(
        _env_file=None,
        base_urls={"samsara": spec["base_url"]},
        credentials={"default": Credential(token=TOKEN)},
        allow_private_networks=True,
        output_dir=Path(spec["output_dir"]),
    )
    store = ExportStore(redis.Redis(), "aew-bench-unused")  # never contacted: downloads take no rate limit
    gateway = ProviderGateway("samsara", "default", settings, store)
    client, guard = gateway.download_client(False), gateway.url_guard
    sink = JsonlSink(settings.output_dir)
    progress_calls = 0
    commit_seconds = 0.0

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
    profiler = cProfile.Profile() if spec.get("profile") else None
    with MemorySampler(os.getpid(), interval=0.01) as memory:
        time.sleep(0.05)
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        committed, moved = transfer()
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    baseline = memory.first
    peak = max(memory.peak, maxrss_after if maxrss_after > maxrss_before else 0)
    answer: dict[str, Any] = {
        "rows": committed.rows,
        "quarantined": committed.quarantined,
        "bytes": moved.bytes,
        "seconds": seconds,
        "commit_seconds": commit_seconds,
        "output_bytes": Path(committed.path).stat().st_size,
        "rss_baseline": baseline,
        "rss_peak": peak,
        "rss_growth": peak - baseline,
        "memory_series_mib": memory.series(40),
        "progress_calls": progress_calls,
    }
    if profiler is not None:
        answer["profile"] = _top_functions(profiler)
    Path(committed.path).unlink()
    return answer


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


def run(result: Result) -> None:
    deadline = Deadline(TIME_BOUND["smoke" if result.smoke else "full"], "throughput")
    target = result.size * MB
    sample_behaviour = SamsaraBehaviour(requested_seconds=0, processing_seconds=0, files=1, rows_per_file=SAMPLE_ROWS, gzip=False)
    config = SimulatorConfig(samsara_token=TOKEN, samsara_behaviours={SAMPLE_HOUR: sample_behaviour})
    with SimulatorThread(config) as simulator, tempfile.TemporaryDirectory(prefix="aew-bench-throughput-") as tmp:
        control = httpx.Client(base_url=simulator.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        sample = io.BytesIO()
        _stream(_create_job(control, SAMPLE_HOUR)["downloadUrl"], sample)
        header = sample.getvalue().index(b"\n") + 1
        bytes_per_row = (len(sample.getvalue()) - header) / SAMPLE_ROWS
        rows = max(1, round((target - header) / bytes_per_row))
        big = sample_behaviour.model_copy(update={"rows_per_file": rows})
        config = config.model_copy(update={"samsara_behaviours": {SAMPLE_HOUR: sample_behaviour, BIG_HOUR: big}})
        control.post("/_sim/config", json=config.model_dump(mode="json")).raise_for_status()
        url = _create_job(control, BIG_HOUR)["downloadUrl"]
        result.params.update(
            {
                "file_bytes_target": target,
                "rows": rows,
                "bytes_per_row": round(bytes_per_row, 2),
                "columns": "Samsara IFTA detail (13 snake_case columns: 3 ints, 7 floats, 3 strings)",
                "chunk_bytes": CHUNK,
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
        deadline.check("after the download to disk")

        raw_rows, raw_seconds = _csv_reader(path)
        if raw_rows != rows:
            raise RuntimeError(f"csv.reader read {raw_rows} rows, the simulator served {rows}")
        raw_rate = rate(raw_rows, raw_seconds)
        result.extra["csv_reader"] = {"rows": raw_rows, "seconds": raw_seconds}
        result.add("csv.reader from disk", raw_rate, "rows/s", note=f"{rate(size, raw_seconds) / MB:.1f} MB/s")
        deadline.check("after csv.reader")

        parsed_rows, parsed_bad, parse_seconds = _parse_only(path)
        result.extra["parse_only"] = {"rows": parsed_rows, "bad": parsed_bad, "seconds": parse_seconds}
        result.add(
            "parse_csv (parse + validate) from disk",
            rate(parsed_rows, parse_seconds),
            "rows/s",
            note=f"{rate(size, parse_seconds) / MB:.1f} MB/s",
        )
        path.unlink()
        deadline.check("after parse_csv")

        spec = {"base_url": simulator.url, "url": url, "output_dir": str(Path(tmp) / "out")}
        e2e = _run_child(spec, deadline)
        result.extra["end_to_end"] = e2e
        if e2e["rows"] != rows or e2e["bytes"] != size:
            raise RuntimeError(f"end to end wrote {e2e['rows']} rows from {e2e['bytes']} bytes; expected {rows} from {size}")
        e2e_rate = rate(e2e["rows"], e2e["seconds"])
        ratio = e2e_rate / raw_rate
        e2e_mbps = rate(size, e2e["seconds"]) / MB
        result.add(
            "end to end (download → parse → JSONL)",
            e2e_rate,
            "rows/s",
            note=f"{e2e_mbps:.1f} MB/s; of its {e2e['seconds']:.1f} s, the commit (fsync of "
            f"{e2e['output_bytes'] / MB:,.0f} MB of JSONL) took {e2e['commit_seconds']:.1f} s",
        )
        result.add(
            "end to end / csv.reader (rows/s)",
            f"{ratio:.0%}",
            goal=f"≥ {RATE_GOAL:.0%}",
            met=ratio >= RATE_GOAL,
        )
        growth = e2e["rss_growth"]
        result.add(
            "end to end: peak RSS growth",
            growth / MB,
            "MB",
            goal=f"< {RSS_GOAL_BYTES / MB:.0f} MB",
            met=growth < RSS_GOAL_BYTES,
            note=f"baseline {e2e['rss_baseline'] / MB:.0f} MB, peak {e2e['rss_peak'] / MB:.0f} MB",
        )
        result.extra["output_bytes_per_input_byte"] = round(e2e["output_bytes"] / size, 3)

        if ratio < RATE_GOAL and not result.smoke:
            profile_rows = min(rows, round(PROFILE_MB * MB / bytes_per_row))
            small = big.model_copy(update={"rows_per_file": profile_rows})
            config = config.model_copy(update={"samsara_behaviours": {**config.samsara_behaviours, PROFILE_HOUR: small}})
            control.post("/_sim/config", json=config.model_dump(mode="json")).raise_for_status()
            profile_url = _create_job(control, PROFILE_HOUR)["downloadUrl"]
            profiled = _run_child({**spec, "url": profile_url, "profile": True}, deadline)
            result.extra["profile"] = profiled["profile"]
            top = ", ".join(f"{row['function']} {row['share_of_total']:.0%}" for row in profiled["profile"][:4])
            result.add("profile (cProfile, main thread): top self time", top)
        control.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m bench throughput  (this module's own entry point is internal)")
