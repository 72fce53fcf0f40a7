"""Job lifecycles shared by every simulated provider.

A job's whole future is scheduled when it is created (or replayed): a list of phases with real
start times derived from simulated durations and the time scale. Its status at any instant is then
a pure function of the clock, which keeps the simulator deterministic and lets tests drive time
with a fake clock instead of sleeping.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

Clock = Callable[[], float]
"""Returns Unix time in seconds; ``time.time`` in production, a fake in tests."""


@dataclass(frozen=True)
class Step:
    """One planned phase: a provider status held for ``seconds`` simulated seconds."""

    status: str
    seconds: float
    attempt: int = 0
    """Which try of the job this phase belongs to (0 = first), for providers that retry."""


@dataclass(frozen=True)
class Phase:
    """A scheduled phase in real Unix time; ``end`` is None for the terminal phase."""

    status: str
    start: float
    end: float | None
    attempt: int = 0

    def fraction(self, now: float) -> float:
        """How far through this phase ``now`` is, 0..1 (1 for terminal or zero-length phases)."""
        if self.end is None or self.end <= self.start:
            return 1.0
        return min(1.0, max(0.0, (now - self.start) / (self.end - self.start)))


class Timeline:
    """The scheduled phases of one job run, ending in a terminal status."""

    def __init__(self, start: float, time_scale: float, steps: Sequence[Step], terminal: Step) -> None:
        phases: list[Phase] = []
        at = start
        for step in steps:
            end = at + step.seconds / time_scale
            phases.append(Phase(step.status, at, end, step.attempt))
            at = end
        phases.append(Phase(terminal.status, at, None, terminal.attempt))
        self.phases: tuple[Phase, ...] = tuple(phases)
        self._starts = [phase.start for phase in phases]

    def at(self, now: float) -> Phase:
        """The phase in force at ``now`` (zero-length phases are passed over)."""
        index = bisect.bisect_right(self._starts, now) - 1
        return self.phases[max(index, 0)]

    def reached(self, status: str, now: float) -> Phase | None:
        """The first phase with ``status`` that has begun by ``now``, if any."""
        return next((p for p in self.phases if p.status == status and p.start <= now), None)


@dataclass
class SimJob:
    """State common to the jobs of every provider; subclasses add the wire format."""

    provider: ClassVar[str]

    job_id: str
    created: float
    timeline: Timeline
    downloads: int = 0
    polls: int = 0

    def status(self, now: float) -> str:
        return self.timeline.at(now).status

    def stats(self, now: float) -> dict[str, Any]:
        """The entry of this job in ``GET /_sim/stats``."""
        raise NotImplementedError
