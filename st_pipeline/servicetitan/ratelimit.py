"""One request budget per (application key, tenant), shared by every endpoint and run of a process.

ServiceTitan allows 60 requests per second per application per tenant, but the same application
key may be used elsewhere too (another integration, another deployment), and ServiceTitan may
throttle harder than it publishes. So the published limit is where the limiter starts, not a
promise: it spaces requests evenly at its current rate with a small burst allowance (a GCRA), and
converges on the rate the server actually grants with AIMD, as TCP does with its window:

- a 429 pauses every caller until its ``Retry-After`` has passed and cuts the rate to
  ``_CUT_FACTOR`` of itself, once per congestion episode: requests sent before the last cut were
  paced at the old rate, so their 429s say nothing new and do not cut again;
- each successful request raises the rate by ``_RECOVERY_PER_SUCCESS`` of itself, back up to the
  configured rate, so the limiter probes for spare capacity slowly (about 140 requests to climb
  back from one cut) and the share of 429s stays at a few percent when the server grants less.

The limiter is shared by every thread of a tenant's run and kept for the life of the process, so a
later run of the same app key and tenant starts at the rate the last one learned.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

DEFAULT_REQUESTS_PER_SECOND = 60.0
_CUT_FACTOR = 0.7
_RECOVERY_PER_SUCCESS = 0.0025
# The rate is never cut below this share of the configured rate (1 request/s at 60).
_FLOOR_SHARE = 1 / 60


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
        self._last_cut_at = float("-inf")
        self.throttle_events = 0
        self.cuts = 0

    def acquire(self) -> float:
        """Wait for a slot; returns the moment (on the limiter's clock) the request may go."""
        with self._lock:
            now = self._clock()
            interval = 1.0 / self.rate
            start = max(now, self._paused_until)
            tat = max(self._tat, start)
            send_at = max(start, tat - (self._burst - 1) * interval)
            self._tat = tat + interval
            wait = send_at - now
        if wait > 0:
            self._sleep(wait)
        return send_at

    def throttled(self, retry_after_s: float, sent_at: float | None = None) -> None:
        """A 429 arrived for a request sent at ``sent_at`` (``None``: unknown, taken as sent now):
        nobody sends before ``retry_after_s`` from now, and the rate is cut unless the request left
        before the last cut."""
        with self._lock:
            now = self._clock()
            self._paused_until = max(self._paused_until, now + retry_after_s)
            self.throttle_events += 1
            if sent_at is None or sent_at >= self._last_cut_at:
                self.rate = max(self.configured_rate * _FLOOR_SHARE, self.rate * _CUT_FACTOR)
                self._last_cut_at = now
                self.cuts += 1

    def succeeded(self) -> None:
        """A request went through: probe for a little more of the rate lost to earlier 429s."""
        if self.rate < self.configured_rate:
            with self._lock:
                self.rate = min(self.configured_rate, self.rate * (1 + _RECOVERY_PER_SUCCESS))


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
