"""Reconnect delays: capped exponential backoff with full jitter.

Full jitter (a uniformly random delay between 0 and the exponential ceiling,
as in the AWS architecture blog's "Exponential Backoff and Jitter") spreads
the reconnects of many clients cut off at the same moment - a server restart
drops them all at once - so they do not come back as one thundering herd.
"""

from __future__ import annotations

import math
import random
from typing import Callable


class Backoff:
    """The delays before successive reconnect attempts.

    Attempt ``n`` (counting from 0) waits a random time in
    ``[0, min(maximum, initial * multiplier**n)]`` (``jitter=False``: exactly the
    upper bound). :meth:`reset` after a success starts over at ``initial``.

    ``rand`` returns a float in [0, 1); inject one to make the delays predictable.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        *,
        multiplier: float = 2.0,
        jitter: bool = True,
        rand: Callable[[], float] | None = None,
    ) -> None:
        for name, value in (("initial", initial), ("maximum", maximum), ("multiplier", multiplier)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Backoff {name} must be a number, not {type(value).__name__}")
            if not math.isfinite(value):
                raise ValueError(f"Backoff {name} must be finite")
        if initial < 0:
            raise ValueError("Backoff initial must be >= 0")
        if maximum < initial:
            raise ValueError("Backoff maximum must be >= initial")
        if multiplier < 1:
            raise ValueError("Backoff multiplier must be >= 1 (delays never shrink)")
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.multiplier = float(multiplier)
        self.jitter = jitter
        self._rand = rand or random.random
        self.attempts = 0  # delays handed out since the last reset

    def ceiling(self, attempt: int | None = None) -> float:
        """The upper bound of the delay for ``attempt`` (default: the next one)."""
        n = self.attempts if attempt is None else attempt
        if self.initial == 0:
            return 0.0
        try:
            value = self.initial * self.multiplier**n
        except OverflowError:  # after a very long outage; the cap applies anyway
            return self.maximum
        return min(self.maximum, value)

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the attempt count."""
        ceiling = self.ceiling()
        self.attempts += 1
        if not self.jitter:
            return ceiling
        return self._rand() * ceiling

    def reset(self) -> None:
        """A connection succeeded: the next loss starts again at ``initial``."""
        self.attempts = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial}, maximum={self.maximum}, multiplier={self.multiplier}, "
            f"jitter={self.jitter}, attempts={self.attempts})"
        )
