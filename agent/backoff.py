"""Exponential back-off with full jitter, for reconnecting to the broker (pure).

``delay(n) = uniform(0, min(cap, base * 2**n))`` after the n-th consecutive failure ("full
jitter", which spreads a fleet that lost its broker at the same instant so that it does not come
back as a thundering herd). The random source is injected; no I/O, no sleeping here.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        base: float = 0.5,
        cap: float = 60.0,
        *,
        floor: float = 0.05,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("back-off needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.floor = floor
        self._rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 32)))
        self.failures += 1
        return max(self.floor, ceiling * self._rand())

    def reset(self) -> None:
        """A connection succeeded: start again from ``base``."""
        self.failures = 0
