"""The API's rate limits: a token bucket per (application key, tenant), and a window per report.

ServiceTitan allows a number of calls per second per application per tenant; a bucket holds up
to one second's worth of calls and refills continuously. Time is real monotonic time, not the
simulator's advanceable token clock: a client has to actually slow down.

The Reporting API is limited apart: a few requests for the same report per minute per tenant
(:class:`WindowLimiter`). That one runs on the simulator's clock (real time plus what tests
add with ``Simulator.advance_clock``), so a test can let a window pass without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    """The rate limit's answer to one request."""

    allowed: bool
    now: float  # when it was decided, on the limiter's clock
    retry_after_s: int = 0  # whole seconds to wait when not allowed (at least 1)


class RateLimiter:
    """Token buckets of ``rate`` calls per second and a capacity of ``rate`` (one second of
    burst; at least one call). A refused request does not consume a token.

    ``clock`` returns seconds; tests may replace it to make admissions independent of timing.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("the rate limit must be positive")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.clock = clock
        self._buckets: dict[Hashable, list[float]] = {}  # key → [tokens, refilled at]
        self._lock = threading.Lock()

    def admit(self, key: Hashable, rate: float | None = None) -> Admission:
        """Take a token from ``key``'s bucket if there is one; ``rate`` replaces the limiter's
        own for this key (a tenant limited harder than the rest)."""
        rate = self.rate if rate is None else rate
        capacity = max(1.0, rate)
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [capacity, now]
            tokens = min(capacity, bucket[0] + max(0.0, now - bucket[1]) * rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return Admission(True, now)
            bucket[0] = tokens
            wait = math.ceil((1.0 - tokens) / rate)
            return Admission(False, now, max(1, wait))

    def reset(self) -> None:
        """Fill every bucket again."""
        with self._lock:
            self._buckets.clear()


class WindowLimiter:
    """At most ``limit`` admissions per key within any ``window_s`` seconds (a sliding window:
    the log of each key's admissions in the last window). A refused request is not logged, so
    it does not push the next admission further away.

    A refusal's ``retry_after_s`` is the wait, in whole seconds rounded up (at least 1), until
    the oldest admission in the window leaves it.
    """

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("the limit and the window must be positive")
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._logs: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> Admission:
        with self._lock:
            now = self.clock()
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = deque()
            while log and log[0] <= now - self.window_s:
                log.popleft()
            if len(log) < self.limit:
                log.append(now)
                return Admission(True, now)
            wait = log[0] + self.window_s - now
            return Admission(False, now, max(1, math.ceil(wait)))

    def reset(self) -> None:
        """Forget every admission."""
        with self._lock:
            self._logs.clear()
