"""The contract between the transfer pipeline and a sink.

A :class:`Sink` opens one attempt per source file; its :class:`FileWriter` receives the file's
columnar batches and bad rows and makes them visible only on :meth:`FileWriter.commit`, replacing
whatever an earlier attempt of the same file committed; :meth:`FileWriter.abort` throws the attempt
away. That is what makes every sink exactly once per file under retries and worker crashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from worker.parsing.columns import BadRow, ParsedBatch

if TYPE_CHECKING:
    from worker.parsing.arrow_chunks import ArrowBatch

Batch: TypeAlias = "ParsedBatch | ArrowBatch"
"""What the row path yields: the exact parser's columns, or a clean chunk as an Arrow table."""


@dataclass(frozen=True, slots=True)
class SinkResult:
    """What one committed file produced; paths are strings so the result stores as JSON as is."""

    rows: int
    quarantined: int
    path: str
    quarantine_path: str | None = None


class FileWriter(Protocol):
    def write_batch(self, batch: Batch) -> None:
        """Append a batch's good rows (``batch.bad`` is passed to :meth:`write_bad` separately).

        An :class:`ArrowBatch` holds the same rows as the exact parser's batch would; only modules that
        handle one import pyarrow (lazily), so a worker without it runs the exact path alone.
        """

    def write_bad(self, bad: list[BadRow], source_name: str) -> None:
        """Quarantine bad rows of ``source_name`` (the provider's file name, for the reader)."""

    def commit(self) -> SinkResult:
        """Make this attempt the file's output, replacing any earlier one; idempotent."""

    def abort(self) -> None:
        """Discard this attempt; safe to call more than once and after a commit (then a no-op)."""


class Sink(Protocol):
    def open_file(self, export_id: str, file_key: str, safe_name: str) -> FileWriter:
        """Start an attempt at one file (``safe_name`` comes from ``safe_filename``)."""

    def discard_attempts(self, export_id: str) -> int:
        """Remove what killed attempts of the export left behind, once it ended; returns how many."""
