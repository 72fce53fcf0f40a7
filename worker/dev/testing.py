"""A dispatcher that records instead of sending, so tests and benchmarks drive the engine by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.models import Callback, ExportRecord, FileTaskArgs, JobTaskArgs


@dataclass
class RecordingDispatcher:
    sent: list[tuple[str, Any, float]] = field(default_factory=list)
    callbacks: list[tuple[Callback, str]] = field(default_factory=list)

    def submit(self, args: JobTaskArgs, countdown: float) -> None:
        self.sent.append(("submit", args, countdown))

    def poll(self, args: JobTaskArgs, countdown: float) -> None:
        self.sent.append(("poll", args, countdown))

    def download(self, args: FileTaskArgs, countdown: float) -> None:
        self.sent.append(("download", args, countdown))

    def callback(self, callback: Callback, record: ExportRecord) -> None:
        self.callbacks.append((callback, record.status.value))

    def take(self) -> list[tuple[str, Any, float]]:
        sent, self.sent = self.sent, []
        return sent

    def take_one(self, kind: str) -> Any:
        """The single task of ``kind`` the last step dispatched (anything else means the step broke)."""
        sent = self.take()
        if len(sent) != 1 or sent[0][0] != kind:
            raise RuntimeError(f"expected the step to dispatch one {kind} task, it dispatched {sent}")
        return sent[0][1]
