"""Request counters, for tests and demos that assert how a client used the API."""

from __future__ import annotations

import threading
from collections import Counter


class SimulatorStats:
    """Thread-safe counts of token requests, API requests and response statuses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token_requests: Counter[int | None] = Counter()
        self._api_requests: Counter[int | None] = Counter()
        self._statuses: Counter[int] = Counter()

    def record_token_request(self, tenant_id: int | None) -> None:
        with self._lock:
            self._token_requests[tenant_id] += 1

    def record_api_request(self, tenant_id: int | None) -> None:
        with self._lock:
            self._api_requests[tenant_id] += 1

    def record_response(self, status: int) -> None:
        with self._lock:
            self._statuses[status] += 1

    @property
    def token_requests(self) -> int:
        """Token requests of all tenants (including ones with unknown clients)."""
        with self._lock:
            return sum(self._token_requests.values())

    def token_requests_for(self, tenant_id: int) -> int:
        with self._lock:
            return self._token_requests[tenant_id]

    @property
    def api_requests(self) -> int:
        """API requests of all tenants (including ones rejected or for no tenant)."""
        with self._lock:
            return sum(self._api_requests.values())

    def api_requests_for(self, tenant_id: int) -> int:
        with self._lock:
            return self._api_requests[tenant_id]

    @property
    def responses_by_status(self) -> dict[int, int]:
        """Responses to token and API requests, by HTTP status (a copy)."""
        with self._lock:
            return dict(self._statuses)

    def reset(self) -> None:
        with self._lock:
            self._token_requests.clear()
            self._api_requests.clear()
            self._statuses.clear()
