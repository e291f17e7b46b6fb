"""The HTTP client of one tenant: paced, retried, circuit-broken requests; export feeds; paged lists.

One client serves one tenant run: one connection pool, one token cache, one circuit breaker, and
the process-wide rate limiter of (app key, tenant). It is safe to use from several threads, which
is how a run extracts a tenant's endpoints concurrently.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from st_pipeline.servicetitan.auth import TenantCredentials, TokenProvider
from st_pipeline.servicetitan.catalogue import Endpoint
from st_pipeline.servicetitan.errors import (
    AuthenticationError,
    BadResponseError,
    MissingScopeError,
    NotFoundError,
    RateLimitedError,
    RequestError,
    ServerError,
    ServiceTitanError,
    StuckCursorError,
)
from st_pipeline.servicetitan.models import decode_response
from st_pipeline.servicetitan.ratelimit import DEFAULT_REQUESTS_PER_SECOND, RateLimiter, shared_limiter
from st_pipeline.servicetitan.resilience import CircuitBreaker, RetryPolicy, retry_after_s
from st_pipeline.servicetitan.settings import ApiSettings, assert_may_carry_secret

# The largest page ServiceTitan serves on its paged list endpoints.
MAX_PAGE_SIZE = 5000
# Pages of one paged list fetched at once when its total is known.
PARALLEL_LIST_PAGES = 4


@dataclass
class Page:
    """One response of an export feed or a paged list."""

    records: list[dict[str, Any]]
    number: int
    has_more: bool
    continue_from: str | None = None  # export feeds: the token to resume after this page
    total_count: int | None = None  # paged lists asked with includeTotal
    validated: bool = False  # every record already passed its record model while decoding


@dataclass
class RequestStats:
    """Counters of one client's traffic (thread-safe), reported as materialization metadata."""

    requests: int = 0
    pages: int = 0
    records: int = 0
    retries: int = 0
    throttled: int = 0
    reauthentications: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    retries_by_endpoint: dict[str, int] = field(default_factory=dict)
    throttled_by_endpoint: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str, endpoint: Endpoint | None = None, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)
            per_endpoint = {"requests": self.by_endpoint, "retries": self.retries_by_endpoint,
                            "throttled": self.throttled_by_endpoint}.get(name)
            if endpoint is not None and per_endpoint is not None:
                per_endpoint[endpoint.dataset_key] = per_endpoint.get(endpoint.dataset_key, 0) + amount


@dataclass(frozen=True)
class ClientOptions:
    """Tunables of a client; the defaults suit ServiceTitan's published limits."""

    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    timeout_s: float = 100.0
    retry: RetryPolicy = RetryPolicy()
    circuit_failure_threshold: int = 10
    circuit_cooldown_s: float = 30.0
    max_connections: int = 16
    # The longest Retry-After the client honours; a 429 asking for more fails that request at once
    # (the other datasets go on) instead of pausing every thread of the tenant.
    max_retry_after_s: float = 300.0


