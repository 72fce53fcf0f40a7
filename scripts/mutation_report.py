"""Per-module mutation scores from mutmut's results in ``mutants/``, and the surviving mutants.

    mutmut run --max-children 2 "worker.security*"
    python scripts/mutation_report.py                   # score per module
    python scripts/mutation_report.py --survivors       # ... and each survivor's name

Killed means a unit test failed (or the mutant timed out); survived means every test passed. Mutants
never run (filtered out of this run) are left out of the score. Exit status 1 below ``--target``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

SURVIVED, SKIPPED = 0, 34
"""mutmut's exit codes: 0 every test passed, 34 no test covers the mutated function."""


def module_of(mutant: str) -> str:
    return mutant.rsplit(".", 1)[0]


def load(root: Path) -> dict[str, dict[str, int]]:
    """Exit code of every mutant that ran, grouped by module."""
    by_module: dict[str, dict[str, int]] = defaultdict(dict)
    for meta in sorted(root.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for mutant, code in codes.items():
            if code is not None:
                by_module[module_of(mutant)][mutant] = code
    return by_module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    parser.add_argument("--target", type=float, default=90.0, help="lowest acceptable score per module (percent)")
    options = parser.parse_args()
    below = False
    for module, codes in sorted(load(options.root).items()):
        survivors = sorted(name for name, code in codes.items() if code in (SURVIVED, SKIPPED))
        score = 100 * (len(codes) - len(survivors)) / len(codes)
        below |= score < options.target
        print(f"{module:40s} {len(codes) - len(survivors):4d}/{len(codes):<4d} killed  {score:5.1f} %")
        if options.survivors:
            for name in survivors:
                print(f"    {'no test' if codes[name] == SKIPPED else 'survived'}  {name}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
