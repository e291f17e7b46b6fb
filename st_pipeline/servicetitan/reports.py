"""ServiceTitan's Reporting API: a report's definition, and its data for a period, page by page.

A report is addressed by its category and id. Its definition names its parameters and its fields;
the data (``POST …/reports/{id}/data``) is rows of values in the order of the fields. ServiceTitan
allows only a few data requests per report and tenant each minute (5, its FAQ says; some say 1):
``ReportPacer`` spaces them out for each report, process-wide, so one report waiting for its turn
never holds up another dataset, and a 429 it still gets is waited out as any other.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from st_pipeline.servicetitan.catalogue import Endpoint
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import BadResponseError, ErrorContext, NotFoundError, PagingLoopError, RequestError

REPORT_SCOPE = "tn.rpr.reports:r"
# The largest page of report data ServiceTitan serves (its spec: 1 to 25,000 rows).
MAX_REPORT_PAGE_SIZE = 25_000
DEFAULT_REPORT_PAGE_SIZE = 5_000
# ServiceTitan's published limit: this many data requests of one report per tenant per window.
REPORT_REQUESTS_PER_WINDOW = 5
REPORT_WINDOW_S = 60.0
# Most pages of one report and period: a report that pages on past this is cut off with an error.
MAX_REPORT_PAGES = 200
# The period's days are the report's ``From`` and ``To`` parameters (inclusive).
PERIOD_PARAMETERS = ("From", "To")


@dataclass(frozen=True)
class ReportField:
    name: str
    label: str
    data_type: str  # String, Number, Boolean, Date or Time


@dataclass(frozen=True)
class ReportDefinition:
    """What a report is: its name, its parameters (names) and its fields (the columns of its data)."""

    category: str
    report_id: int
    name: str
    modified_on: str | None
    parameters: tuple[str, ...]
    required_parameters: tuple[str, ...]
    fields: tuple[ReportField, ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def fingerprint(self) -> str:
        """A digest of the field names and types, in order: data under another one has other columns."""
        text = "\n".join(f"{f.name}:{f.data_type}" for f in self.fields)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class ReportPacer:
    """At most ``requests`` data requests of one report per ``window_s`` seconds (thread-safe).

    ``acquire()`` waits, in the calling thread only, until the report's next request may go. The
    window is kept a little longer than the server's (``margin_s``): the server counts a request
    when it arrives, a little after it was sent.
    """

    def __init__(
        self,
        requests: int = REPORT_REQUESTS_PER_WINDOW,
        window_s: float = REPORT_WINDOW_S,
        *,
        margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if requests < 1 or window_s <= 0:
            raise ValueError("a report pacer needs at least 1 request per positive window")
        self.requests = requests
        self.window_s = window_s
        self._margin_s = margin_s if margin_s is not None else min(1.0, window_s * 0.05)
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, sleep: Callable[[float], None]) -> float:
        """Wait for the report's turn; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                span = self.window_s + self._margin_s
                while self._sent and now - self._sent[0] >= span:
                    self._sent.popleft()
                if len(self._sent) < self.requests:
                    self._sent.append(now)
                    return waited
                wait = span - (now - self._sent[0])
            sleep(wait)  # at most one window: every wait is bounded
            waited += wait


_pacers: dict[tuple[str, int, str, int], ReportPacer] = {}
_pacers_lock = threading.Lock()


def shared_pacer(
    client: ServiceTitanClient, category: str, report_id: int, *, requests: int, window_s: float
) -> ReportPacer:
    """The process-wide pacer of one report of the client's tenant and application."""
    app = hashlib.sha256(client.settings.app_key.get_secret_value().encode()).hexdigest()[:16]
    key = (app, client.tenant_id, category, report_id)
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None or (pacer.requests, pacer.window_s) != (requests, window_s):
            pacer = _pacers[key] = ReportPacer(requests, window_s)
        return pacer


def _endpoint(category: str, report_id: int, suffix: str = "") -> Endpoint:
    path = f"/reporting/v2/tenant/{{tenant}}/report-category/{category}/reports/{report_id}{suffix}"
    return Endpoint(
        module="reporting",
        resource=f"reports/{category}/{report_id}",
        kind="list",
        path=path,
        scopes=(REPORT_SCOPE,),
        query_params={},
        page_size_max=MAX_REPORT_PAGE_SIZE,
        record_schema=None,
    )


