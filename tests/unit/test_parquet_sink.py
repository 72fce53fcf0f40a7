"""Parquet sink: typed columns read back equal to the JSONL rows, row groups while streaming, exactly once per file."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.sink_data import BAD_LINES, CSV, EXPECTED, SCHEMA, as_instants, csv_of, files, load
from worker.errors import TransientError
from worker.file_transfer import transfer_file
from worker.sinks import parquet
from worker.sinks.base import FileWriter
from worker.sinks.parquet import ParquetSink


def read_rows(path: str) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_rows_read_back_typed_and_equal_to_the_parsed_rows(tmp_path: Path) -> None:
    writer: FileWriter = ParquetSink(tmp_path).open_file("exp1", "k", "f.csv")
    result = load(writer)
    assert (result.rows, result.quarantined) == (5, 2)
    table = pq.read_table(result.path)
    assert table.schema.field("id").type == pa.int64() and table.schema.field("amount").type == pa.float64()
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC") and table.schema.field("name").type == pa.string()
    assert pq.ParquetFile(result.path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert read_rows(result.path) == as_instants(EXPECTED)
    quarantine = [json.loads(line) for line in Path(str(result.quarantine_path)).read_text().splitlines()]
    assert [row["line"] for row in quarantine] == BAD_LINES
    assert files(tmp_path) == ["exp1/f.csv.parquet", "exp1/f.csv.quarantine.jsonl"]


def test_a_batch_that_mixes_naive_and_offset_times_reads_back_the_same(tmp_path: Path) -> None:
    """The whole file in one chunk makes one batch: naive and offset values in one column (the per-value path)."""
    writer = ParquetSink(tmp_path).open_file("exp1", "k", "f.csv")
    transfer_file(iter([CSV]), schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1024)
    assert read_rows(writer.commit().path) == as_instants(EXPECTED)


def test_row_groups_are_written_while_streaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 1000)
    result = load(ParquetSink(tmp_path).open_file("exp1", "k", "f.csv"), csv_of(3500), batch_rows=250)
    meta = pq.ParquetFile(result.path).metadata
    assert meta.num_rows == 3500 and [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 1000, 500]
    assert pq.read_table(result.path).column("id").to_pylist() == list(range(3500))


def test_a_retry_replaces_the_file_and_an_abort_leaves_nothing(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    load(sink.open_file("exp1", "k", "f.csv"))
    again = load(sink.open_file("exp1", "k", "f.csv"), csv_of(3))
    assert again.quarantine_path is None and again.rows == 3
    assert files(tmp_path) == ["exp1/f.csv.parquet"]  # the earlier quarantine went with the earlier rows
    assert read_rows(again.path) == as_instants(
        [{"id": i, "name": f"n{i}", "amount": i / 4, "at": f"2026-01-01T00:00:{i:02d}Z"} for i in range(3)]
    )

    def broken() -> object:
        yield csv_of(5000)
        raise TransientError("download truncated")

    writer = sink.open_file("exp1", "k", "f.csv")
    with pytest.raises(TransientError):
        transfer_file(broken(), schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1024)  # type: ignore[arg-type]
    writer.abort()
    assert files(tmp_path) == ["exp1/f.csv.parquet"] and read_rows(again.path)[0]["id"] == 0


def test_a_file_without_good_rows_still_replaces_an_earlier_attempt(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    load(sink.open_file("exp1", "k", "f.csv"), csv_of(4))
    empty = load(sink.open_file("exp1", "k", "f.csv"), b"id,name,amount,at\nx,1,2,3\n")
    assert (empty.rows, empty.quarantined) == (0, 1) and pq.read_table(empty.path).num_rows == 0


def test_the_registry_names_the_extra_when_pyarrow_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tests.conftest import make_settings
    from worker.errors import PermanentError
    from worker.sinks import SinkContext, open_sink

    monkeypatch.setitem(sys.modules, "worker.sinks.parquet", None)  # what an install without pyarrow sees
    record = type("R", (), {"sink": "parquet"})()
    sink = open_sink(SinkContext(make_settings(tmp_path), None, record))  # type: ignore[arg-type]
    expected = (
        r"^sink 'parquet' needs pyarrow, which this worker lacks "
        r"\(import of worker\.sinks\.parquet halted; None in sys\.modules\); "
        r"install it with pip install 'async-export-worker\[parquet\]' and retry the export$"
    )
    with pytest.raises(PermanentError, match=expected):
        sink.open_file("exp1", "k", "f.csv")
    assert sink.discard_attempts("exp1") == 0


def test_a_finished_writer_refuses_more_batches(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    committed = sink.open_file("exp1", "k", "f.csv")
    load(committed, csv_of(2))
    aborted = sink.open_file("exp1", "k", "g.csv")
    aborted.abort()
    for writer, state in ((committed, "committed"), (aborted, "aborted")):
        with pytest.raises(RuntimeError, match=f"is already {state}"):
            load(writer, csv_of(1))
    assert read_rows(committed.commit().path)[-1]["id"] == 1


def test_an_abort_closes_the_temp_so_its_disk_space_is_freed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 10)
    writer = ParquetSink(tmp_path).open_file("exp1", "k", "f.csv")

    def open_temps() -> list[str]:
        """Files of this process open under the attempt's temp name (Linux's view of open descriptors)."""
        links = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the descriptor listdir itself used is gone
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
        return [link for link in links if "/exp1/.f.csv." in link]

    def stop_midway() -> object:
        yield csv_of(50)
        raise TransientError("download truncated")

    with pytest.raises(TransientError):
        transfer_file(stop_midway(), schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1024)  # type: ignore[arg-type]
    assert len(open_temps()) == 1, "row groups were being written to the temp"
    writer.abort()
    assert open_temps() == [] and files(tmp_path) == []
