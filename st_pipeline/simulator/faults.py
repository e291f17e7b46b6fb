"""Faults on demand: answer the next requests with an error instead of data."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from st_pipeline.simulator.errors import problem
from st_pipeline.simulator.store import dumps


@dataclass
class Fault:
    """``status`` for the next ``remaining`` requests (of ``tenant_id``, or of any tenant)."""

    status: int
    remaining: int
    tenant_id: int | None
    retry_after_s: int | None

    def response(self) -> tuple[int, str, dict[str, str]]:
        """Status, ``ApiErrorResponse`` body and headers of the faulty answer."""
        if self.status == 429:
            title = f"Rate limit is exceeded. Try again in {self.retry_after_s} seconds."
        else:
            title = "The service failed to process the request (fault injected by the simulator)."
        headers = {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
        return self.status, dumps(problem(self.status, title)), headers


class FaultInjector:
    """A thread-safe queue of pending faults, consumed in the order they were injected."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def inject(
        self, status: int, count: int, tenant_id: int | None, retry_after_s: int | None
    ) -> None:
        if status == 429 and retry_after_s is None:
            retry_after_s = 1
        with self._lock:
            self._faults.append(Fault(status, count, tenant_id, retry_after_s))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, tenant_id: int) -> Fault | None:
        """The fault that applies to this request of ``tenant_id``, if any (and consume it)."""
        with self._lock:
            for fault in self._faults:
                if fault.tenant_id is None or fault.tenant_id == tenant_id:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None
