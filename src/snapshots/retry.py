"""When a failed inbox item is tried again.

The n-th failure (n >= 1) waits `min(BASE * 2 ** (n - 1), CAP)` seconds, scaled by a random
factor in [0.5, 1.0] so that items failing together do not return together. With the defaults
(BASE 5 s, CAP 1 h, 10 attempts) an item is retried for about 40 minutes before it goes `dead`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

BASE = 5.0  # seconds
CAP = 3600.0  # seconds


@dataclass(frozen=True)
class RetryDecision:
    dead: bool
    delay: float  # seconds until the next attempt; 0 when dead


def backoff(failures: int, *, rng: random.Random | None = None) -> float:
    raw = min(BASE * 2 ** min(max(failures - 1, 0), 30), CAP)
    return float(raw * (rng or random).uniform(0.5, 1.0))


def decide(*, attempts: int, max_attempts: int, permanent: bool) -> RetryDecision:
    """`attempts` counts the tries made so far, this one included."""
    if permanent or attempts >= max_attempts:
        return RetryDecision(dead=True, delay=0.0)
    return RetryDecision(dead=False, delay=backoff(attempts))
