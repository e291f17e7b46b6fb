"""The HTTP client of one tenant: paced and retried requests; export feeds; paged lists.

One client serves one tenant run: one connection pool, one token cache, one consecutive-failure stop, and
the process-wide rate limiter of (app key, tenant). It is safe to use from several threads, which
is how a run extracts a tenant's endpoints concurrently.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
import orjson

from st_pipeline.servicetitan.auth import TenantCredentials, TokenProvider, TokenRequestBounds
from st_pipeline.servicetitan.catalogue import Endpoint
from st_pipeline.servicetitan.counters import SyncCounters
from st_pipeline.servicetitan.errors import (
    AuthenticationError,
    BadResponseError,
    ConfigurationError,
    ErrorContext,
    MissingScopeError,
    NotFoundError,
    PagingLoopError,
    RateLimitedError,
    RequestCancelled,
    RequestError,
    ServerError,
    StuckCursorError,
    UnusableResponseError,
)
from st_pipeline.servicetitan.http import (
    ResponseTooLarge,
    deadline_bound_client,
    read_limited,
    request_deadline,
    unhealable_cause,
)
from st_pipeline.servicetitan.models import UnusableBody, decode_response
from st_pipeline.servicetitan.ratelimit import DEFAULT_REQUESTS_PER_SECOND, RateLimiter, shared_limiter
from st_pipeline.servicetitan.resilience import (
    ConsecutiveFailureStop,
    RetryableFailure,
    RetryPolicy,
    retry_after_s,
    with_retries,
)
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
    page_size: int | None = None  # paged lists: the page size the server says it served
    validated: bool = False  # every record already passed its record model while decoding


@dataclass(kw_only=True)
class RequestStats(SyncCounters):
    """One client's traffic (thread-safe): its totals, and each dataset's share of them.

    A dataset's share holds what its requests counted (requests, retries, 429s); what it received
    and wrote is counted by its extraction.
    """

    _by_dataset: dict[str, SyncCounters] = field(default_factory=dict, init=False, repr=False, compare=False)
    _throttle_wait_s: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def add(self, other: SyncCounters, endpoint: Endpoint | None = None) -> None:
        """Count ``other`` in the totals, and in the share of ``endpoint``'s dataset when given."""
        with self._lock:
            super().add(other)
            if endpoint is not None:
                self._by_dataset.setdefault(endpoint.dataset_key, SyncCounters()).add(other)

    def of(self, dataset_key: str) -> SyncCounters:
        """A copy of the dataset's share (zeros if none of its requests was sent)."""
        with self._lock:
            return self._by_dataset.get(dataset_key, SyncCounters()).counters()

    def add_throttle_wait(self, endpoint: Endpoint, seconds: float) -> float:
        """Count a 429's pause against its dataset; returns the dataset's pauses so far in this run."""
        with self._lock:
            total = self._throttle_wait_s.get(endpoint.dataset_key, 0.0) + seconds
            self._throttle_wait_s[endpoint.dataset_key] = total
            return total


@dataclass(frozen=True)
class ClientOptions:
    """Tunables of a client; the defaults suit ServiceTitan's published limits.

    Every wait is bounded: ``timeout_s`` per socket operation, ``request_deadline_s`` per request
    as a whole (a body that drips in never ends otherwise; a request that ran into it is tried once
    more, not again), ``max_retry_after_s`` per server-asked pause, ``throttle_budget_s`` per
    dataset and run for all the pauses its 429s ask for, ``retry`` per request in attempts and time
    (failures only: 429 pacing does not count), ``max_pages`` per dataset and run.
    """

    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    timeout_s: float = 100.0
    # ServiceTitan's gateway gives up on a request after 100 s; past that a response is not coming.
    request_deadline_s: float = 120.0
    retry: RetryPolicy = RetryPolicy()
    stop_after_consecutive_failures: int = 10
    max_connections: int = 16
    # The longest Retry-After the client honours; a 429 asking for more fails that request at once
    # (the other datasets go on) instead of pausing every thread of the tenant.
    max_retry_after_s: float = 300.0
    # Seconds of 429 pauses one dataset may be asked for in one run before it stops (and resumes
    # from its cursor next run): throttling slows a sync down, this bounds how far.
    throttle_budget_s: float = 900.0
    max_response_bytes: int = 64 * 1024 * 1024
    # Pages one dataset may read in one run when the list gives no total (export feeds always):
    # 20,000 pages of 5,000 records is 100 million records, past any tenant's table.
    max_pages: int = 20_000


