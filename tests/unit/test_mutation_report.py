"""The mutation report README quotes: its score, and its refusal of listings that no longer hold."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "mutation_report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def results(root: Path, codes: dict[str, int | None]) -> None:
    """A ``mutants/`` tree as mutmut leaves it: one ``.meta`` per source file, exit code by mutant."""
    meta = root / "worker" / "m.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}))


def run(report: ModuleType, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["mutation_report.py", *args])
    return report.main()


def test_the_score_leaves_out_listed_mutants_and_mutants_not_run(
    report: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = {
        "worker.m.x_f__mutmut_1": 1,
        "worker.m.x_f__mutmut_2": 1,
        "worker.m.x_f__mutmut_3": 0,
        "worker.m.x_f__mutmut_4": None,
    }
    results(tmp_path / "mutants", codes)
    listings = tmp_path / "listings"
    listings.mkdir()
    (listings / "worker.m.toml").write_text('"x_f__mutmut_3" = "same output"\n')
    assert run(report, monkeypatch, "--root", str(tmp_path / "mutants"), "--listings", str(listings)) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("worker.m ")]
    assert row.split() == ["worker.m", "2", "1", "0", "3", "4", "100.0%", "66.7%"]


def test_a_survivor_below_the_target_fails_and_is_named(
    report: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results(tmp_path / "mutants", {"worker.m.x_f__mutmut_1": 1, "worker.m.x_f__mutmut_2": 0})
    assert run(report, monkeypatch, "--root", str(tmp_path / "mutants"), "--listings", str(tmp_path), "--survivors") == 1
    assert "    survived  worker.m.x_f__mutmut_2" in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("listing", "complaint"),
    [
        ('"x_f__mutmut_1" = "no test can tell"\n', "a test kills it now"),
        ('"x_f__mutmut_9" = "no test can tell"\n', "no such mutant any more"),
    ],
)
def test_a_listing_that_no_longer_holds_fails_the_report(
    report: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    listing: str,
    complaint: str,
) -> None:
    results(tmp_path / "mutants", {"worker.m.x_f__mutmut_1": 1})
    (tmp_path / "worker.m.toml").write_text(listing)
    assert run(report, monkeypatch, "--root", str(tmp_path / "mutants"), "--listings", str(tmp_path)) == 1
    assert complaint in capsys.readouterr().out
