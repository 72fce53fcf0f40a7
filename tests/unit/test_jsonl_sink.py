"""JSONL sink and the transfer pipeline: atomic, idempotent per file, never outside its directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import orjson
import pytest

from worker.errors import TransientError
from worker.file_transfer import TransferResult, transfer_file
from worker.parsing.csv_stream import BadRow, parse_csv
from worker.parsing.schema import ColumnType, RowSchema
from worker.security.filenames import safe_filename
from worker.sinks.base import FileWriter, SinkResult
from worker.sinks.jsonl import STALE_TEMP_SECONDS, JsonlFileWriter, JsonlSink

ROWS = [{"id": 1, "name": "a", "at": "2024-01-01T00:00:00Z"}, {"id": 2, "name": 'é\n"', "at": None}]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_writer_satisfies_the_protocol(tmp_path: Path) -> None:
    writer: FileWriter = JsonlSink(tmp_path).open_file("exp1", "job-0-0000", "ifta.csv")
    writer.abort()


def test_commit_makes_the_final_file_appear_atomically(tmp_path: Path) -> None:
    writer = JsonlSink(tmp_path).open_file("exp1", "job-0-0000", "ifta.csv")
    writer.write_rows(ROWS)
    writer.write_rows([])
    writer.write_rows(ROWS[:1])
    final = tmp_path / "exp1" / "ifta.csv.jsonl"
    assert not final.exists()  # nothing under the final name before commit
    temps = files(tmp_path)
    assert len(temps) == 1 and temps[0].startswith("exp1/.ifta.csv.") and temps[0].endswith(".tmp")
    result = writer.commit()
    assert result == SinkResult(rows=3, quarantined=0, path=str(final), quarantine_path=None)
    assert lines(final) == [*ROWS, ROWS[0]]
    assert files(tmp_path) == ["exp1/ifta.csv.jsonl"]
    assert writer.commit() == result  # idempotent
    writer.abort()  # no-op after commit
    assert final.exists()


def test_rerun_of_the_same_file_replaces_instead_of_appending(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    first = sink.open_file("exp1", "job-0-0000", "ifta.csv")
    first.write_rows(ROWS)
    first.commit()
    second = sink.open_file("exp1", "job-0-0000", "ifta.csv")
    second.write_rows(ROWS[1:])
    assert second.commit().rows == 1
    assert lines(tmp_path / "exp1" / "ifta.csv.jsonl") == ROWS[1:]


def test_abort_leaves_nothing_behind(tmp_path: Path) -> None:
    writer = JsonlSink(tmp_path).open_file("exp1", "job-0-0000", "ifta.csv")
    writer.write_rows(ROWS)
    writer.write_bad([BadRow(3, "expected 3 columns, got 1", "x")], "ifta.csv")
    writer.abort()
    writer.abort()
    assert files(tmp_path) == []
    with pytest.raises(RuntimeError, match="aborted"):
        writer.write_rows(ROWS)
    with pytest.raises(RuntimeError):
        writer.commit()


def test_abort_of_a_retry_keeps_the_previous_good_output(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    good = sink.open_file("exp1", "k", "f.csv")
    good.write_rows(ROWS)
    good.commit()
    retry = sink.open_file("exp1", "k", "f.csv")
    retry.write_rows(ROWS[:1])
    retry.abort()
    assert lines(tmp_path / "exp1" / "f.csv.jsonl") == ROWS


def test_quarantine_holds_file_line_reason_and_raw(tmp_path: Path) -> None:
    writer = JsonlSink(tmp_path).open_file("exp1", "job-0-0000", "ifta.csv")
    writer.write_rows(ROWS)
    writer.write_bad(
        [BadRow(4, "expected 4 columns, got 2", "2,b"), BadRow(9, "record contains a NUL character", "6,g\x00h")],
        "ifta detail.csv",
    )
    writer.write_bad([BadRow(12, "invalid UTF-8 (byte 0xff)", "5,f\udcff")], "ifta detail.csv")
    result = writer.commit()
    assert (result.rows, result.quarantined) == (2, 3)
    assert result.quarantine_path == str(tmp_path / "exp1" / "ifta.csv.quarantine.jsonl")
    assert lines(Path(result.quarantine_path)) == [
        {"file": "ifta detail.csv", "line": 4, "reason": "expected 4 columns, got 2", "raw": "2,b"},
        {"file": "ifta detail.csv", "line": 9, "reason": "record contains a NUL character", "raw": "6,g\x00h"},
        {"file": "ifta detail.csv", "line": 12, "reason": "invalid UTF-8 (byte 0xff)", "raw": "5,f\\udcff"},
    ]


def test_stale_quarantine_of_an_earlier_attempt_is_removed(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    first = sink.open_file("exp1", "k", "f.csv")
    first.write_bad([BadRow(2, "bad", "x")], "f.csv")
    assert first.commit().quarantine_path is not None
    second = sink.open_file("exp1", "k", "f.csv")
    second.write_rows(ROWS)
    assert second.commit().quarantine_path is None
    assert files(tmp_path) == ["exp1/f.csv.jsonl"]


def test_a_killed_attempt_leaves_only_a_temp_which_a_later_attempt_sweeps(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    dead = sink.open_file("exp1", "k", "f.csv")
    dead.write_rows(ROWS)
    # the worker is SIGKILLed here: no commit, no abort
    (temp,) = (tmp_path / "exp1").iterdir()
    assert temp.name.endswith(".tmp") and not (tmp_path / "exp1" / "f.csv.jsonl").exists()
    old = time.time() - STALE_TEMP_SECONDS - 10
    os.utime(temp, (old, old))
    retry = sink.open_file("exp1", "k", "f.csv")
    assert not temp.exists()
    retry.write_rows(ROWS[:1])
    retry.commit()
    assert files(tmp_path) == ["exp1/f.csv.jsonl"]


def test_a_live_concurrent_temp_is_not_swept(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    live = sink.open_file("exp1", "k", "f.csv")
    other = sink.open_file("exp1", "k", "f.csv")
    other.abort()
    live.write_rows(ROWS)
    assert live.commit().rows == 2


@pytest.mark.parametrize(
    ("export_id", "file_key", "safe_name"),
    [
        ("../escape", "k", "f.csv"),
        ("exp1", "../k", "f.csv"),
        ("/abs", "k", "f.csv"),
        ("exp1", "k", "../f.csv"),
        ("exp1", "k", "a/b.csv"),
        ("exp1", "k", "a\\b.csv"),
        ("exp1", "k", ".."),
        ("exp1", "k", ".hidden"),
        ("exp1", "k", ""),
        ("exp1", "k", "nul\x00.csv"),
    ],
)
def test_path_traversal_is_impossible(tmp_path: Path, export_id: str, file_key: str, safe_name: str) -> None:
    root = tmp_path / "out"
    with pytest.raises(ValueError):
        JsonlSink(root).open_file(export_id, file_key, safe_name)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "f.csv.jsonl").exists()


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\x.csv", "/abs/f.csv", "CON", "..", "a" * 500])
def test_names_from_safe_filename_always_stay_inside_the_export_directory(tmp_path: Path, name: str) -> None:
    writer = JsonlSink(tmp_path).open_file("exp1", "k", safe_filename(name, fallback="k"))
    writer.write_rows(ROWS)
    path = Path(writer.commit().path)
    assert path.parent == tmp_path.resolve() / "exp1"


# --- pipeline -------------------------------------------------------------------------------------------

SCHEMA = RowSchema(types={"id": ColumnType.INT}, required=frozenset({"id"}))


def test_transfer_counts_bytes_rows_and_reports_progress_without_committing(tmp_path: Path) -> None:
    body = b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(2500)) + b"x,bad\n"
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    writer = JsonlSink(tmp_path).open_file("exp1", "k", "f.csv")
    progress: list[tuple[int, int]] = []
    result = transfer_file(
        iter(chunks),
        schema=SCHEMA,
        writer=writer,
        source_name="f.csv",
        max_field_bytes=1024,
        on_progress=lambda done, rows: progress.append((done, rows)),
        batch_rows=1000,
    )
    assert result == TransferResult(rows=2500, quarantined=1, bytes=len(body))
    assert len(progress) >= 3 and progress[-1] == (len(body), 2500)
    assert progress == sorted(progress)
    assert not (tmp_path / "exp1" / "f.csv.jsonl").exists()  # the caller commits
    committed = writer.commit()
    assert committed.rows == 2500 and committed.quarantined == 1
    assert lines(Path(committed.path))[0] == {"id": 0, "name": "n0"}


def test_a_failing_download_never_becomes_a_half_file(tmp_path: Path) -> None:
    def broken() -> object:
        yield b"id,name\n1,a\n"
        raise TransientError("download truncated")

    writer: JsonlFileWriter = JsonlSink(tmp_path).open_file("exp1", "k", "f.csv")
    with pytest.raises(TransientError):
        transfer_file(broken(), schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1024)  # type: ignore[arg-type]
    writer.abort()
    assert files(tmp_path) == []


def test_columnar_batches_are_written_byte_for_byte_like_row_dicts(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from worker.parsing.csv_stream import parse_csv
    from worker.sinks.jsonl import encode_columns

    schema = RowSchema(types={"i": ColumnType.INT, "f": ColumnType.FLOAT, "d": ColumnType.DATETIME})
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(-(2**62), 2**62), st.floats(allow_nan=False, allow_infinity=False), text, st.booleans()),
            min_size=1,
            max_size=40,
        )
    )
    def check(rows: list[tuple[int, float, str, bool]]) -> None:
        lines = [
            f'{i},{f!r},"{s.replace(chr(34), chr(34) * 2)}",{"2026-01-01T00:00:00Z" if d else "2026-01-01 10:00:00+02:00"}'
            for i, f, s, d in rows
        ]
        data = ("i,f,s,d\n" + "\n".join(lines) + "\n").encode()
        for batch in parse_csv([data], schema, max_field_bytes=1 << 16, batch_rows=7):
            slices = encode_columns(batch)
            if slices is None:  # only a quote or backslash inside a text value sends a batch the dict way
                assert any('"' in row["s"] or "\\" in row["s"] for row in batch.rows)
            else:
                assert b"".join(slices) == b"".join(orjson.dumps(row) + b"\n" for row in batch.rows)

    check()
    quoted = next(iter(parse_csv([b'i,s\n0,""","\n0,\n'], schema, max_field_bytes=64)))
    assert [row["s"] for row in quoted.rows] == ['",', ""] and encode_columns(quoted) is None  # found by hypothesis
    nulls = next(iter(parse_csv([b"i,s,d\n1,a,\n"], schema, max_field_bytes=64)))
    assert encode_columns(nulls) is None  # a text column holding None: the dict path writes it


def test_a_batch_whose_text_column_holds_a_null_is_written_row_by_row(tmp_path: Path) -> None:
    """The column encoder cannot cut such a column; the writer falls back to row dicts, same bytes."""
    schema = RowSchema(types={"i": ColumnType.INT, "d": ColumnType.DATETIME})
    batch = next(iter(parse_csv([b"i,s,d\n1,a,\n2,,2026-01-01T00:00:00Z\n"], schema, max_field_bytes=64)))
    writer = JsonlSink(tmp_path).open_file("exp1", "0-0000", "f.csv")
    writer.write_batch(batch)
    result = writer.commit()
    assert result.rows == 2
    assert Path(result.path).read_bytes() == b"".join(orjson.dumps(row) + b"\n" for row in batch.rows)
    assert [row["d"] for row in batch.rows][0] is None