# A 401 is answered with a fresh token; one more 401 after that gets one more fresh token before the
# credentials are blamed (a token can be revoked between issue and use, e.g. by a rotation).
_FRESH_TOKENS_PER_REQUEST = 2
# A request that ran into the request deadline is tried this many more times: a server that did not
# answer well past its own timeout will not answer the same request the next time either.
_RETRIES_AFTER_DEADLINE = 1
# The least pause a 429 costs, also when it asks for none: "Retry-After: 0" must not be a busy loop.
_MIN_THROTTLE_PAUSE_S = 0.1
# Pages a list may run past the last page its total implies (records added while paging), before
# the client calls it a loop: this many, or a tenth of the pages, whichever is more.
_PAGES_PAST_TOTAL = 2


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
        sleep: Callable[[float], None] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        assert_may_carry_secret(settings.api_url)  # requests carry the app key and a bearer token
        self.settings = settings
        self.tenant_id = credentials.tenant_id
        self.options = options
        self._owns_http = http is None
        self._http = http or deadline_bound_client(
            timeout_s=timeout_s or options.timeout_s, max_connections=options.max_connections
        )
        self._cancelled = threading.Event()
        self._sleep = sleep or self._cancellable_sleep
        self.tokens = TokenProvider(
            credentials,
            settings.auth_url,
            self._http,
            clock=clock,
            pause=self._sleep,
            bounds=TokenRequestBounds(
                retry=options.retry,
                request_deadline_s=min(options.request_deadline_s, 60.0),
                max_retry_after_s=options.max_retry_after_s,
            ),
        )
        self.limiter = limiter or shared_limiter(
            settings.app_key.get_secret_value(), credentials.tenant_id, options.requests_per_second
        )
        self.failure_stop = ConsecutiveFailureStop(credentials.tenant_id, limit=options.stop_after_consecutive_failures)
        self.stats = RequestStats()
        self._clock = clock
        self._rng = random.Random()
        self._page_pool: ThreadPoolExecutor | None = None
        self._page_pool_lock = threading.Lock()

    def __enter__(self) -> ServiceTitanClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.cancel()
        if self._page_pool is not None:
            self._page_pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_http:
            self._http.close()

    def cancel(self) -> None:
        """Stop: retry pauses end now, and no request starts after this (``RequestCancelled``)."""
        self._cancelled.set()

    def _cancellable_sleep(self, seconds: float) -> None:
        self._cancelled.wait(seconds)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (less if the run stops), as the client waits between retries."""
        self._sleep(seconds)

    # -- requests -------------------------------------------------------------------------

    def request(
        self, endpoint: Endpoint, params: dict[str, Any] | None = None, *, body: Any = None
    ) -> tuple[Any, bool]:
        """GET an endpoint of this tenant (POST ``body`` as JSON when given: report data); returns the
        decoded body and whether its records are valid.

        Paced by the shared rate limiter. A 429 asking for a wait within ``max_retry_after_s`` is
        pacing: the request waits and goes again, within the dataset's ``throttle_budget_s``. 5xx,
        timeouts, dropped connections and truncated JSON are retried with backoff (bounded in
        attempts and time; a request that ran into ``request_deadline_s`` once more at most); a 401
        is answered with a fresh token, twice at most; 400/403/404 and responses no retry can fix
        fail at once.
        """
        url = self.settings.api_url + endpoint.url_path(self.tenant_id)
        refusals = 0  # consecutive 401s
        deadlines_passed = 0

        def attempt() -> tuple[Any, bool]:
            nonlocal refusals, deadlines_passed
            if self._cancelled.is_set():
                raise RequestCancelled("the tenant's run is stopping", tenant_id=self.tenant_id, endpoint=endpoint.path)
            self.failure_stop.before_request(endpoint.path)
            sent_at = self.limiter.acquire()
            # After a 401 the retry fetches a token of its own, right before sending: a token another
            # thread fetched a while ago may have been revoked since, which says nothing of the credentials.
            token = self.tokens.token(issued_after=self._clock() if refusals else None)
            try:
                result = self._attempt(endpoint, url, params, token, sent_at, body)
            except _Unauthorized as refusal:
                refusals += 1
                if refusals > _FRESH_TOKENS_PER_REQUEST:
                    raise self._refused(endpoint, refusal.title) from None
                self.tokens.invalidate(token)
                self.stats.add(SyncCounters(reauthentications=1))
                raise RetryableFailure(
                    AuthenticationError(
                        f"refused with HTTP 401 ({refusal.title})", tenant_id=self.tenant_id, endpoint=endpoint.path
                    ),
                    wait_s=0.0,
                    counted=False,
                ) from None
            except _DeadlinePassed as passed:
                refusals = 0
                deadlines_passed += 1
                if deadlines_passed > _RETRIES_AFTER_DEADLINE:
                    error = passed.error
                    raise type(error)(
                        f"{error.detail}, {deadlines_passed} times; ServiceTitan's own servers give up after "
                        "100 s, so this request will not be answered — the dataset stops here and the next run "
                        "tries again (raise request_deadline_s only for a slow network)",
                        tenant_id=error.tenant_id,
                        endpoint=error.endpoint,
                    ) from None
                raise
            except RetryableFailure:
                refusals = 0
                raise
            return result

        return with_retries(
            attempt,
            self.options.retry,
            clock=self._clock,
            pause=self._sleep,
            rng=self._rng,
            on_retry=lambda: self.stats.add(SyncCounters(retries=1), endpoint),
        )

    def _refused(self, endpoint: Endpoint, title: str) -> AuthenticationError:
        """The error of a request refused (401) even with freshly issued tokens: which credential is at fault."""
        where: ErrorContext = {"tenant_id": self.tenant_id, "endpoint": endpoint.path}
        if _APP_KEY_REFUSAL.search(title):
            return AuthenticationError(
                f"ServiceTitan rejected the application key ({title}); check SERVICETITAN_APP_KEY — it must be "
                "the key of the app the tenant connected",
                **where,
            )
        return AuthenticationError(
            f"ServiceTitan refused {_FRESH_TOKENS_PER_REQUEST + 1} access tokens in a row, each freshly issued "
            f"for the tenant's client credentials ({title}); the credentials no longer grant API access (the app "
            "was disconnected or its access revoked) — ask the tenant's admin to reconnect the app, then "
            f"`st-pipeline tenant update-credentials --tenant {self.tenant_id}`",
            **where,
        )

    def _attempt(
        self, endpoint: Endpoint, url: str, params: dict[str, Any] | None, token: str, sent_at: float, body: Any
    ) -> tuple[Any, bool]:
        headers = {"ST-App-Key": self.settings.app_key.get_secret_value(), "Authorization": f"Bearer {token}"}
        where: ErrorContext = {"tenant_id": self.tenant_id, "endpoint": endpoint.path}
        options = self.options
        self.stats.add(SyncCounters(requests=1), endpoint)
        try:
            with request_deadline(options.request_deadline_s) as deadline:
                method, content_in = ("GET", None) if body is None else ("POST", orjson.dumps(body))
                if content_in is not None:
                    headers["Content-Type"] = "application/json"
                with self._http.stream(method, url, params=params, headers=headers, content=content_in) as response:
                    status, response_headers = response.status_code, response.headers
                    content = read_limited(response, options.max_response_bytes)
        except ResponseTooLarge as exc:
            size = f"{exc.announced / 1048576:.1f} MB" if exc.announced else "more"
            raise UnusableResponseError(
                f"the response is {size}, above the {options.max_response_bytes / 1048576:.0f} MB this client accepts "
                "(max_response_mb); nothing of it was stored — raise max_response_mb if pages this large are "
                "expected",
                **where,
            ) from None
        except httpx.TransportError as exc:  # timeouts, refused or dropped connections, TLS failures
            cause = unhealable_cause(exc)
            if cause is not None:
                raise ConfigurationError(f"{self.settings.api_url} cannot be used: {cause}", **where) from None
            if deadline.passed:
                reason = f"no complete response within {options.request_deadline_s:.0f} s (request_deadline_s)"
                self.failure_stop.record_failure(reason)
                raise _DeadlinePassed(ServerError(reason, **where)) from None
            reason = f"no response ({type(exc).__name__})"
            self.failure_stop.record_failure(reason)
            raise RetryableFailure(ServerError(reason, **where)) from None
        if status == 200:
            try:
                decoded = decode_response(endpoint, content)
            except UnusableBody as exc:
                self.failure_stop.record_success()  # the server answered; the answer is the problem
                raise UnusableResponseError(f"the response {exc.reason}; it cannot be read", **where) from None
            except ValueError:
                self.failure_stop.record_failure("invalid JSON")
                raise RetryableFailure(
                    BadResponseError("the response body is not valid JSON (truncated?)", **where)
                ) from None
            self.failure_stop.record_success()
            self.limiter.succeeded()
            return decoded
        title = _problem_title(content, status)
        if status == 401:
            raise _Unauthorized(title)
        if status == 429:
            wait = retry_after_s(response_headers.get("Retry-After"), title)
            self.stats.add(SyncCounters(throttled=1), endpoint)
            cap = options.max_retry_after_s
            if wait is not None and wait > cap:
                self.limiter.throttled(1.0, sent_at)  # slow down, but do not stop every thread for that long
                raise RateLimitedError(
                    f"ServiceTitan asked to wait {wait:.0f} s before retrying, more than the {cap:.0f} s this client "
                    "waits (max_retry_after_s); this dataset stops here and resumes from its cursor on the next run",
                    **where,
                )
            if wait is None:  # no wait asked for: an ordinary failed attempt, with the policy's backoff
                self.limiter.throttled(1.0, sent_at)
                raise RetryableFailure(RateLimitedError(f"rate limited ({title})", **where))
            wait = max(wait, _MIN_THROTTLE_PAUSE_S)
            self.limiter.throttled(wait, sent_at)
            waited = self.stats.add_throttle_wait(endpoint, wait)
            budget = options.throttle_budget_s
            if waited > budget:
                raise RateLimitedError(
                    f"ServiceTitan kept throttling this dataset: its 429s asked for {waited:.0f} s of pauses in this "
                    f"run, past the {budget:.0f} s allowed (throttle_budget_s); this dataset stops here and resumes "
                    "from its cursor on the next run — fewer concurrent runs on the same application key, or a "
                    "larger throttle_budget_s, let it finish",
                    **where,
                )
            raise RetryableFailure(RateLimitedError(f"rate limited ({title})", **where), wait_s=wait, counted=False)
        if status >= 500:
            self.failure_stop.record_failure(f"HTTP {status}")
            raise RetryableFailure(ServerError(f"ServiceTitan answered HTTP {status} ({title})", **where))
        if status == 403:
            raise MissingScopeError(
                f"access denied ({title}); the app lacks the scope {', '.join(endpoint.scopes) or '?'} "
                "or the tenant has not granted it — ask the tenant's admin to approve the scope, or "
                "disable this endpoint for the tenant",
                **where,
            )
        if status == 404:
            raise NotFoundError(
                f"not found ({title}): the tenant does not have the {endpoint.module} module, or the tenant id is "
                "wrong — the dataset is skipped; turn it off with `st-pipeline endpoints disable` if the tenant "
                "will not get the module",
                **where,
            )
        raise RequestError(f"ServiceTitan rejected the request: HTTP {status} ({title})", **where)

    # -- feeds ----------------------------------------------------------------------------

    def iter_export(
        self, endpoint: Endpoint, *, from_token: str | None = None, include_recent_changes: bool = False
    ) -> Iterator[Page]:
        """Follow an export feed from ``from_token`` (or the beginning) until ``hasMore`` is false.

        A feed that hands back a token it gave before (with or without records) would be read
        forever: it stops with ``StuckCursorError`` after yielding that page; a feed that hands out
        new tokens but the same records again (see ``_LoopGuard``), or runs past ``max_pages``,
        stops with ``PagingLoopError``. Every page before is kept and the cursor stays where it was
        committed.
        """
        token = from_token
        seen_tokens = {from_token} if from_token else set()
        # includeRecentChanges may send the same records on consecutive requests, ServiceTitan says.
        guard = _LoopGuard(self.tenant_id, endpoint, repeats_allowed=include_recent_changes)
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
            assert page.continue_from is not None  # _export_page refuses hasMore without a continueFrom token
            if page.continue_from in seen_tokens:
                raise StuckCursorError(
                    "the export feed says it has more data but handed back a continueFrom token it had already "
                    f"given (page {number}); reading on would loop forever — the cursor is kept, retry later "
                    "or reset it with `st-pipeline tenant reset-cursor`",
                    tenant_id=self.tenant_id,
                    endpoint=endpoint.path,
                )
            if number >= self.options.max_pages:
                raise PagingLoopError(
                    f"the export feed still says it has more data after {number} pages (max_pages); stopped here, "
                    "the next run goes on from the cursor",
                    tenant_id=self.tenant_id,
                    endpoint=endpoint.path,
                )
            guard.check(page)
            seen_tokens.add(page.continue_from)
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
        parallel (still yielded in order, so memory stays bounded). Paging that would not end stops
        with ``PagingLoopError`` as soon as it shows (see ``_LoopGuard``), and in any case past the
        pages its total implies (plus a little slack) or ``max_pages``.
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
        guard = _LoopGuard(self.tenant_id, endpoint, requested_size=size)
        guard.check(first)
        number = 1
        ceiling = self.options.max_pages
        last = max(2, math.ceil(first.total_count / size)) if first.total_count is not None else 0
        if last > ceiling:
            raise PagingLoopError(
                f"the list reports a total of {first.total_count} records: more than {ceiling} pages (max_pages) "
                f"of {size}; a total no tenant has — stopped after page 1 instead of reading on; raise max_pages "
                "if the tenant really holds that many",
                tenant_id=self.tenant_id,
                endpoint=endpoint.path,
            )
        if last:
            ceiling = min(ceiling, last + max(_PAGES_PAST_TOTAL, last // 10))
        if parallel and last:
            page = first
            for page in self._fetch_in_parallel(fetch, range(2, last + 1)):
                yield page
                if page.has_more:
                    guard.check(page)
            if not page.has_more:
                return
            number = last  # the total was understated: go on page by page, nothing is skipped
        while True:
            number += 1
            if number > ceiling:
                total = (
                    f"its reported total of {first.total_count} records"
                    if first.total_count is not None
                    else (f"{ceiling} pages (max_pages)")
                )
                raise PagingLoopError(
                    f"the list still says it has more records on page {number - 1}, past {total} "
                    f"at {size} per page; reading on could loop forever — stopped, nothing after this was read",
                    tenant_id=self.tenant_id,
                    endpoint=endpoint.path,
                )
            page = fetch(number)
            self._count(page)
            yield page
            if not page.has_more:
                return
            guard.check(page)

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
        self.stats.add(SyncCounters(pages=1, records=len(page.records)))

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
        served_size = body.get("pageSize")
        return Page(
            records=_records(body.get("data"), self.tenant_id, endpoint),
            number=number,
            has_more=body["hasMore"],
            total_count=total if isinstance(total, int) else None,
            page_size=served_size if isinstance(served_size, int) and served_size > 0 else None,
        )


class _LoopGuard:
    """Sees paging that will not end, from the pages that say more is waiting, in order.

    Each is a loop after two pages, long before ``max_pages``:

    - the same page twice in a row (the same record ids, or the same records where they have none);
    - a list page that is empty, or a second list page in a row shorter than the page size (one
      short page is let through: the server may serve fewer than it was asked for once).

    ``requested_size`` is the page size asked for (lists; ``None`` for export feeds, whose pages
    vary in size); a list page that says it served a smaller page size is measured against that.
    """

    def __init__(
        self, tenant_id: int, endpoint: Endpoint, *, requested_size: int | None = None, repeats_allowed: bool = False
    ) -> None:
        self._where: ErrorContext = {"tenant_id": tenant_id, "endpoint": endpoint.path}
        self._requested_size = requested_size
        self._repeats_allowed = repeats_allowed
        self._previous: object = None
        self._short_in_a_row = 0

    def check(self, page: Page) -> None:
        """Raise ``PagingLoopError`` if ``page`` (which says more is waiting) shows a loop."""
        identity = _page_identity(page.records)
        if identity == self._previous and not self._repeats_allowed:
            raise PagingLoopError(
                f"page {page.number} repeats page {page.number - 1} ({len(page.records)} records, the same ids) and "
                "still says more is waiting; reading on would loop forever — stopped, nothing after this was read",
                **self._where,
            )
        self._previous = identity
        if self._requested_size is not None:
            self._check_size(page, self._requested_size)

    def _check_size(self, page: Page, requested: int) -> None:
        size = min(requested, page.page_size or requested)
        if not page.records:
            raise PagingLoopError(
                f"page {page.number} of the list is empty but says it has more; reading on could loop forever "
                "— stopped, nothing after this was read",
                **self._where,
            )
        if len(page.records) >= size:
            self._short_in_a_row = 0
            return
        self._short_in_a_row += 1
        if self._short_in_a_row >= 2:
            raise PagingLoopError(
                f"pages {page.number - 1} and {page.number} hold fewer records than the page size of {size} "
                f"({len(page.records)} on page {page.number}) and still say more is waiting; a list that pages "
                "like this does not end — stopped, nothing after this was read",
                **self._where,
            )


def _page_identity(records: list[dict[str, Any]]) -> object:
    """What makes a page the same page again: its record ids in order, or its records if any has no id."""
    ids = tuple(record.get("id") for record in records)
    return list(records) if None in ids else ids


class _DeadlinePassed(RetryableFailure):
    """Internal: the request ran into ``request_deadline_s`` (retried, but only once)."""


class _Unauthorized(Exception):
    """Internal: 401 — fetch a fresh token and try again (``title``: what the server said)."""

    def __init__(self, title: str) -> None:
        super().__init__(title)
        self.title = title


_APP_KEY_REFUSAL = re.compile(r"app(lication)?[ _-]?key|st-app-key", re.IGNORECASE)


def _records(data: Any, tenant_id: int, endpoint: Endpoint) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise BadResponseError("response data is not a list of records", tenant_id=tenant_id, endpoint=endpoint.path)
    return data


def _problem_title(content: bytes, status: int) -> str:
    """The ``title`` of a ServiceTitan problem-details body, or the status text (never HTML)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("title"), str):
        return body["title"][:300]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
