"""Retry policy (exponential backoff with jitter), the retry loop, and the per-tenant consecutive-failure stop."""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from st_pipeline.servicetitan.errors import ConsecutiveFailuresError, ServiceTitanError

T = TypeVar("T")

_SECONDS_IN_TITLE = re.compile(r"(\d+(?:\.\d+)?)\s*seconds?", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failing request is tried again."""

    max_attempts: int = 8
    max_elapsed_s: float = 300.0
    base_delay_s: float = 0.25
    max_delay_s: float = 30.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1``."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


def retry_after_s(header: str | None, title: str | None) -> float | None:
    """The wait a 429 asks for: the ``Retry-After`` header, else "… in N seconds" in the title."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    if title:
        match = _SECONDS_IN_TITLE.search(title)
        if match:
            return float(match.group(1))
    return None


class RetryableFailure(Exception):
    """Raised by one attempt that failed in a way another attempt may fix; ``wait_s`` is the wait
    the server asked for (``None``: the policy's backoff).

    ``counted`` false marks an answer that is not a failure of the request but part of talking to
    the server: a 429 asking for a wait within bounds (pacing), a 401 answered by a fresh token.
    It uses up neither attempts nor the policy's time; the caller bounds those answers itself.
    """

    def __init__(self, error: ServiceTitanError, wait_s: float | None = None, *, counted: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s
        self.counted = counted


def with_retries(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    clock: Callable[[], float],
    pause: Callable[[float], None],
    rng: random.Random,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """``attempt()`` until it returns, retrying each ``RetryableFailure`` within ``policy``'s bounds
    (attempts, and time spent on counted failures and their backoff); past them the failure's error
    is raised, saying how many attempts were made. Uncounted failures are retried after their wait
    without using up either bound. Any other exception ends at once."""
    spent = 0.0  # seconds of counted failures and their backoff
    attempts = 0
    while True:
        started = clock()
        try:
            return attempt()
        except RetryableFailure as failure:
            error = failure.error
            if not failure.counted:
                if on_retry is not None:
                    on_retry()
                pause(failure.wait_s or 0.0)
                continue
            attempts += 1
            spent += clock() - started
            wait = failure.wait_s if failure.wait_s is not None else policy.backoff_s(attempts, rng)
            if attempts >= policy.max_attempts or spent + wait > policy.max_elapsed_s:
                raise type(error)(
                    f"{error.detail} — gave up after {attempts} attempts",
                    tenant_id=error.tenant_id,
                    endpoint=error.endpoint,
                ) from None
            if on_retry is not None:
                on_retry()
            spent += wait
            pause(wait)


class ConsecutiveFailureStop:
    """Stops a tenant's requests for the rest of the run after ``limit`` consecutive failed requests.

    That many failures in a row (each already retried) means the network or ServiceTitan is down
    for this tenant; going on would only hammer it. Once stopped, every request raises
    ``ConsecutiveFailuresError`` without being sent, which ends the tenant's run (the next run
    resumes from the committed cursors). A success before the limit resets the count.
    """

    def __init__(self, tenant_id: int, *, limit: int = 10) -> None:
        self.tenant_id = tenant_id
        self.limit = limit
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self.last_failure: str | None = None

    @property
    def stopped(self) -> bool:
        return self._consecutive_failures >= self.limit

    def before_request(self, endpoint: str) -> None:
        """Raise ``ConsecutiveFailuresError`` once the limit was reached."""
        with self._lock:
            if self._consecutive_failures < self.limit:
                return
            raise ConsecutiveFailuresError(
                f"{self._consecutive_failures} consecutive requests failed (last: {self.last_failure}); the "
                "tenant's requests are stopped for this run instead of hammering ServiceTitan — check the "
                "network and ServiceTitan's status, then run again",
                tenant_id=self.tenant_id,
                endpoint=endpoint,
            )

    def record_success(self) -> None:
        with self._lock:
            if self._consecutive_failures < self.limit:
                self._consecutive_failures = 0

    def record_failure(self, reason: str) -> None:
        with self._lock:
            self._consecutive_failures += 1
            self.last_failure = reason
