"""JSONL sink edges on real files: what it refuses and why, and attempts that meet a vanished temp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.sinks.jsonl import STALE_TEMP_SECONDS, JsonlSink


@pytest.mark.parametrize(
    ("export_id", "file_key", "message"),
    [
        ("../up", "k", "export_id '../up' is not a plain identifier"),
        ("exp1", "a/b", "file_key 'a/b' is not a plain identifier"),
    ],
)
def test_ids_that_are_not_plain_are_refused_naming_the_argument(
    tmp_path: Path, export_id: str, file_key: str, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        JsonlSink(tmp_path).open_file(export_id, file_key, "f.csv")
    assert str(caught.value) == message


def test_file_names_up_to_200_bytes_are_accepted(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    for name in ("XY.csv", "X" * 200):
        writer = sink.open_file("exp1", "k", name)
        writer.write_rows([{"id": 1}])
        assert Path(writer.commit().path).name == f"{name}.jsonl"
    with pytest.raises(ValueError) as caught:
        sink.open_file("exp1", "k", "X" * 201)
    assert str(caught.value) == f"file name {'X' * 201!r} is not safe; pass it through safe_filename() first"


def test_an_export_directory_that_points_outside_the_root_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "exp1").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="would leave the output directory"):
        JsonlSink(root).open_file("exp1", "k", "f.csv")
    assert list(elsewhere.iterdir()) == []


def test_a_finished_writer_refuses_more_rows_saying_how_it_finished(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    committed = sink.open_file("exp1", "k", "f.csv")
    committed.commit()
    with pytest.raises(RuntimeError, match=r"^writer for f.csv.jsonl is already committed$"):
        committed.write_rows([{"id": 1}])
    aborted = sink.open_file("exp1", "k", "f.csv")
    aborted.abort()
    with pytest.raises(RuntimeError, match=r"^writer for f.csv.jsonl is already aborted$"):
        aborted.write_rows([{"id": 1}])


def test_abort_after_a_later_attempt_swept_the_temp_is_quiet(tmp_path: Path) -> None:
    writer = JsonlSink(tmp_path).open_file("exp1", "k", "f.csv")
    writer.write_rows([{"id": 1}])
    for temp in (tmp_path / "exp1").glob(".f.csv.*.tmp"):
        temp.unlink()
    writer.abort()
    assert list((tmp_path / "exp1").iterdir()) == []


def test_sweeping_skips_a_temp_that_vanishes_while_it_looks(tmp_path: Path) -> None:
    directory = tmp_path / "exp1"
    directory.mkdir()
    (directory / ".f.csv.dead.tmp").symlink_to(directory / "gone")  # stat() fails as for a temp removed meanwhile
    old = directory / ".f.csv.old.tmp"
    old.write_bytes(b"{}\n")
    stale = os.stat(old).st_mtime - STALE_TEMP_SECONDS - 10
    os.utime(old, (stale, stale))
    JsonlSink(tmp_path).open_file("exp1", "k", "f.csv").abort()
    assert sorted(p.name for p in directory.iterdir()) == [".f.csv.dead.tmp"]