def _not_found(exc: NotFoundError, category: str, report_id: int) -> RequestError:
    return RequestError(
        f"the tenant has no report {report_id} in category {category!r}: check the declaration "
        "(`st-pipeline report list`) against the tenant's reports in ServiceTitan",
        tenant_id=exc.tenant_id,
        endpoint=exc.endpoint,
    )


def fetch_definition(client: ServiceTitanClient, category: str, report_id: int) -> ReportDefinition:
    """The report's definition as ServiceTitan has it now."""
    endpoint = _endpoint(category, report_id)
    try:
        body, _ = client.request(endpoint)
    except NotFoundError as exc:
        raise _not_found(exc, category, report_id) from None
    where: ErrorContext = {"tenant_id": client.tenant_id, "endpoint": endpoint.path}
    try:
        fields = tuple(
            ReportField(str(f["name"]), str(f.get("label") or f["name"]), str(f.get("dataType") or "String"))
            for f in body["fields"]
        )
        parameters = body.get("parameters") or []
        return ReportDefinition(
            category=category,
            report_id=report_id,
            name=str(body["name"]),
            modified_on=body.get("modifiedOn"),
            parameters=tuple(str(p["name"]) for p in parameters),
            required_parameters=tuple(str(p["name"]) for p in parameters if p.get("isRequired")),
            fields=fields,
        )
    except (KeyError, TypeError) as exc:
        raise BadResponseError(f"the report definition is malformed (missing {exc})", **where) from None


@dataclass
class ReportPages:
    """What reading one report for one period took."""

    requests: int = 0
    pages: int = 0
    paced_s: float = 0.0


def iter_report_rows(
    client: ServiceTitanClient,
    definition: ReportDefinition,
    period: tuple[date, date],
    parameters: Mapping[str, str],
    *,
    pacer: ReportPacer,
    page_size: int = DEFAULT_REPORT_PAGE_SIZE,
    max_pages: int = MAX_REPORT_PAGES,
    progress: ReportPages | None = None,
) -> Iterator[dict[str, Any]]:
    """The report's rows for ``period`` (first and last day), each as {field name: value}.

    The response's fields must be the definition's (else the definition changed under the read:
    ``BadResponseError``); every row must have one value per field. Paging ends at ``hasMore``
    false; an empty page that says more is waiting, or more than ``max_pages`` pages, is an error.
    """
    endpoint = _endpoint(definition.category, definition.report_id, "/data")
    where: ErrorContext = {"tenant_id": client.tenant_id, "endpoint": endpoint.path}
    values = {**parameters, "From": period[0].isoformat(), "To": period[1].isoformat()}
    body = {"parameters": [{"name": name, "value": value} for name, value in values.items()]}
    names = definition.field_names
    progress = progress if progress is not None else ReportPages()
    for number in range(1, max_pages + 1):
        progress.paced_s += pacer.acquire(client.pause)
        params = {"page": number, "pageSize": min(page_size, MAX_REPORT_PAGE_SIZE), "includeTotal": "true"}
        try:
            data, _ = client.request(endpoint, params, body=body)
        except NotFoundError as exc:
            raise _not_found(exc, definition.category, definition.report_id) from None
        progress.requests += 1
        progress.pages += 1
        try:
            served = tuple(str(f["name"]) for f in data["fields"])
            rows, has_more = data["data"], bool(data["hasMore"])
        except (KeyError, TypeError) as exc:
            raise BadResponseError(f"report data is malformed (missing {exc})", **where) from None
        if served != names:
            raise BadResponseError(
                f"report data has fields {list(served)}, its definition {list(names)}: the report changed while it "
                "was read; the period is not stored — run it again",
                **where,
            )
        for row in rows:
            if not isinstance(row, list) or len(row) != len(names):
                raise BadResponseError(
                    f"a row of page {number} does not have one value per field ({len(names)}); the period is not "
                    "stored",
                    **where,
                )
            yield dict(zip(names, row, strict=True))
        if not has_more:
            return
        if not rows:
            raise PagingLoopError(f"page {number} of the report is empty but says more is waiting; stopped", **where)
    raise PagingLoopError(
        f"the report had more than {max_pages} pages for one period; stopped, the period is not stored",
        **where,
    )
