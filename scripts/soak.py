"""Run the whole suite again and again and count the green runs: a flaky test shows up here, not in CI.

    python scripts/soak.py --runs 10                 # stop after 10 runs
    python scripts/soak.py --runs 10 --budget 45     # ... or when the next run would pass 45 minutes

Not part of CI. Each run's output goes to ``--logs`` (one file per run); the summary lists the failed
tests of every red run and the longest green streak.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def run_once(index: int, logs: Path, pytest_args: list[str]) -> tuple[bool, float, list[str]]:
    started = time.monotonic()
    log = logs / f"run-{index:02d}.log"
    with log.open("w") as out:
        code = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args], stdout=out, stderr=subprocess.STDOUT
        ).returncode
    return code == 0, time.monotonic() - started, FAILED.findall(log.read_text(errors="replace"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="most runs")
    parser.add_argument("--budget", type=float, default=None, help="minutes; no run starts that would end past it")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/aew-soak"), help="folder for one log per run")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    options = parser.parse_args()
    options.logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[bool] = []
    longest = streak = 0
    for index in range(1, options.runs + 1):
        elapsed = (time.monotonic() - started) / 60
        average = elapsed / len(results) if results else 0.0
        if options.budget is not None and results and elapsed + average > options.budget:
            break
        green, seconds, failed = run_once(index, options.logs, options.pytest_args)
        results.append(green)
        streak = streak + 1 if green else 0
        longest = max(longest, streak)
        print(f"run {index}: {'green' if green else 'RED'} in {seconds:.0f}s {' '.join(failed)}", flush=True)
    print(f"{sum(results)}/{len(results)} runs green; longest green streak {longest}; logs in {options.logs}")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
