"""JSON Lines sink: ``<root>/<export_id>/<safe_name>.jsonl`` plus a quarantine file for bad rows.

Written to a temp name and renamed on commit (see :mod:`worker.sinks.files`), so a retried file
replaces its output and a killed worker never leaves a half file under the final name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from worker.parsing.columns import BadRow, ParsedBatch
from worker.parsing.schema import ColumnType
from worker.sinks.base import SinkResult
from worker.sinks.files import (
    STALE_TEMP_SECONDS,
    BackgroundFile,
    Quarantine,
    discard_attempts,
    fsync_directory,
    new_token,
    target_directory,
)

__all__ = ["STALE_TEMP_SECONDS", "JsonlFileWriter", "JsonlSink"]

_ROWS_PER_WRITE = 256
"""Serialise in slices: each slice's buffer (~50 KiB) stays under malloc's mmap threshold (128 KiB);
measured: a fresh 128 KiB+ buffer per batch made writing ~3x slower on a VM with costly page faults."""


class JsonlSink:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> JsonlFileWriter:
        """Start an attempt at one file. ``safe_name`` must come from ``safe_filename``."""
        return JsonlFileWriter(target_directory(self.root, export_id, file_key, safe_name, ".jsonl"), safe_name, file_key)

    def discard_attempts(self, export_id: str) -> int:
        return discard_attempts(self.root, export_id)


class JsonlFileWriter:
    """One attempt at one file. Not thread-safe; one attempt per writer object."""

    def __init__(self, directory: Path, safe_name: str, file_key: str = "") -> None:
        token = new_token()
        self.file_key = file_key
        self.path = directory / f"{safe_name}.jsonl"
        self._tmp = directory / f".{safe_name}.{token}.tmp"
        self._out: BackgroundFile | None = BackgroundFile(self._tmp)
        self._quarantine = Quarantine(directory, safe_name, token)
        self.quarantine_path = self._quarantine.path
        self._rows = 0
        self._result: SinkResult | None = None
        self._aborted = False

    def write_batch(self, batch: ParsedBatch) -> None:
        slices = encode_columns(batch)
        if slices is None:
            self.write_rows(batch.rows)
            return
        out = self._require_open()
        for data in slices:
            out.write(data)
        self._rows += len(batch.lines)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        out = self._require_open()
        dumps = orjson.dumps
        for start in range(0, len(rows), _ROWS_PER_WRITE):
            # the trailing b"" gives the last line its newline without another write or copy
            out.write(b"\n".join([*map(dumps, rows[start : start + _ROWS_PER_WRITE]), b""]))
        self._rows += len(rows)

    def write_bad(self, bad: list[BadRow], source_name: str) -> None:
        if bad:
            self._require_open()
            self._quarantine.write(bad, source_name)

    def commit(self) -> SinkResult:
        if self._result is not None:
            return self._result
        out = self._require_open()
        self._out = None
        out.close_durably()
        quarantine = self._quarantine.commit()
        os.replace(self._tmp, self.path)
        fsync_directory(self.path.parent)
        self._result = SinkResult(
            rows=self._rows, quarantined=self._quarantine.count, path=str(self.path), quarantine_path=quarantine
        )
        return self._result

    def abort(self) -> None:
        """Throw this attempt away; a no-op after commit or a previous abort."""
        if self._result is not None or self._aborted:
            return
        self._aborted = True
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.discard()
        self._out = None
        self._tmp.unlink(missing_ok=True)
        self._quarantine.abort()

    def _require_open(self) -> BackgroundFile:
        if self._out is None:
            state = "committed" if self._result is not None else "aborted"
            raise RuntimeError(f"writer for {self.path.name} is already {state}")
        return self._out


def encode_columns(batch: ParsedBatch) -> list[bytes] | None:
    """The batch as JSON Lines, byte for byte what ``orjson.dumps`` of each row dict gives, without the dicts.

    Each column is serialised once (one ``orjson.dumps`` of the whole column) and cut into its
    values: numbers and ``null`` never contain ``,``, and inside a JSON string ``","`` cannot occur
    (a ``"`` in a string is always escaped), so the separators are exact. The values are then
    interleaved with precomputed key fragments by slice assignment and joined, all in C. A text
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
