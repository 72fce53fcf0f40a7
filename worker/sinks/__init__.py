"""Where parsed rows go. Every sink writes one output per source file, idempotently per file."""

from worker.sinks.base import FileWriter, SinkResult

__all__ = ["FileWriter", "SinkResult"]
