"""What the file sinks (JSONL, Parquet) share: a safe target folder, temp names, durable renames,
and the JSON Lines quarantine next to the output.

Each attempt writes to its own hidden temp file in the target directory and, on commit, fsyncs it
and ``os.replace``-s it onto the final name: a re-run of the same file replaces its output instead of
appending to it, and a worker killed mid-file never leaves a half file under the final name (only a
temp, which later attempts sweep once it is clearly abandoned).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import time
import uuid
from pathlib import Path
from typing import IO, ClassVar

import orjson

from worker.parsing.columns import BadRow
from worker.sinks.base import SinkResult

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_DUMP_OPTIONS = orjson.OPT_APPEND_NEWLINE
STALE_TEMP_SECONDS = 3600.0
"""Temps untouched this long belong to a dead attempt (a live one writes at least every few seconds)."""


def target_directory(root: Path, export_id: str, file_key: str, safe_name: str, suffix: str) -> Path:
    """``<root>/<export_id>``, created, after checking that ``<safe_name><suffix>`` stays inside it."""
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
    resolved = Path(root).resolve()
    directory = resolved / export_id
    final = directory / f"{safe_name}{suffix}"
    if final.parent != directory or not final.resolve().is_relative_to(resolved):
        raise ValueError(f"file name {safe_name!r} would leave the output directory {resolved}")
    directory.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(directory, safe_name)
    return directory


def discard_attempts(root: Path, export_id: str) -> int:
    """Delete every temp left under the export by killed attempts; called once the export ended."""
    if not _ID.fullmatch(export_id):
        raise ValueError(f"export_id {export_id!r} is not a plain identifier")
    removed = 0
    for temp in (Path(root) / export_id).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            temp.unlink()
            removed += 1
    return removed


def new_token() -> str:
    return uuid.uuid4().hex


class FileAttempt:
    """One attempt at one output file: a temp name, a quarantine beside it, published by rename.

    Subclasses write the temp and implement :meth:`_finish` (make it complete and durable) and
    :meth:`_discard` (drop what is open); commit and abort are the same for every file sink.
    """

    suffix: ClassVar[str]

    def __init__(self, directory: Path, safe_name: str) -> None:
        token = new_token()
        self.path = directory / f"{safe_name}{self.suffix}"
        self._tmp = directory / f".{safe_name}.{token}.tmp"
        self._quarantine = Quarantine(directory, safe_name, token)
        self._rows = 0
        self._result: SinkResult | None = None
        self._closed = self._aborted = False

    def write_bad(self, bad: list[BadRow], source_name: str) -> None:
        if bad:
            self._check_open()
            self._quarantine.write(bad, source_name)

    def commit(self) -> SinkResult:
        if self._result is not None:
            return self._result
        self._check_open()
        self._closed = True
        self._finish()
        quarantine = self._quarantine.commit()
        os.replace(self._tmp, self.path)
        fsync_directory(self.path.parent)
        self._result = SinkResult(
            rows=self._rows, quarantined=self._quarantine.count, path=str(self.path), quarantine_path=quarantine
        )
        return self._result

    def abort(self) -> None:
        """Throw this attempt away; a no-op after commit or a previous abort, safe after a failed commit."""
        if self._result is not None or self._aborted:
            return
        self._aborted = self._closed = True
        with contextlib.suppress(Exception):
            self._discard()
        self._tmp.unlink(missing_ok=True)
        self._quarantine.abort()

    def _finish(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            state = "committed" if self._result is not None else "aborted"
            raise RuntimeError(f"writer for {self.path.name} is already {state}")


class Quarantine:
    """Bad rows of one attempt, as JSON Lines beside the output: ``<safe_name>.quarantine.jsonl``."""

    def __init__(self, directory: Path, safe_name: str, token: str) -> None:
        self.path = directory / f"{safe_name}.quarantine.jsonl"
        self._tmp = directory / f".{safe_name}.quarantine.{token}.tmp"
        self._out: IO[bytes] | None = None
        self.count = 0

    def write(self, bad: list[BadRow], source_name: str) -> None:
        if not bad:
            return
        if self._out is None:
            self._out = open(self._tmp, "xb", buffering=1 << 16)
        source = json_safe(source_name)
        self._out.write(
            b"".join(
                orjson.dumps(
                    {"file": source, "line": row.line, "reason": json_safe(row.reason), "raw": json_safe(row.raw)},
                    option=_DUMP_OPTIONS,
                )
                for row in bad
            )
        )
        self.count += len(bad)

    def commit(self) -> str | None:
        """Rename onto the final name, or remove an earlier attempt's quarantine when this one has none."""
        if self._out is None:
            # An earlier attempt's quarantine would describe rows this attempt never saw.
            self.path.unlink(missing_ok=True)
            return None
        close_durably(self._out)
        self._out = None
        os.replace(self._tmp, self.path)
        return str(self.path)

    def abort(self) -> None:
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None
        self._tmp.unlink(missing_ok=True)


def json_safe(text: str) -> str:
    """Lone surrogates as ``\\udcXX`` text: neither orjson nor a UTF-8 COPY takes them, and a quarantine must not fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def close_durably(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def fsync_directory(directory: Path) -> None:
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


def sweep_stale_temps(directory: Path, safe_name: str) -> None:
    """Delete temps of this file left by attempts that died (SIGKILL); a big file's temp is big."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for temp in directory.glob(glob.escape(f".{safe_name}.") + "*.tmp"):
        with contextlib.suppress(OSError):
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
