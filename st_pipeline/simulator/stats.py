"""Request counters, for tests, demos and benchmarks that assert how a client used the API.

Every counter sits behind one lock and costs a dict update, so counting stays cheap under many
concurrent requests.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

FAULT_KINDS = ("server_error", "drop", "truncate", "slow", "throttle")
"""The kinds of injected faults, as counted in :attr:`SimulatorStats.injected`."""

_WINDOW_S = 1.0


class SimulatorStats:
    """Thread-safe counts of token requests, API requests, response statuses, throttled
    requests and injected faults, in total and per tenant; and of the faults injected at the
    token endpoint (:attr:`token_faults`, not part of :attr:`injected`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token_requests: Counter[int | None] = Counter()
        self._api_requests: Counter[int | None] = Counter()
        self._statuses: Counter[int] = Counter()
        self._throttled: Counter[int] = Counter()
        self._admissions: dict[int, list[bool]] = {}  # per tenant, in order: admitted (True) or 429
        self._injected: dict[int | None, Counter[str]] = {}
        self._recent: dict[int, deque[float]] = {}  # accepted requests of the last second
        self._peak_per_second: Counter[int] = Counter()
        self._token_faults = 0
        self._report_requests: Counter[tuple[int, int]] = Counter()  # (tenant, report): data requests let through
        self._report_throttled: Counter[tuple[int, int]] = Counter()  # (tenant, report): refused with 429

    # -- recording (called by the simulator) ------------------------------------------------

    def record_token_request(self, tenant_id: int | None) -> None:
        with self._lock:
            self._token_requests[tenant_id] += 1

    def record_api_request(self, tenant_id: int | None) -> None:
        with self._lock:
            self._api_requests[tenant_id] += 1

    def record_response(self, status: int) -> None:
        with self._lock:
            self._statuses[status] += 1

    def record_throttled(self, tenant_id: int) -> None:
        """A request refused by the rate limit (not an injected 429)."""
        with self._lock:
            self._throttled[tenant_id] += 1
            self._admissions.setdefault(tenant_id, []).append(False)

    def record_accepted(self, tenant_id: int, now: float) -> None:
        """An authorized request let through by the rate limit at ``now`` (seconds)."""
        with self._lock:
            self._admissions.setdefault(tenant_id, []).append(True)
            recent = self._recent.get(tenant_id)
            if recent is None:
                recent = self._recent[tenant_id] = deque()
            recent.append(now)
            while recent[0] <= now - _WINDOW_S:
                recent.popleft()
            if len(recent) > self._peak_per_second[tenant_id]:
                self._peak_per_second[tenant_id] = len(recent)

    def record_injected(self, tenant_id: int | None, kind: str) -> None:
        """A fault of ``kind`` (one of :data:`FAULT_KINDS`) served instead of a normal answer."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            counts = self._injected.get(tenant_id)
            if counts is None:
                counts = self._injected[tenant_id] = Counter()
            counts[kind] += 1

    def record_report_request(self, tenant_id: int, report_id: int, admitted: bool) -> None:
        """A report data request (``POST …/reports/{id}/data``), let through by the per-report
        limit or refused with 429 (not counted in :attr:`throttled`, which is the per-second
        limit's)."""
        with self._lock:
            counter = self._report_requests if admitted else self._report_throttled
            counter[(tenant_id, report_id)] += 1

    def record_token_fault(self) -> None:
        """A fault served at the token endpoint instead of a token."""
        with self._lock:
            self._token_faults += 1

    # -- totals --------------------------------------------------------------------------------

    @property
    def token_requests(self) -> int:
        """Token requests of all tenants (including ones with unknown clients)."""
        with self._lock:
            return sum(self._token_requests.values())

    def admissions_for(self, tenant_id: int) -> list[bool]:
        """The rate limit's answers to a tenant's authorized requests, in order: ``True`` admitted,
        ``False`` refused with 429."""
        with self._lock:
            return list(self._admissions.get(tenant_id, ()))

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

    @property
    def throttled(self) -> int:
        """Requests refused by the rate limit, all tenants (injected 429s are not counted)."""
        with self._lock:
            return sum(self._throttled.values())

    def throttled_for(self, tenant_id: int) -> int:
        with self._lock:
            return self._throttled[tenant_id]

    @property
    def injected(self) -> dict[str, int]:
        """Injected faults of all tenants by kind (every kind of :data:`FAULT_KINDS` present)."""
        with self._lock:
            return self._injected_by_kind(list(self._injected.values()))

    @property
    def injected_total(self) -> int:
        with self._lock:
            return sum(sum(counts.values()) for counts in self._injected.values())

    def injected_for(self, tenant_id: int) -> dict[str, int]:
        """Injected faults of one tenant by kind."""
        with self._lock:
            return self._injected_by_kind([self._injected.get(tenant_id, Counter())])

    @property
    def token_faults(self) -> int:
        """Faults served at the token endpoint (``Simulator.inject_token_faults``)."""
        with self._lock:
            return self._token_faults

    def report_requests_for(self, tenant_id: int, report_id: int) -> int:
        """Data requests for one report of one tenant that the per-report limit let through."""
        with self._lock:
            return self._report_requests[(tenant_id, report_id)]

    def report_throttled_for(self, tenant_id: int, report_id: int) -> int:
        """Data requests for one report of one tenant refused with 429 by the per-report limit."""
        with self._lock:
            return self._report_throttled[(tenant_id, report_id)]

    @property
    def report_throttled(self) -> int:
        """Report data requests refused by the per-report limit, all tenants and reports."""
        with self._lock:
            return sum(self._report_throttled.values())

    def max_requests_per_second_for(self, tenant_id: int) -> int:
        """The most requests of ``tenant_id`` let through (authorized, not throttled) within
        any sliding one-second window so far."""
        with self._lock:
            return self._peak_per_second[tenant_id]

    def snapshot(self) -> dict[str, Any]:
        """Every counter, in total and per tenant, as JSON-ready data (string keys)."""
        with self._lock:
            tenants = sorted(
                {t for t in self._token_requests if t is not None}
                | {t for t in self._api_requests if t is not None}
                | set(self._throttled)
                | {t for t in self._injected if t is not None}
                | {t for t, _ in self._report_requests}
                | {t for t, _ in self._report_throttled}
            )
            all_injected = self._injected_by_kind(list(self._injected.values()))
            return {
                "token_requests": sum(self._token_requests.values()),
                "api_requests": sum(self._api_requests.values()),
                "responses_by_status": {str(status): count for status, count in sorted(self._statuses.items())},
                "throttled": sum(self._throttled.values()),
                "injected": all_injected,
                "injected_total": sum(all_injected.values()),
                "token_faults": self._token_faults,
                "report_throttled": sum(self._report_throttled.values()),
                "tenants": {str(tenant): self._tenant_snapshot(tenant) for tenant in tenants},
            }

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._token_requests.clear()
            self._api_requests.clear()
            self._statuses.clear()
            self._throttled.clear()
            self._injected.clear()
            self._recent.clear()
            self._peak_per_second.clear()
            self._token_faults = 0
            self._report_requests.clear()
            self._report_throttled.clear()

    # -- internals (the lock is held) ----------------------------------------------------------

    @staticmethod
    def _injected_by_kind(counters: list[Counter[str]]) -> dict[str, int]:
        return {kind: sum(counts[kind] for counts in counters) for kind in FAULT_KINDS}

    def _tenant_snapshot(self, tenant_id: int) -> dict[str, Any]:
        injected = self._injected_by_kind([self._injected.get(tenant_id, Counter())])
        return {
            "token_requests": self._token_requests[tenant_id],
            "api_requests": self._api_requests[tenant_id],
            "throttled": self._throttled[tenant_id],
            "injected": injected,
            "injected_total": sum(injected.values()),
            "max_requests_per_second": self._peak_per_second[tenant_id],
            "reports": {
                str(report): {
                    "requests": self._report_requests[(tenant, report)],
                    "throttled": self._report_throttled[(tenant, report)],
                }
                for tenant, report in sorted(set(self._report_requests) | set(self._report_throttled))
                if tenant == tenant_id
            },
        }