class ServiceTitanClient:
    """Reads ServiceTitan endpoints for one tenant."""

    def __init__(
        self,
        settings: ApiSettings,
        credentials: TenantCredentials,
        *,
        options: ClientOptions = ClientOptions(),
        http: httpx.Client | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float | None = None,
    ) -> None:
        assert_may_carry_secret(settings.api_url)  # requests carry the app key and a bearer token
        self.settings = settings
        self.tenant_id = credentials.tenant_id
        self.options = options
        self._owns_http = http is None
        limits = httpx.Limits(max_connections=options.max_connections, max_keepalive_connections=options.max_connections)
        self._http = http or httpx.Client(timeout=timeout_s or options.timeout_s, limits=limits)
        self.tokens = TokenProvider(credentials, settings.auth_url, self._http, clock=clock)
        self.limiter = limiter or shared_limiter(
            settings.app_key.get_secret_value(), credentials.tenant_id, options.requests_per_second
        )
        self.breaker = CircuitBreaker(
            credentials.tenant_id,
            failure_threshold=options.circuit_failure_threshold,
            cooldown_s=options.circuit_cooldown_s,
            clock=clock,
        )
        self.stats = RequestStats()
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random()
        self._page_pool: ThreadPoolExecutor | None = None
        self._page_pool_lock = threading.Lock()

    def __enter__(self) -> ServiceTitanClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._page_pool is not None:
            self._page_pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_http:
            self._http.close()

    # -- requests -------------------------------------------------------------------------

    def get_json(self, endpoint: Endpoint, params: dict[str, Any] | None = None) -> Any:
        """GET an endpoint of this tenant and return its decoded JSON body (see ``request``)."""
        return self.request(endpoint, params)[0]

    def request(self, endpoint: Endpoint, params: dict[str, Any] | None = None) -> tuple[Any, bool]:
        """GET an endpoint of this tenant; returns the decoded body and whether its records are valid.

        Paced by the shared rate limiter; 429, 5xx, timeouts, dropped connections and invalid
        JSON are retried with backoff (bounded in attempts and time); a 401 is answered once by
        fetching a fresh token; 400/403/404 fail at once.
        """
        url = self.settings.api_url + endpoint.url_path(self.tenant_id)
        policy = self.options.retry
        deadline = self._clock() + policy.max_elapsed_s
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            self.breaker.before_request(endpoint.path)
            self.limiter.acquire()
            token = self.tokens.token()
            try:
                return self._attempt(endpoint, url, params, token)
            except _Reauthenticate:
                if reauthenticated:
                    raise AuthenticationError(
                        "ServiceTitan refused the request even with a fresh token; check "
                        "SERVICETITAN_APP_KEY and the tenant's client credentials",
                        tenant_id=self.tenant_id,
                        endpoint=endpoint.path,
                    ) from None
                reauthenticated = True
                self.tokens.invalidate(token)
                self.stats.count("reauthentications")
                continue
            except _Retry as retry:
                error = retry.error
                wait = retry.wait_s if retry.wait_s is not None else policy.backoff_s(attempt, self._rng)
                if attempt >= policy.max_attempts or self._clock() + wait > deadline:
                    raise type(error)(
                        f"{error.detail} — gave up after {attempt} attempts",
                        tenant_id=self.tenant_id,
                        endpoint=endpoint.path,
                    ) from None
                self.stats.count("retries", endpoint)
                self._sleep(wait)

    def _attempt(
        self, endpoint: Endpoint, url: str, params: dict[str, Any] | None, token: str
    ) -> tuple[Any, bool]:
        headers = {"ST-App-Key": self.settings.app_key.get_secret_value(), "Authorization": f"Bearer {token}"}
        where = {"tenant_id": self.tenant_id, "endpoint": endpoint.path}
        self.stats.count("requests", endpoint)
        try:
            response = self._http.get(url, params=params, headers=headers)
        except httpx.TransportError as exc:  # timeouts, refused or dropped connections
            reason = f"no response ({type(exc).__name__})"
            self.breaker.record_failure(reason)
            raise _Retry(ServerError(reason, **where)) from None
        status = response.status_code
        if status == 200:
            try:
                decoded = decode_response(endpoint, response.content)
            except ValueError:
                self.breaker.record_failure("invalid JSON")
                raise _Retry(BadResponseError("the response body is not valid JSON (truncated?)", **where)) from None
            self.breaker.record_success()
            self.limiter.succeeded()
            return decoded
        title = _problem_title(response)
        if status == 401:
            raise _Reauthenticate()
        if status == 429:
            wait = retry_after_s(response.headers.get("Retry-After"), title)
            self.stats.count("throttled", endpoint)
            cap = self.options.max_retry_after_s
            if wait is not None and wait > cap:
                self.limiter.throttled(1.0)  # slow down, but do not stop every thread for that long
                raise RateLimitedError(
                    f"ServiceTitan asked to wait {wait:.0f} s before retrying, more than the {cap:.0f} s this client "
                    "waits (max_retry_after_s); this dataset stops here and resumes from its cursor on the next run",
                    **where,
                )
            self.limiter.throttled(wait if wait is not None else 1.0)
            raise _Retry(RateLimitedError(f"rate limited ({title})", **where), wait_s=wait)
        if status >= 500:
            self.breaker.record_failure(f"HTTP {status}")
            raise _Retry(ServerError(f"ServiceTitan answered HTTP {status} ({title})", **where))
        if status == 403:
            raise MissingScopeError(
                f"access denied ({title}); the app lacks the scope {', '.join(endpoint.scopes) or '?'} "
                "or the tenant has not granted it — ask the tenant's admin to approve the scope, or "
                "disable this endpoint for the tenant",
                **where,
            )
        if status == 404:
            raise NotFoundError(f"not found ({title}); check the tenant id", **where)
        raise RequestError(f"ServiceTitan rejected the request: HTTP {status} ({title})", **where)

    # -- feeds ----------------------------------------------------------------------------

    def iter_export(
        self, endpoint: Endpoint, *, from_token: str | None = None, include_recent_changes: bool = False
    ) -> Iterator[Page]:
        """Follow an export feed from ``from_token`` (or the beginning) until ``hasMore`` is false."""
        token = from_token
        number = 0
        while True:
            params: dict[str, Any] = {}
            if token:
                params["from"] = token
            if include_recent_changes:
                params["includeRecentChanges"] = "true"
            if endpoint.inactive_filter:  # export/appointments and export/appointment-assignments
                name, value = endpoint.inactive_filter
                params[name] = value
            body, validated = self.request(endpoint, params)
            number += 1
            page = self._export_page(endpoint, body, number)
            page.validated = validated
            self._count(page)
            yield page
            if not page.has_more:
                return
            if token and page.continue_from == token and not page.records:
                raise StuckCursorError(
                    "the export feed says it has more data but its continueFrom token did not move; "
                    "reading on would loop forever — the cursor is kept, retry later or reset it with "
                    "`st-pipeline tenant reset-cursor`",
                    tenant_id=self.tenant_id,
                    endpoint=endpoint.path,
                )
            token = page.continue_from

    def iter_list(
        self,
        endpoint: Endpoint,
        *,
        page_size: int | None = None,
        params: dict[str, Any] | None = None,
        include_inactive: bool = True,
        include_total: bool = True,
        parallel: bool = True,
    ) -> Iterator[Page]:
        """Read a paged list until ``hasMore`` is false, in page order.

        When the first page reports a total, the remaining pages are fetched a few at a time in
        parallel (still yielded in order, so memory stays bounded).
        """
        size = min(page_size or MAX_PAGE_SIZE, endpoint.page_size_max or MAX_PAGE_SIZE)
        query: dict[str, Any] = {**endpoint.fixed_params, **(params or {})}
        if include_inactive and endpoint.inactive_filter:
            name, value = endpoint.inactive_filter
            query.setdefault(name, value)

        def fetch(number: int) -> Page:
            body, validated = self.request(
                endpoint, {**query, "page": number, "pageSize": size, "includeTotal": str(include_total).lower()}
            )
            page = self._list_page(endpoint, body, number)
            page.validated = validated
            return page

        first = fetch(1)
        self._count(first)
        yield first
        if not first.has_more:
            return
        number = 1
        if parallel and first.total_count is not None:
            last = max(2, math.ceil(first.total_count / size))
            page = first
            for page in self._fetch_in_parallel(fetch, range(2, last + 1)):
                yield page
            if not page.has_more:
                return
            number = last  # the total was understated: go on page by page, nothing is skipped
        while True:
            number += 1
            page = fetch(number)
            self._count(page)
            yield page
            if not page.has_more:
                return

    def _fetch_in_parallel(self, fetch: Callable[[int], Page], numbers: range) -> Iterator[Page]:
        pool = self._pages_pool()
        pending: deque[Future[Page]] = deque()
        remaining = iter(numbers)
        for number in remaining:
            pending.append(pool.submit(fetch, number))
            if len(pending) >= PARALLEL_LIST_PAGES:
                break
        while pending:
            page = pending.popleft().result()
            next_number = next(remaining, None)
            if next_number is not None:
                pending.append(pool.submit(fetch, next_number))
            self._count(page)
            yield page

    def _pages_pool(self) -> ThreadPoolExecutor:
        with self._page_pool_lock:
            if self._page_pool is None:
                self._page_pool = ThreadPoolExecutor(
                    max_workers=PARALLEL_LIST_PAGES, thread_name_prefix=f"st-pages-{self.tenant_id}"
                )
            return self._page_pool

    def iter_pages(self, endpoint: Endpoint, **kwargs: Any) -> Iterator[Page]:
        """Export feed, paged list or lookup list, by the endpoint's kind."""
        if endpoint.kind == "export":
            return self.iter_export(endpoint, **kwargs)
        if endpoint.kind == "list":
            return self.iter_list(endpoint, **kwargs)
        return self._iter_lookup(endpoint)

    def _iter_lookup(self, endpoint: Endpoint) -> Iterator[Page]:
        params = dict(endpoint.fixed_params)
        if endpoint.inactive_filter:
            name, value = endpoint.inactive_filter
            params[name] = value
        body, validated = self.request(endpoint, params or None)
        if not isinstance(body, list):
            raise BadResponseError("expected a JSON array", tenant_id=self.tenant_id, endpoint=endpoint.path)
        page = Page(records=_records(body, self.tenant_id, endpoint), number=1, has_more=False, validated=validated)
        self._count(page)
        yield page

    def _count(self, page: Page) -> None:
        self.stats.count("pages")
        self.stats.count("records", amount=len(page.records))

    def _export_page(self, endpoint: Endpoint, body: Any, number: int) -> Page:
        if not isinstance(body, dict) or not isinstance(body.get("hasMore"), bool):
            raise BadResponseError(
                "export response lacks a boolean hasMore", tenant_id=self.tenant_id, endpoint=endpoint.path
            )
        continue_from = body.get("continueFrom")
        if body["hasMore"] and not continue_from:
            raise BadResponseError(
                "export response says hasMore but gives no continueFrom token",
                tenant_id=self.tenant_id,
                endpoint=endpoint.path,
            )
        return Page(
            records=_records(body.get("data"), self.tenant_id, endpoint),
            number=number,
            has_more=body["hasMore"],
            continue_from=continue_from,
        )

    def _list_page(self, endpoint: Endpoint, body: Any, number: int) -> Page:
        if not isinstance(body, dict) or not isinstance(body.get("hasMore"), bool):
            raise BadResponseError(
                "list response lacks a boolean hasMore", tenant_id=self.tenant_id, endpoint=endpoint.path
            )
        total = body.get("totalCount")
        return Page(
            records=_records(body.get("data"), self.tenant_id, endpoint),
            number=number,
            has_more=body["hasMore"],
            total_count=total if isinstance(total, int) else None,
        )


class _Retry(Exception):
    """Internal: this attempt failed in a way another attempt may fix."""

    def __init__(self, error: ServiceTitanError, wait_s: float | None = None) -> None:
        self.error = error
        self.wait_s = wait_s


class _Reauthenticate(Exception):
    """Internal: 401 — fetch a fresh token and try once more."""


def _records(data: Any, tenant_id: int, endpoint: Endpoint) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise BadResponseError("response data is not a list of records", tenant_id=tenant_id, endpoint=endpoint.path)
    return data


def _problem_title(response: httpx.Response) -> str:
    """The ``title`` of a ServiceTitan problem-details body, or the status text (never HTML)."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("title"), str):
        return body["title"][:300]
    return response.reason_phrase or f"HTTP {response.status_code}"
