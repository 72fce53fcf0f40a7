"""Where parsed rows go. Every sink writes one output per source file, exactly once per file.

The registry maps a sink name (``ExportRecord.sink``) to a factory that builds the sink for one
export from the worker's settings and store; adding a sink is one module and one entry here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker.errors import PermanentError
from worker.models import ExportRecord
from worker.settings import Settings
from worker.sinks.base import FileWriter, Sink, SinkResult
from worker.sinks.files import discard_attempts
from worker.sinks.jsonl import JsonlSink
from worker.sinks.postgres import PostgresSink
from worker.sinks.redis_stream import RedisStreamSink
from worker.store import ExportStore

__all__ = ["SINKS", "FileWriter", "Sink", "SinkContext", "SinkResult", "check_sink", "open_sink"]


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink may use: the worker's settings (database URLs included), the store, the export."""

    settings: Settings
    store: ExportStore
    record: ExportRecord


def _jsonl(ctx: SinkContext) -> Sink:
    return JsonlSink(ctx.settings.output_dir)


def _redis_stream(ctx: SinkContext) -> Sink:
    return RedisStreamSink(ctx.store, max_rows=ctx.settings.redis_sink_max_rows, ttl_seconds=ctx.settings.redis_sink_ttl_seconds)


def _postgres(ctx: SinkContext) -> Sink:
    return PostgresSink.for_export(ctx.settings, ctx.record)


def _without_pyarrow(error: ImportError) -> PermanentError:
    return PermanentError(
        f"sink 'parquet' needs pyarrow, which this worker lacks ({error}); "
        "install it with pip install 'async-export-worker[parquet]' and retry the export"
    )


class _WithoutPyarrow:
    """The Parquet sink on a worker without pyarrow: each file fails with the fix; sweeping still works."""

    def __init__(self, root: Path, error: ImportError) -> None:
        self.root = root
        self.error = error

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> FileWriter:
        raise _without_pyarrow(self.error)

    def discard_attempts(self, export_id: str) -> int:
        return discard_attempts(self.root, export_id)


def _parquet(ctx: SinkContext) -> Sink:
    try:  # pyarrow is an optional extra: import it only for exports that chose this sink
        from worker.sinks.parquet import ParquetSink
    except ImportError as exc:
        return _WithoutPyarrow(ctx.settings.output_dir, exc)
    return ParquetSink(ctx.settings.output_dir)


SINKS: dict[str, Callable[[SinkContext], Sink]] = {
    "jsonl": _jsonl,
    "redis_stream": _redis_stream,
    "postgres": _postgres,
    "parquet": _parquet,
}


def open_sink(ctx: SinkContext) -> Sink:
    return SINKS[ctx.record.sink](ctx)


def _check_output_dir(ctx: SinkContext) -> None:
    root = ctx.settings.output_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermanentError(
            f"sink {ctx.record.sink!r} cannot create EXPORT_WORKER_OUTPUT_DIR {str(root)!r} ({exc.strerror}); create it "
            "or point the setting at a writable folder, then submit again"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermanentError(
            f"sink {ctx.record.sink!r} cannot write to EXPORT_WORKER_OUTPUT_DIR {str(root)!r}; make it writable for the "
            "worker's user or point the setting elsewhere, then submit again"
        )


def _check_parquet(ctx: SinkContext) -> None:
    try:
        import worker.sinks.parquet  # noqa: F401 - only whether it imports
    except ImportError as exc:
        raise _without_pyarrow(exc) from None
    _check_output_dir(ctx)


CHECKS: dict[str, Callable[[SinkContext], None]] = {
    "jsonl": _check_output_dir,
    "parquet": _check_parquet,
    "postgres": lambda ctx: PostgresSink.for_export(ctx.settings, ctx.record).check(),
}
"""What each sink needs of the worker, checked before the provider is asked for anything."""


def check_sink(ctx: SinkContext) -> None:
    """Refuse an export whose sink this worker cannot write to, before its provider job exists: a
    PermanentError names what to configure, a TransientError (a database that is down) is retried."""
    check = CHECKS.get(ctx.record.sink)
    if check is not None:
        check(ctx)
