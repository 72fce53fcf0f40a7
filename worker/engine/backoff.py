"""Poll delays: fast at first, growing with jitter, capped; the provider's Retry-After wins."""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.settings import Settings


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float
    cap: float
    multiplier: float
    jitter: float
    slow: float
    """Used while the provider retries a failed attempt itself (impact.com ERROR)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> BackoffPolicy:
        return cls(
            initial=settings.poll_initial_seconds,
            cap=settings.poll_max_seconds,
            multiplier=settings.poll_multiplier,
            jitter=settings.poll_jitter,
            slow=settings.slow_poll_seconds,
        )

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Delay before poll number ``attempt + 1``; jitter spreads thousands of exports apart."""
        base = self.initial * self.multiplier ** min(attempt, 64)
        jittered = base * (1 + rng.uniform(-self.jitter, self.jitter))
        return max(0.0, min(self.cap, jittered))

    def slow_delay(self, rng: random.Random) -> float:
        return self.slow * (1 + rng.uniform(0, self.jitter))

    def after_retry_after(self, retry_after: float, rng: random.Random) -> float:
        """Never earlier than the provider asked; a little later so a crowd doesn't return at once."""
        return retry_after + rng.uniform(0, max(1.0, retry_after) * self.jitter)
