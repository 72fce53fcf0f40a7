"""JSON Lines sink: ``<root>/<export_id>/<safe_name>.jsonl`` plus a quarantine file for bad rows.

Written to a temp name and renamed on commit (see :mod:`worker.sinks.files`), so a retried file
replaces its output and a killed worker never leaves a half file under the final name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from worker.parsing.columns import ParsedBatch
from worker.parsing.schema import ColumnType
from worker.sinks.base import Batch, Encoded
from worker.sinks.direct_file import DirectFile
from worker.sinks.files import STALE_TEMP_SECONDS, FileAttempt, discard_attempts, target_directory

__all__ = ["STALE_TEMP_SECONDS", "JsonlFileWriter", "JsonlSink"]

_ROWS_PER_WRITE = 256
"""Serialise in slices: each slice's buffer (~50 KiB) stays under malloc's mmap threshold (128 KiB);
measured: a fresh 128 KiB+ buffer per batch made writing ~3x slower on a VM with costly page faults."""


class JsonlSink:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> JsonlFileWriter:
        """Start an attempt at one file. ``safe_name`` must come from ``safe_filename``."""
        return JsonlFileWriter(target_directory(self.root, export_id, file_key, safe_name, JsonlFileWriter.suffix), safe_name)

    def discard_attempts(self, export_id: str) -> int:
        return discard_attempts(self.root, export_id)


class JsonlFileWriter(FileAttempt):
    """One attempt at one file. Not thread-safe; one attempt per writer object."""

    suffix = ".jsonl"

    def __init__(self, directory: Path, safe_name: str) -> None:
        super().__init__(directory, safe_name)
        self._out = DirectFile(self._tmp)

    def write_batch(self, batch: Batch) -> None:
        self.write_encoded(batch, self.encode(batch))

    def encode(self, batch: Batch) -> Encoded:
        """The good rows as JSON Lines: Arrow's text kernels for a clean chunk, orjson for the exact parser's."""
        if not isinstance(batch, ParsedBatch):
            from worker.sinks.arrow_text import jsonl

            return jsonl(batch)
        slices = encode_columns(batch)
        return slices if slices is not None else dump_rows(batch.rows)

    def write_encoded(self, batch: Batch, encoded: Encoded) -> None:
        self._check_open()
        for data in encoded:
            self._out.write(memoryview(data))  # type: ignore[arg-type]
        self._rows += len(batch.lines)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._check_open()
        for data in dump_rows(rows):
            self._out.write(data)
        self._rows += len(rows)

    def _finish(self) -> None:
        self._out.close_durably()

    def _discard(self) -> None:
        self._out.close()


def dump_rows(rows: list[dict[str, Any]]) -> list[bytes]:
    """Row dicts as JSON Lines, in slices of :data:`_ROWS_PER_WRITE` rows."""
    dumps = orjson.dumps
    # the trailing b"" gives each slice's last line its newline without another copy
    return [
        b"\n".join([*map(dumps, rows[start : start + _ROWS_PER_WRITE]), b""]) for start in range(0, len(rows), _ROWS_PER_WRITE)
    ]


def encode_columns(batch: ParsedBatch) -> list[bytes] | None:
    r"""The batch as JSON Lines, byte for byte what ``orjson.dumps`` of each row dict gives, without the dicts.

    Each column is serialised once (one ``orjson.dumps`` of the whole column) and cut into its
    values: numbers and ``null`` never contain ``,``, and a string column whose encoding has no ``\"``
    (an escaped quote, or a backslash ending a value) holds ``","`` only between values, so the
    separators are exact; a column with one goes the dict way, since ``\",`` could end a value early.
    The values are then interleaved with precomputed key fragments by slice assignment and joined, all in C. A text
    column holding ``None`` would not cut cleanly: then None is returned and the caller uses dicts.
    """
    count = len(batch.lines)
    if not count:
        return []
    names, width = batch.names, 2 * len(batch.names) + 1
    parts: list[bytes] = [b""] * (count * width)
    closing = b""
    for index, (name, column, kind) in enumerate(zip(names, batch.columns, batch.types, strict=True)):
        quoted = kind is not ColumnType.INT and kind is not ColumnType.FLOAT
        if quoted and None in column:
            return None
        encoded = orjson.dumps(column)
        if quoted and b'\\"' in encoded:
            return None
        values = encoded[2:-2].split(b'","') if quoted else encoded[1:-1].split(b",")
        if len(values) != count:  # cannot happen for the types above; never write a misaligned row
            return None
        key = closing + (b"," if index else b"{") + orjson.dumps(name) + (b':"' if quoted else b":")
        parts[2 * index :: width] = [key] * count
        parts[2 * index + 1 :: width] = values
        closing = b'"' if quoted else b""
    parts[width - 1 :: width] = [closing + b"}\n"] * count
    step = _ROWS_PER_WRITE * width
    return [b"".join(parts[start : start + step]) for start in range(0, len(parts), step)]
