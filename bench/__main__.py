"""``python -m bench [NAME ...] [--smoke] [--size smoke|full|N] [--json PATH]``.

Runs the benchmarks (all of them by default, in one process so their numbers are comparable),
prints one table of every metric with its goal, and writes the whole result, raw measurements
included, as JSON (default ``bench/results/latest.json``).

Exit status: 0 when every benchmark ran, 1 when one broke (raised, or hit its time bound), 2 for
bad arguments. A missed goal is reported, not an error, unless ``--strict``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from rich.console import Console
from rich.table import Table

from bench import dashboard, fanout, inflight, pollstep, replicas, soak, throughput, waiting, watchdog
from bench.common import PrivateRedis, Result
from worker.dev.teardown import SignalChain

BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module for module in (pollstep, throughput, fanout, inflight, waiting, watchdog, soak, dashboard, replicas)
}
RESULTS = Path(__file__).parent / "results" / "latest.json"


def _size(module: ModuleType, size: str | None, smoke: bool) -> tuple[int, bool]:
    if size is None:
        return module.SIZES["smoke" if smoke else "full"], smoke
    if size in ("smoke", "full"):
        return module.SIZES[size], size == "smoke"
    return int(size), smoke


def run_one(module: ModuleType, size: int, smoke: bool, console: Console) -> Result:
    result = Result(name=module.NAME, title=module.TITLE, size=size, size_unit=module.SIZE_UNIT, smoke=smoke)
    console.print(f"[bold]{module.NAME}[/]: {module.TITLE} — size {size:,} {module.SIZE_UNIT}")
    start = time.monotonic()
    try:
        module.run(result)
    except KeyboardInterrupt:
        result.error = "interrupted"
        raise
    except Exception as exc:  # a broken benchmark is reported with what it measured so far
        result.error = f"{type(exc).__name__}: {exc}"
        result.extra["traceback"] = traceback.format_exc()
        console.print(f"[red]{module.NAME} broke:[/] {result.error}")
    finally:
        result.seconds = round(time.monotonic() - start, 1)
    console.print(f"  done in {result.seconds:.1f}s")
    return result


def table(results: list[Result]) -> Table:
    grid = Table(title="benchmarks", show_lines=False)
    for column in ("benchmark", "metric", "value", "goal", "status"):
        grid.add_column(column, overflow="fold")
    for result in results:
        label = f"{result.name} ({result.size:,} {result.size_unit}, {result.seconds:.0f}s)"
        if result.error:
            grid.add_row(label, "[red]BROKEN[/]", result.error[:200], "", "[red]error[/]")
            label = ""
        for metric in result.metrics:
            status = "" if metric.met is None else "[green]met[/]" if metric.met else "[red]not met[/]"
            grid.add_row(label, metric.name, metric.shown(), metric.goal or "", status)
            label = ""
    return grid


def environment() -> dict[str, object]:
    import psutil
    import redis

    from bench.common import redis_url

    info: dict[str, object] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }
    try:
        server = redis.Redis.from_url(redis_url()).info("server")
        info["redis"] = server.get("redis_version")
    except Exception as exc:  # reported, the benchmarks will say what is wrong
        info["redis"] = f"unavailable: {exc}"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and short time bounds (CI)")
    parser.add_argument("--size", help="smoke, full, or a number in the benchmark's own unit (one benchmark only)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met, too")
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="measure on a throw-away redis-server on a free port instead of EXPORT_WORKER_REDIS_URL "
        "(Redis counters are server-wide: other clients of a shared Redis would be counted too)",
    )
    args = parser.parse_args(argv)

    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    if args.size not in (None, "smoke", "full"):
        if len(names) != 1:
            parser.error("a numeric --size needs exactly one benchmark name")
        try:
            if int(args.size) < 1:
                raise ValueError
        except ValueError:
            parser.error(f"--size must be smoke, full or a positive integer, not {args.size!r}")

    console = Console(width=None if sys.stdout.isatty() else 160)
    started = datetime.now(UTC)
    results: list[Result] = []
    with contextlib.ExitStack() as resources:
        # SIGTERM unwinds like Ctrl-C, so the private Redis and every stack stop and the JSON is written
        resources.callback(SignalChain().restore)
        if args.private_redis:
            os.environ["EXPORT_WORKER_REDIS_URL"] = resources.enter_context(PrivateRedis())
            console.print(f"measuring on a private Redis at {os.environ['EXPORT_WORKER_REDIS_URL']}")
        try:
            for name in names:
                size, smoke = _size(BENCHMARKS[name], args.size, args.smoke)
                results.append(run_one(BENCHMARKS[name], size, smoke, console))
        finally:
            document = {
                "started_at": started.isoformat(timespec="seconds"),
                "argv": sys.argv[1:] if argv is None else argv,
                "environment": {**environment(), "private_redis": args.private_redis},
                "results": {result.name: result.as_json() for result in results},
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    console.print(table(results))
    console.print(f"results written to {args.json}")
    broken = [result.name for result in results if result.error]
    missed = [f"{result.name}: {metric.name}" for result in results for metric in result.goals_missed]
    if broken:
        console.print(f"[red]broken: {', '.join(broken)}[/]")
    if missed:
        console.print(f"[yellow]goals not met: {'; '.join(missed)}[/]")
    return 1 if broken or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
