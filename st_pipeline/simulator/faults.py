"""Faults: answers that a production client must survive, instead of data.

Two sources apply to authorized API requests:

* a queue (``Simulator.inject_faults``): "answer the next N requests with status S" (status 0:
  drop the connection);
* a :class:`FaultPlan`: each request has a fixed chance of each kind of fault. The draw for a
  request is a hash of the seed, the tenant, the request (method, path, sorted query) and how
  many times that same request was seen before, so a run is reproducible whatever the thread
  scheduling, and a retry of a request gets a fresh draw.

A queue of its own (``Simulator.inject_token_faults``) applies to the token endpoint, whose
error answers (:func:`token_error_reply`) are OAuth-shaped rather than ``ApiErrorResponse``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl

from st_pipeline.simulator.errors import problem
from st_pipeline.simulator.reply import HTML, Reply
from st_pipeline.simulator.stats import FAULT_KINDS
from st_pipeline.simulator.store import dumpb

SERVER_ERROR_STATUSES = (500, 502, 503)

_STATUS_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True)
class FaultPlan:
    """Per-request probabilities of each kind of fault (each between 0 and 1).

    * ``server_error_rate``: 500, 502 or 503 (evenly), half with an ``ApiErrorResponse`` JSON
      body and half with an HTML page, as a gateway in front of the API would send;
    * ``drop_rate``: the connection is closed without any response;
    * ``truncate_rate``: 200 with the JSON body cut in half (``Content-Length`` matches);
    * ``slow_rate``: the right answer, but only after ``slow_s`` seconds;
    * ``throttle_rate``: 429 with ``Retry-After: injected_retry_after_s``.

    At most one fault applies to a request. Rates adding up to more than 1 are scaled down in
    proportion (every request then gets some fault).
    """

    server_error_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 2.0
    throttle_rate: float = 0.0
    injected_retry_after_s: int = 1

    def __post_init__(self) -> None:
        for kind, rate in zip(FAULT_KINDS, self._raw_rates(), strict=True):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{kind}_rate must be between 0 and 1, not {rate}")
        if self.slow_s < 0:
            raise ValueError("slow_s must not be negative")
        if self.injected_retry_after_s < 0:
            raise ValueError("injected_retry_after_s must not be negative")

    @staticmethod
    def uniform(rate: float) -> FaultPlan:
        """Every kind of fault at ``rate`` each."""
        return FaultPlan(
            server_error_rate=rate,
            drop_rate=rate,
            truncate_rate=rate,
            slow_rate=rate,
            throttle_rate=rate,
        )

    def _raw_rates(self) -> tuple[float, ...]:
        return (
            self.server_error_rate,
            self.drop_rate,
            self.truncate_rate,
            self.slow_rate,
            self.throttle_rate,
        )

    @property
    def total_rate(self) -> float:
        """The chance that a request gets some fault."""
        return min(1.0, sum(self._raw_rates()))

    def rates(self) -> dict[str, float]:
        """Effective rate per kind (after scaling down an excess over 1)."""
        raw = self._raw_rates()
        total = sum(raw)
        factor = 1.0 / total if total > 1.0 else 1.0
        return {kind: rate * factor for kind, rate in zip(FAULT_KINDS, raw, strict=True)}


@dataclass(frozen=True)
class Fault:
    """One fault to serve: its ``kind`` (see ``stats.FAULT_KINDS``) and details."""

    kind: str
    status: int = 200
    html: bool = False  # server errors: an HTML page instead of an ApiErrorResponse
    retry_after_s: int | None = None  # throttle
    delay_s: float = 0.0  # slow

    @property
    def is_error(self) -> bool:
        """Whether the fault replaces the answer with an error response."""
        return self.kind in ("server_error", "throttle")

    def error_reply(self) -> Reply:
        """The error response of a ``server_error`` or ``throttle`` fault."""
        headers = {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
        if self.status == 429:
            title = f"Rate limit is exceeded. Try again in {self.retry_after_s} seconds."
        else:
            title = "The service failed to process the request (fault injected by the simulator)."
        if self.html:
            return Reply(self.status, _html_page(self.status), headers, content_type=HTML)
        return Reply(self.status, dumpb(problem(self.status, title)), headers)


_TOKEN_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    403: "access_denied",
    429: "too_many_requests",
}


def token_error_reply(fault: Fault) -> Reply:
    """The token endpoint's answer to a queued token fault (not for ``drop``): a 429 is
    ``{"error": "too_many_requests", …}`` with ``Retry-After``, a 5xx an HTML gateway page,
    anything else an OAuth error object."""
    if fault.status >= 500:
        return Reply(fault.status, _html_page(fault.status), content_type=HTML)
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if fault.retry_after_s is not None:
        headers["Retry-After"] = str(fault.retry_after_s)
    body = {
        "error": _TOKEN_ERRORS.get(fault.status, "server_error"),
        "error_description": "Fault injected by the simulator at the token endpoint.",
    }
    return Reply(fault.status, dumpb(body), headers)


def _html_page(status: int) -> bytes:
    text = f"{status} {_STATUS_TEXT.get(status, 'Error')}"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{text}</title></head>\n"
        f"<body><h1>{text}</h1><p>The upstream service did not answer in time "
        f"(simulated gateway).</p></body></html>\n"
    ).encode()


@dataclass
class _Queued:
    """``status`` for the next ``remaining`` requests (of ``tenant_id``, or of any tenant)."""

    status: int
    remaining: int
    tenant_id: int | None
    retry_after_s: int | None

    def fault(self) -> Fault:
        if self.status == 0:
            return Fault("drop", 0)
        kind = "throttle" if self.status == 429 else "server_error"
        return Fault(kind, self.status, retry_after_s=self.retry_after_s)


class FaultInjector:
    """A thread-safe queue of pending faults, consumed in the order they were injected."""

    def __init__(self) -> None:
        self._faults: list[_Queued] = []
        self._lock = threading.Lock()

    def inject(self, status: int, count: int, tenant_id: int | None, retry_after_s: int | None) -> None:
        """Queue ``status`` (an HTTP error status, or 0 for a dropped connection) for the next
        ``count`` requests (of ``tenant_id``, or of any tenant)."""
        if status != 0 and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599) or 0, not {status}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if status == 429 and retry_after_s is None:
            retry_after_s = 1
        with self._lock:
            self._faults.append(_Queued(status, count, tenant_id, retry_after_s))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, tenant_id: int | None) -> Fault | None:
        """The fault that applies to this request of ``tenant_id``, if any (and consume it).

        A queued 429 counts as a ``throttle`` fault, 0 as a ``drop``, any other status as a
        ``server_error``. ``tenant_id`` ``None`` (a request of no known tenant) takes only
        faults queued for any tenant.
        """
        with self._lock:
            for queued in self._faults:
                if queued.tenant_id is None or queued.tenant_id == tenant_id:
                    queued.remaining -= 1
                    if queued.remaining <= 0:
                        self._faults.remove(queued)
                    return queued.fault()
        return None


class FaultDraws:
    """Decides, reproducibly from ``seed``, which planned fault (if any) a request gets."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self._seed = seed
        self._bounds: list[tuple[float, str]] = []  # (upper bound of the draw, kind)
        upper = 0.0
        for kind, rate in plan.rates().items():
            if rate > 0:
                upper += rate
                self._bounds.append((upper, kind))
        if self._bounds and plan.total_rate >= 1.0:  # no gap left by rounding
            self._bounds[-1] = (float("inf"), self._bounds[-1][1])
        self._seen: dict[bytes, int] = {}  # request digest → times seen
        self._lock = threading.Lock()

    def draw(self, tenant_id: int, method: str, path: str, query: str) -> Fault | None:
        """The fault for this request (counting it as seen once more), or ``None``."""
        if not self._bounds:
            return None
        pairs = sorted(parse_qsl(query, keep_blank_values=True))
        request = "\x1f".join(
            [str(self._seed), str(tenant_id), method, path] + [f"{name}={value}" for name, value in pairs]
        ).encode()
        key = hashlib.blake2b(request, digest_size=16).digest()
        with self._lock:
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
        digest = hashlib.blake2b(request + b"\x1e" + str(seen).encode(), digest_size=16).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        variant = int.from_bytes(digest[8:], "big")
        for upper, kind in self._bounds:
            if u < upper:
                return self._fault(kind, variant)
        return None

    def _fault(self, kind: str, variant: int) -> Fault:
        plan = self.plan
        if kind == "server_error":
            status = SERVER_ERROR_STATUSES[variant % len(SERVER_ERROR_STATUSES)]
            return Fault(kind, status, html=(variant // len(SERVER_ERROR_STATUSES)) % 2 == 1)
        if kind == "throttle":
            return Fault(kind, 429, retry_after_s=plan.injected_retry_after_s)
        if kind == "slow":
            return Fault(kind, delay_s=plan.slow_s)
        return Fault(kind)  # drop, truncate
