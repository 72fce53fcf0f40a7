"""One file through parser and writer: every row and bad row counted, progress once per batch."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest

from worker.file_transfer import TransferResult, transfer_file
from worker.parsing.schema import ColumnType, RowSchema
from worker.sinks.jsonl import JsonlSink

SCHEMA = RowSchema(types={"id": ColumnType.INT}, required=frozenset({"id"}))


def run(tmp_path: Path, body: bytes, batch_rows: int, progress: list[tuple[int, int]] | None = None) -> TransferResult:
    writer = JsonlSink(tmp_path).open_file("exp1", "k", "f.csv")
    result = transfer_file(
        [body],
        schema=SCHEMA,
        writer=writer,
        source_name="f.csv",
        max_field_bytes=1024,
        on_progress=None if progress is None else lambda done, rows: progress.append((done, rows)),
        batch_rows=batch_rows,
    )
    committed = writer.commit()
    assert (committed.rows, committed.quarantined) == (result.rows, result.quarantined)
    return result


def test_progress_is_reported_once_per_batch_of_the_size_asked(tmp_path: Path) -> None:
    body = b"id\n" + b"".join(b"%d\n" % i for i in range(5))
    progress: list[tuple[int, int]] = []
    assert run(tmp_path, body, batch_rows=2, progress=progress) == TransferResult(rows=5, quarantined=0, bytes=len(body))
    assert [rows for _, rows in progress] == [2, 4, 5]


def test_bad_rows_of_every_batch_are_counted(tmp_path: Path) -> None:
    body = b"id\n1\nx\n2\ny\n3\nz\n"
    assert run(tmp_path, body, batch_rows=1) == TransferResult(rows=3, quarantined=3, bytes=len(body))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_cycle_collector_is_paused_during_the_transfer_and_restored_after(tmp_path: Path, enabled: bool) -> None:
    states: list[bool] = []
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        writer = JsonlSink(tmp_path).open_file("exp1", "k", "f.csv")
        transfer_file([b"id\n1\n"], schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1024,
                      on_progress=lambda done, rows: states.append(gc.isenabled()))  # fmt: skip
        assert states == [False] and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_progress_comes_while_the_row_path_holds_a_chunk_and_a_failing_callback_stops_the_reader(tmp_path: Path) -> None:
    """1 MiB pieces that end mid-record: no batch yet, but the lease is renewed; a lost lease ends the read-ahead thread."""
    record = b"1234567\n"
    body = b"id\n" + record * ((3 << 20) // len(record))
    cuts = [body[start : start + (1 << 20) + 3] for start in range(0, len(body), (1 << 20) + 3)]
    calls: list[int] = []

    def lost_lease(done: int, rows: int) -> None:
        calls.append(rows)
        raise RuntimeError("lease lost")

    writer = JsonlSink(tmp_path).open_file("exp1", "k", "f.csv")
    with pytest.raises(RuntimeError, match="lease lost"):
        transfer_file(cuts, schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1024, on_progress=lost_lease)
    writer.abort()
    assert calls == [0]  # the report of the first MiB comes before the first batch
    assert not [thread for thread in threading.enumerate() if thread.name == "read-ahead"]


def test_progress_is_never_reported_from_two_threads_at_once(tmp_path: Path) -> None:
    """Per MiB on the download's thread and per batch on this one: the callback runs one call at a time."""
    record = b"1234567\n"
    body = b"id\n" + record * ((9 << 20) // len(record))
    inside: list[int] = []
    threads: set[str] = set()

    def progress(done: int, rows: int) -> None:
        inside.append(1)
        assert len(inside) == 1, "two reports at once"
        threads.add(threading.current_thread().name)
        threading.Event().wait(0.001)
        inside.pop()

    cuts = [body[start : start + (1 << 20)] for start in range(0, len(body), 1 << 20)]
    writer = JsonlSink(tmp_path).open_file("exp1", "k", "f.csv")
    result = transfer_file(cuts, schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1024, on_progress=progress)
    writer.commit()
    assert result.rows == body.count(b"\n") - 1
    assert threads == {"read-ahead", threading.current_thread().name}


class EncodingProbe:
    """An EncodingWriter whose encode or write fails at one batch (by its first line); records the writes in order."""

    def __init__(self, encode_fails_at: int | None = None, write_fails_at: int | None = None) -> None:
        self.encode_fails_at = encode_fails_at
        self.write_fails_at = write_fails_at
        self.written: list[int] = []

    def encode(self, batch: Any) -> list[bytes]:
        if batch.lines[0] == self.encode_fails_at:
            raise ValueError("encode failed")
        return [b"%d" % batch.lines[0]]

    def write_encoded(self, batch: Any, encoded: list[bytes]) -> None:
        if batch.lines[0] == self.write_fails_at:
            raise OSError("disk full")
        assert encoded == [b"%d" % batch.lines[0]]
        self.written.append(batch.lines[0])

    def write_batch(self, batch: Any) -> None:
        self.write_encoded(batch, self.encode(batch))

    def write_bad(self, bad: list[Any], source_name: str) -> None:
        pass

    def commit(self) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        pass


BODY = b"id\n" + b"".join(b"%d\n" % i for i in range(8))
FIRST_LINES = list(range(2, 10))
"""One batch per row (batch_rows=1): the first line of each."""


def test_an_encoding_writer_gets_every_batch_encoded_in_order() -> None:
    probe = EncodingProbe()
    transfer_file([BODY], schema=SCHEMA, writer=probe, source_name="f.csv", max_field_bytes=1024, batch_rows=1)
    assert probe.written == FIRST_LINES


@pytest.mark.parametrize("where", ["encode", "write"])
@pytest.mark.parametrize("at", FIRST_LINES)
def test_a_failing_encode_or_write_raises_after_the_batches_before_it_and_leaves_no_thread(where: str, at: int) -> None:
    probe = EncodingProbe(**{f"{where}_fails_at": at})
    with pytest.raises(ValueError if where == "encode" else OSError):
        transfer_file([BODY], schema=SCHEMA, writer=probe, source_name="f.csv", max_field_bytes=1024, batch_rows=1)
    assert probe.written == FIRST_LINES[: FIRST_LINES.index(at)]
    assert not [thread for thread in threading.enumerate() if thread.name.startswith(("read-ahead", "encode"))]
