"""The HTTP client of one tenant: authenticated requests, export feeds and paged lists."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from st_pipeline.servicetitan.auth import TenantCredentials, TokenProvider
from st_pipeline.servicetitan.catalogue import Endpoint
from st_pipeline.servicetitan.errors import (
    AuthenticationError,
    BadResponseError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    RequestError,
    ServerError,
    ServiceTitanError,
)
from st_pipeline.servicetitan.settings import ApiSettings

# The largest page ServiceTitan serves on its paged list endpoints.
MAX_PAGE_SIZE = 5000


@dataclass
class Page:
    """One response of an export feed or a paged list."""

    records: list[dict[str, Any]]
    number: int
    has_more: bool
    continue_from: str | None = None  # export feeds: the token to resume after this page
    total_count: int | None = None  # paged lists asked with includeTotal


@dataclass
class RequestStats:
    """Counters of one client's traffic, reported as materialization metadata."""

    requests: int = 0
    pages: int = 0
    records: int = 0
    reauthentications: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)


class ServiceTitanClient:
    """Reads ServiceTitan endpoints for one tenant over one connection pool."""

    def __init__(
        self,
        settings: ApiSettings,
        credentials: TenantCredentials,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 100.0,
    ) -> None:
        self.settings = settings
        self.tenant_id = credentials.tenant_id
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout_s)
        self.tokens = TokenProvider(credentials, settings.auth_url, self._http, clock=clock)
        self.stats = RequestStats()

    def __enter__(self) -> ServiceTitanClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # -- requests -------------------------------------------------------------------------

    def get_json(self, endpoint: Endpoint, params: dict[str, Any] | None = None) -> Any:
        """GET an endpoint of this tenant and return its decoded JSON body.

        A 401 is answered once by fetching a fresh token and repeating the request.
        """
        url = self.settings.api_url + endpoint.url_path(self.tenant_id)
        for attempt in (1, 2):
            token = self.tokens.token()
            response = self._send(endpoint, url, params, token)
            if response.status_code == 401 and attempt == 1:
                self.tokens.invalidate(token)
                self.stats.reauthentications += 1
                continue
            return self._decode(endpoint, response)
        raise AssertionError("unreachable")

    def _send(self, endpoint: Endpoint, url: str, params: dict[str, Any] | None, token: str) -> httpx.Response:
        headers = {
            "ST-App-Key": self.settings.app_key.get_secret_value(),
            "Authorization": f"Bearer {token}",
        }
        self.stats.requests += 1
        self.stats.by_endpoint[endpoint.dataset_key] = self.stats.by_endpoint.get(endpoint.dataset_key, 0) + 1
        try:
            return self._http.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise ServiceTitanError(
                f"request failed: {type(exc).__name__} while calling {self.settings.api_url}",
                tenant_id=self.tenant_id,
                endpoint=endpoint.path,
            ) from None

    def _decode(self, endpoint: Endpoint, response: httpx.Response) -> Any:
        status = response.status_code
        where = {"tenant_id": self.tenant_id, "endpoint": endpoint.path}
        if status == 200:
            try:
                return response.json()
            except ValueError:
                raise BadResponseError("the response body is not valid JSON", **where) from None
        title = _problem_title(response)
        if status == 401:
            raise AuthenticationError(
                f"ServiceTitan refused the request even with a fresh token ({title}); check "
                "SERVICETITAN_APP_KEY and the tenant's client credentials",
                **where,
            )
        if status == 403:
            raise ForbiddenError(
                f"access denied ({title}); the app lacks the scope {', '.join(endpoint.scopes) or '?'} "
                "or the tenant has not granted it",
                **where,
            )
        if status == 404:
            raise NotFoundError(f"not found ({title}); check the tenant id", **where)
        if status == 429:
            raise RateLimitedError(f"rate limited ({title})", **where)
        if status >= 500:
            raise ServerError(f"ServiceTitan answered HTTP {status} ({title})", **where)
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
            body = self.get_json(endpoint, params)
            number += 1
            page = self._export_page(endpoint, body, number)
            self._count(page)
            yield page
            if not page.has_more:
                return
            token = page.continue_from

    def iter_list(
        self,
        endpoint: Endpoint,
        *,
        page_size: int | None = None,
        params: dict[str, Any] | None = None,
        include_inactive: bool = True,
        include_total: bool = False,
    ) -> Iterator[Page]:
        """Read a paged list page by page (1, 2, …) until ``hasMore`` is false."""
        size = min(page_size or MAX_PAGE_SIZE, endpoint.page_size_max or MAX_PAGE_SIZE)
        query: dict[str, Any] = dict(params or {})
        if include_inactive and endpoint.inactive_filter:
            name, value = endpoint.inactive_filter
            query.setdefault(name, value)
        number = 1
        while True:
            body = self.get_json(
                endpoint, {**query, "page": number, "pageSize": size, "includeTotal": str(include_total).lower()}
            )
            page = self._list_page(endpoint, body, number)
            self._count(page)
            yield page
            if not page.has_more:
                return
            number += 1

    def iter_pages(self, endpoint: Endpoint, **kwargs: Any) -> Iterator[Page]:
        """Export feed or paged list, by the endpoint's kind."""
        if endpoint.kind == "export":
            return self.iter_export(endpoint, **kwargs)
        if endpoint.kind == "list":
            return self.iter_list(endpoint, **kwargs)
        return self._iter_lookup(endpoint)

    def _iter_lookup(self, endpoint: Endpoint) -> Iterator[Page]:
        body = self.get_json(endpoint)
        if not isinstance(body, list):
            raise BadResponseError("expected a JSON array", tenant_id=self.tenant_id, endpoint=endpoint.path)
        page = Page(records=_records(body, self.tenant_id, endpoint), number=1, has_more=False)
        self._count(page)
        yield page

    def _count(self, page: Page) -> None:
        self.stats.pages += 1
        self.stats.records += len(page.records)

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


def _records(data: Any, tenant_id: int, endpoint: Endpoint) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise BadResponseError("response data is not a list of records", tenant_id=tenant_id, endpoint=endpoint.path)
    return data


def _problem_title(response: httpx.Response) -> str:
    """The ``title`` of a ServiceTitan problem-details body, or the status text."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("title"), str):
        return body["title"][:300]
    return response.reason_phrase or f"HTTP {response.status_code}"
