"""JSON Lines sink: ``<root>/<export_id>/<safe_name>.jsonl`` plus a quarantine file for bad rows.

Each attempt writes to its own hidden temp file in the target directory and, on commit, fsyncs it
and ``os.replace``-s it onto the final name. So a re-run of the same file replaces its output
instead of appending to it, and a worker killed mid-file never leaves a half file under the final
name (only a temp, which later attempts sweep once it is clearly abandoned).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import time
import uuid
from pathlib import Path
from typing import IO, Any

import orjson

from worker.parsing.csv_stream import BadRow
from worker.sinks.base import SinkResult

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_BUFFER_BYTES = 1 << 20
_DUMP_OPTIONS = orjson.OPT_APPEND_NEWLINE
_ROWS_PER_WRITE = 256
"""Serialise in slices: each slice's buffer (~50 KiB) stays under malloc's mmap threshold (128 KiB);
measured: a fresh 128 KiB+ buffer per batch made writing ~3x slower on a VM with costly page faults."""
STALE_TEMP_SECONDS = 3600.0
"""Temps untouched this long belong to a dead attempt (a live one writes at least every few seconds)."""


class JsonlSink:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> JsonlFileWriter:
        """Start an attempt at one file. ``safe_name`` must come from ``safe_filename``."""
        for label, value in (("export_id", export_id), ("file_key", file_key)):
            if not _ID.fullmatch(value):
                raise ValueError(f"{label} {value!r} is not a plain identifier")
        if (
            not safe_name
            or safe_name.startswith(".")
            or any(ch in safe_name for ch in "/\\\x00")
            or len(safe_name.encode("utf-8", "surrogatepass")) > 200
        ):
            raise ValueError(f"file name {safe_name!r} is not safe; pass it through safe_filename() first")
        root = self.root.resolve()
        directory = root / export_id
        final = directory / f"{safe_name}.jsonl"
        if final.parent != directory or not final.resolve().is_relative_to(root):
            raise ValueError(f"file name {safe_name!r} would leave the output directory {root}")
        directory.mkdir(parents=True, exist_ok=True)
        _sweep_stale_temps(directory, safe_name)
        return JsonlFileWriter(directory, safe_name, file_key)

    def discard_attempts(self, export_id: str) -> int:
        """Delete every temp left under the export by killed attempts; called once the export ended."""
        if not _ID.fullmatch(export_id):
            raise ValueError(f"export_id {export_id!r} is not a plain identifier")
        removed = 0
        for temp in (self.root / export_id).glob(".*.tmp"):
            with contextlib.suppress(OSError):
                temp.unlink()
                removed += 1
        return removed


class JsonlFileWriter:
    """One attempt at one file. Not thread-safe; one attempt per writer object."""

    def __init__(self, directory: Path, safe_name: str, file_key: str = "") -> None:
        token = uuid.uuid4().hex
        self.file_key = file_key
        self.path = directory / f"{safe_name}.jsonl"
        self.quarantine_path = directory / f"{safe_name}.quarantine.jsonl"
        self._tmp = directory / f".{safe_name}.{token}.tmp"
        self._quarantine_tmp = directory / f".{safe_name}.quarantine.{token}.tmp"
        self._out: IO[bytes] | None = open(self._tmp, "xb", buffering=_BUFFER_BYTES)
        self._quarantine: IO[bytes] | None = None
        self._rows = 0
        self._bad = 0
        self._result: SinkResult | None = None
        self._aborted = False

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
        if not bad:
            return
        self._require_open()
        if self._quarantine is None:
            self._quarantine = open(self._quarantine_tmp, "xb", buffering=1 << 16)
        source = _json_safe(source_name)
        self._quarantine.write(
            b"".join(
                orjson.dumps(
                    {"file": source, "line": row.line, "reason": _json_safe(row.reason), "raw": _json_safe(row.raw)},
                    option=_DUMP_OPTIONS,
                )
                for row in bad
            )
        )
        self._bad += len(bad)

    def commit(self) -> SinkResult:
        if self._result is not None:
            return self._result
        out = self._require_open()
        _close_durably(out)
        self._out = None
        directory = self.path.parent
        if self._quarantine is not None:
            _close_durably(self._quarantine)
            self._quarantine = None
            os.replace(self._quarantine_tmp, self.quarantine_path)
            quarantine: str | None = str(self.quarantine_path)
        else:
            # An earlier attempt's quarantine would describe rows this attempt never saw.
            self.quarantine_path.unlink(missing_ok=True)
            quarantine = None
        os.replace(self._tmp, self.path)
        _fsync_directory(directory)
        self._result = SinkResult(rows=self._rows, quarantined=self._bad, path=str(self.path), quarantine_path=quarantine)
        return self._result

    def abort(self) -> None:
        """Throw this attempt away; a no-op after commit or a previous abort."""
        if self._result is not None or self._aborted:
            return
        self._aborted = True
        for handle in (self._out, self._quarantine):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
        self._out = self._quarantine = None
        self._tmp.unlink(missing_ok=True)
        self._quarantine_tmp.unlink(missing_ok=True)

    def _require_open(self) -> IO[bytes]:
        if self._out is None:
            state = "committed" if self._result is not None else "aborted"
            raise RuntimeError(f"writer for {self.path.name} is already {state}")
        return self._out


def _json_safe(text: str) -> str:
    """orjson refuses lone surrogates; make sure nothing from a broken file can fail the quarantine."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _close_durably(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable too (POSIX); not possible (nor needed) on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sweep_stale_temps(directory: Path, safe_name: str) -> None:
    """Delete temps of this file left by attempts that died (SIGKILL); a big file's temp is big."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for temp in directory.glob(glob.escape(f".{safe_name}.") + "*.tmp"):
        with contextlib.suppress(OSError):
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
