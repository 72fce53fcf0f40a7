"""Runs the tasks the engine dispatches, in order, so an engine test reads as the story of one export."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.conftest import FakeClock
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit


@dataclass
class Driver:
    """Ignores countdowns unless given a clock, which it then moves forward by each task's countdown
    (for a provider whose jobs progress with time, such as the simulator on the same clock)."""

    rt: Runtime
    dispatcher: RecordingDispatcher
    clock: FakeClock | None = None
    executed: list[str] = field(default_factory=list)

    def step(self) -> bool:
        if not self.dispatcher.sent:
            return False
        kind, args, countdown = self.dispatcher.sent.pop(0)
        self.executed.append(kind)
        if self.clock is not None:
            self.clock.advance(countdown)
        if kind == "submit":
            run_submit(self.rt, args)
        elif kind == "poll":
            run_poll(self.rt, args)
        else:
            run_download(self.rt, args, owner=f"test-{len(self.executed)}")
        return True

    def run(self, limit: int = 200) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError(f"still dispatching after {limit} steps: {self.executed[-10:]}")
