"""The contract between the transfer pipeline and a sink.

A :class:`FileWriter` receives one source file's rows and bad rows in batches and makes them
visible only on :meth:`FileWriter.commit`; :meth:`FileWriter.abort` throws the attempt away. That is
what lets a retried download replace a half-written attempt instead of duplicating rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from worker.parsing.csv_stream import BadRow


@dataclass(frozen=True, slots=True)
class SinkResult:
    """What one committed file produced; paths are strings so the result stores as JSON as is."""

    rows: int
    quarantined: int
    path: str
    quarantine_path: str | None = None


class FileWriter(Protocol):
    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append a batch of validated rows to this attempt."""

    def write_bad(self, bad: list[BadRow], source_name: str) -> None:
        """Quarantine bad rows of ``source_name`` (the provider's file name, for the reader)."""

    def commit(self) -> SinkResult:
        """Make this attempt the file's output, replacing any earlier one; idempotent."""

    def abort(self) -> None:
        """Discard this attempt; safe to call more than once and after a commit (then a no-op)."""
