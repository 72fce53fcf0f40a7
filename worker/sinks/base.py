"""The contract between the transfer pipeline and a sink.

A :class:`Sink` opens one attempt per source file; its :class:`FileWriter` receives the file's
columnar batches and bad rows and makes them visible only on :meth:`FileWriter.commit`, replacing
whatever an earlier attempt of the same file committed; :meth:`FileWriter.abort` throws the attempt
away. That is what makes every sink exactly once per file under retries and worker crashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from worker.parsing.columns import BadRow, ParsedBatch

if TYPE_CHECKING:
    import pyarrow as pa

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


Encoded: TypeAlias = "Sequence[bytes | memoryview | pa.Buffer]"
"""A batch's rows as the bytes a sink writes (JSON Lines, binary COPY rows)."""


@runtime_checkable
class EncodingWriter(FileWriter, Protocol):
    """A writer whose :meth:`FileWriter.write_batch` is :meth:`encode`, then :meth:`write_encoded`.

    ``encode`` touches nothing of the writer, so the transfer runs it for several batches at once on
    other threads (Arrow's text kernels release the GIL) and hands the results to ``write_encoded``
    in batch order.
    """

    def encode(self, batch: Batch) -> Encoded:
        """The batch's good rows as bytes; thread-safe."""

    def write_encoded(self, batch: Batch, encoded: Encoded) -> None:
        """Append what :meth:`encode` gave for ``batch``; in batch order, on the transfer's thread."""


class Sink(Protocol):
    def open_file(self, export_id: str, file_key: str, safe_name: str) -> FileWriter:
        """Start an attempt at one file (``safe_name`` comes from ``safe_filename``)."""

    def discard_attempts(self, export_id: str) -> int:
        """Remove what killed attempts of the export left behind, once it ended; returns how many."""
