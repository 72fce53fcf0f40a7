"""Per-module mutation scores from mutmut's results in ``mutants/``, and the surviving mutants.

    mutmut run --max-children 2 "worker.security*"
    python scripts/mutation_report.py                   # score per module
    python scripts/mutation_report.py --survivors       # ... and each survivor's name

Killed means a unit test failed (or the mutant timed out); survived means every test passed. Mutants
never run (filtered out of this run) are left out of the score; ``run`` of ``of`` says how many ran.

A survivor that no test can kill because it changes no behaviour (an equivalent mutant) or no
promise is listed, with its reason, in ``scripts/equivalent_mutants/<module>.toml``. The score is the
usual one, killed / (run - listed), and the raw killed / run is printed beside it. A listed mutant
that a test now kills, or that no longer exists, is reported as stale, since its reason no longer
holds. Exit status 1 when a module is below ``--target`` or a listing is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

SURVIVED, SKIPPED = 0, 34
"""mutmut's exit codes: 0 every test passed, 34 no test covers the mutated function."""

LISTINGS = Path(__file__).parent / "equivalent_mutants"


def module_of(mutant: str) -> str:
    return mutant.rsplit(".", 1)[0]


def load(root: Path) -> dict[str, dict[str, int | None]]:
    """Exit code of every mutant, grouped by module; ``None`` for one this run left out."""
    by_module: dict[str, dict[str, int | None]] = defaultdict(dict)
    for meta in sorted(root.rglob("*.py.meta")):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            by_module[module_of(mutant)][mutant] = code
    return by_module


def listed(module: str, listings: Path) -> dict[str, str]:
    """Reasons by full mutant name; the file names the module, its keys the part after it."""
    path = listings / f"{module}.toml"
    if not path.exists():
        return {}
    return {f"{module}.{name}": reason for name, reason in tomllib.loads(path.read_text()).items()}


@dataclass
class Score:
    """One module's mutants that ran, with its listed equivalents among them."""

    module: str
    codes: dict[str, int]
    equivalent: dict[str, str]
    survivors: list[str] = field(init=False)
    stale: list[str] = field(init=False)

    def __post_init__(self) -> None:
        alive = {name for name, code in self.codes.items() if code in (SURVIVED, SKIPPED)}
        self.survivors = sorted(alive - self.equivalent.keys())
        self.stale = sorted(name for name in self.equivalent.keys() & self.codes.keys() if name not in alive)
        self.equivalent = {name: reason for name, reason in self.equivalent.items() if name in alive}

    @property
    def killed(self) -> int:
        return len(self.codes) - len(self.survivors) - len(self.equivalent)

    @property
    def percent(self) -> float:
        counted = len(self.codes) - len(self.equivalent)
        return 100 * self.killed / counted if counted else 100.0

    @property
    def raw_percent(self) -> float:
        return 100 * self.killed / len(self.codes)


def print_markdown(by_module: dict[str, dict[str, int | None]], listings: Path) -> None:
    print("| module | mutants run / all | killed | listed | alive | score | raw |")
    print("|---|---|---|---|---|---|---|")
    for module, every in sorted(by_module.items()):
        codes = {name: code for name, code in every.items() if code is not None}
        stem = module.replace(".", "/")
        path = f"`{stem}.py`" if Path(f"{stem}.py").exists() else f"`{stem}/__init__.py`"
        if not codes:
            print(f"| {path} | 0 / {len(every)} | | | | | |")
            continue
        score = Score(module, codes, listed(module, listings))
        print(
            f"| {path} | {len(codes)} / {len(every)} | {score.killed} | {len(score.equivalent)} | {len(score.survivors)} "
            f"| {score.percent:.1f}% | {score.raw_percent:.1f}% |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--listings", type=Path, default=LISTINGS, help="folder of equivalent-mutant listings")
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    parser.add_argument("--target", type=float, default=90.0, help="lowest acceptable score per module (percent)")
    parser.add_argument("--markdown", action="store_true", help="print README's table instead (no survivors, no stale listings)")
    options = parser.parse_args()
    if options.markdown:
        print_markdown(load(options.root), options.listings)
        return 0
    failing = False
    print(f"{'module':40s} {'killed':>6s} {'equiv':>5s} {'alive':>5s} {'run':>5s} {'of':>5s}  score   raw")
    for module, every in sorted(load(options.root).items()):
        codes = {name: code for name, code in every.items() if code is not None}
        if not codes:
            continue
        equivalent = listed(module, options.listings)
        score = Score(module, codes, equivalent)
        gone = sorted(equivalent.keys() - every.keys())
        failing |= score.percent < options.target or bool(score.stale) or bool(gone)
        print(
            f"{module:40s} {score.killed:6d} {len(score.equivalent):5d} "
            f"{len(score.survivors):5d} {len(codes):5d} {len(every):5d}  {score.percent:5.1f}% {score.raw_percent:5.1f}%"
        )
        for name in score.stale:
            print(f"    stale listing  {name}: a test kills it now, remove it from {module}.toml")
        for name in gone:
            print(f"    stale listing  {name}: no such mutant any more, remove it from {module}.toml")
        if options.survivors:
            for name in score.survivors:
                print(f"    {'no test' if codes[name] == SKIPPED else 'survived'}  {name}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
