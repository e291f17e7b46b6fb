"""One request budget per (application key, tenant), shared by every endpoint of a run.

ServiceTitan allows 60 requests per second per application per tenant. The limiter spaces
requests evenly at that rate with a small burst allowance (a GCRA), so the server's bucket never
runs dry. A 429 pauses every caller until its ``Retry-After`` has passed and lowers the rate;
the rate then climbs back a little with each successful request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

DEFAULT_REQUESTS_PER_SECOND = 60.0
# After a 429 the rate is multiplied by this; each success then adds back a small step.
_BACKOFF_FACTOR = 0.75
_RECOVERY_STEP = 0.02


class RateLimiter:
    """A thread-safe pacing limiter: ``acquire()`` blocks until the next request may go."""

    def __init__(
        self,
        requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        self.configured_rate = requests_per_second
        self.rate = requests_per_second
        self._burst = burst if burst is not None else max(1, int(requests_per_second / 10))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next request
        self._paused_until = 0.0
        self.waited_s = 0.0
        self.throttle_events = 0

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            interval = 1.0 / self.rate
            start = max(now, self._paused_until)
            tat = max(self._tat, start)
            send_at = max(start, tat - (self._burst - 1) * interval)
            self._tat = tat + interval
            wait = send_at - now
            self.waited_s += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def throttled(self, retry_after_s: float) -> None:
        """A 429 arrived: nobody sends before ``retry_after_s`` from now, and the rate drops."""
        with self._lock:
            now = self._clock()
            self._paused_until = max(self._paused_until, now + retry_after_s)
            self.rate = max(self.configured_rate * 0.05, self.rate * _BACKOFF_FACTOR)
            self.throttle_events += 1

    def succeeded(self) -> None:
        """A request went through: recover part of the rate lost to earlier 429s."""
        if self.rate < self.configured_rate:
            with self._lock:
                self.rate = min(self.configured_rate, self.rate + self.configured_rate * _RECOVERY_STEP)


_limiters: dict[tuple[str, int], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(app_key: str, tenant_id: int, requests_per_second: float) -> RateLimiter:
    """The process-wide limiter of (app key, tenant); created with ``requests_per_second`` on first use."""
    key = (hashlib.sha256(app_key.encode()).hexdigest(), int(tenant_id))
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None or limiter.configured_rate != requests_per_second:
            limiter = RateLimiter(requests_per_second)
            _limiters[key] = limiter
        return limiter
