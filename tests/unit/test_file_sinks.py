"""What the file sinks share (worker/sinks/files.py): sweeping killed attempts, per-file temp names, guards."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.sink_data import files
from worker.parsing.columns import BadRow
from worker.sinks.files import STALE_TEMP_SECONDS
from worker.sinks.jsonl import JsonlSink
from worker.sinks.parquet import ParquetSink

ROWS = [{"id": 1}]


def killed_attempt(sink: JsonlSink, export_id: str, name: str) -> None:
    """An attempt that wrote rows and bad rows, then died without commit or abort (SIGKILL)."""
    writer = sink.open_file(export_id, "k", name)
    writer.write_rows(ROWS)
    writer.write_bad([BadRow(2, "bad", "x")], name)


def age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_discarding_an_ended_export_removes_every_temp_of_its_killed_attempts(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    done = sink.open_file("exp1", "k", "done.csv")
    done.write_rows(ROWS)
    done.commit()
    killed_attempt(sink, "exp1", "a.csv")
    killed_attempt(sink, "exp1", "b.csv")
    killed_attempt(sink, "exp2", "a.csv")
    assert sink.discard_attempts("exp1") == 4, "each attempt left its output temp and its quarantine temp"
    assert files(tmp_path / "exp1") == ["done.csv.jsonl"]
    assert len(files(tmp_path / "exp2")) == 2, "another export's attempts are not touched"
    assert sink.discard_attempts("exp1") == 0
    assert sink.discard_attempts("never-written") == 0


def test_discarding_refuses_an_export_id_that_is_not_plain(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"export_id '\.\./x' is not a plain identifier"):
        JsonlSink(tmp_path).discard_attempts("../x")


def test_a_new_attempt_sweeps_only_stale_temps_of_its_own_file(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    killed_attempt(sink, "exp1", "f[1].csv")
    killed_attempt(sink, "exp1", "f1.csv")
    for temp in (tmp_path / "exp1").iterdir():
        age(temp, STALE_TEMP_SECONDS + 10)
    sink.open_file("exp1", "k", "f[1].csv").abort()
    left = files(tmp_path / "exp1")
    assert len(left) == 2 and all(name.startswith(".f1.csv.") for name in left), "a glob character is not a pattern"
    fresh = next((tmp_path / "exp1").iterdir())
    age(fresh, STALE_TEMP_SECONDS - 60)
    sink.open_file("exp1", "k", "f1.csv").abort()
    assert fresh.exists(), "a temp touched within the hour may belong to a live attempt"


def test_a_temp_that_cannot_be_removed_does_not_stop_the_discard(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    killed_attempt(sink, "exp1", "a.csv")
    (tmp_path / "exp1" / ".stuck.tmp").mkdir()  # unlink() refuses a directory, as it would a vanished or locked file
    assert sink.discard_attempts("exp1") == 2
    assert [path.name for path in (tmp_path / "exp1").iterdir()] == [".stuck.tmp"]


@pytest.mark.parametrize(("sink_type", "suffix"), [(JsonlSink, ".jsonl"), (ParquetSink, ".parquet")])
def test_an_output_name_that_is_a_link_out_of_the_root_is_refused(
    tmp_path: Path, sink_type: type[JsonlSink | ParquetSink], suffix: str
) -> None:
    """The check looks at the name the commit will replace (with the sink's suffix), not at the bare source name."""
    root, outside = tmp_path / "out", tmp_path / f"outside{suffix}"
    (root / "exp1").mkdir(parents=True)
    outside.write_bytes(b"not ours")
    (root / "exp1" / f"f.csv{suffix}").symlink_to(outside)
    with pytest.raises(ValueError, match="would leave the output directory"):
        sink_type(root).open_file("exp1", "k", "f.csv")
    assert outside.read_bytes() == b"not ours"


def test_an_abort_whose_files_fail_to_close_still_removes_both_temps(tmp_path: Path) -> None:
    """Abort runs after something went wrong, often the disk: a close that fails must not keep the temps or raise.

    Both descriptors are closed under the writer, so its buffered close fails with EBADF as on a broken disk.
    """
    sink = JsonlSink(tmp_path)
    writer = sink.open_file("exp1", "k", "f.csv")
    writer.write_rows(ROWS)
    writer.write_bad([BadRow(2, "bad", "x")], "f.csv")
    assert len(files(tmp_path / "exp1")) == 2
    os.close(writer._out.fileno())
    os.close(writer._quarantine._out.fileno())
    writer.abort()
    assert files(tmp_path / "exp1") == []
