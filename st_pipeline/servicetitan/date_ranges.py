"""Date-range datasets: ServiceTitan endpoints that answer for a required date range (reports of
figures, not lists of records), read one day of the tenant's calendar at a time.

A day is the tenant's local day (its registry ``time_zone``; UTC when unset): from its local
midnight to the next, half open. The endpoints name the range in two ways:

- ``fromUtc`` / ``toUtc`` (marketing ads): the day's two midnights as UTC instants
  (``2024-03-01T06:00:00Z`` .. ``2024-03-02T06:00:00Z`` for a tenant in Chicago);
- ``from`` / ``to`` (marketing): the day's two midnights as local date-times, without an offset
  (``2024-03-01T00:00:00`` .. ``2024-03-02T00:00:00``), as the tenant's own books count days.

Paged endpoints are read with the client's paged-list reader (its page limit and loop guards);
unpaged ones answer ``{"items": [...]}`` in one response. Every row is validated against its
record model from the specs: a day with a row that does not match is refused whole
(:class:`MalformedRowsError`), so what was stored before stays.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from st_pipeline.servicetitan.catalogue import Dataset, Endpoint, load_catalogue
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import BadResponseError
from st_pipeline.servicetitan.models import validate_page

# Problems listed in a refusal's message (the count says how many there were).
SHOWN_PROBLEMS = 5


class MalformedRowsError(BadResponseError):
    """Rows of a date-range answer do not match the endpoint's record model; nothing was stored."""

    retryable = False


@dataclass(frozen=True)
class DateRangeDataset:
    """A catalogued endpoint read per day: how it names the range and what else it always gets."""

    key: str  # the catalogue's dataset key
    name: str  # the asset's last key part and the table's stem
    from_param: str
    to_param: str
    utc: bool  # the range as UTC instants (else as the tenant's local date-times)
    description: str
    params: Mapping[str, str] = field(default_factory=dict)  # fixed parameters, e.g. a segmentation

    @property
    def dataset(self) -> Dataset:
        return load_catalogue().dataset(self.key)

    @property
    def endpoint(self) -> Endpoint:
        return self.dataset.extraction_endpoint

    @property
    def module(self) -> str:
        return self.dataset.module

    def query(self, day: date, zone: str | None) -> dict[str, str]:
        """The query parameters that ask for ``day`` (besides paging)."""
        start, end = day_range(day, zone)
        if self.utc:
            bounds = (start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ"))
        else:
            bounds = (f"{day.isoformat()}T00:00:00", f"{(day + timedelta(days=1)).isoformat()}T00:00:00")
        return {**self.params, self.from_param: bounds[0], self.to_param: bounds[1]}


DATE_RANGE_DATASETS: tuple[DateRangeDataset, ...] = (
    DateRangeDataset(
        "marketing/campaign-cost-summary",
        "campaign_cost_summary",
        "from",
        "to",
        utc=False,
        description="What each campaign cost on the day: one row per campaign with costs that day "
        "(campaignId, campaignName, totalCost).",
    ),
    DateRangeDataset(
        "marketingads/performance",
        "performance",
        "fromUtc",
        "toUtc",
        utc=True,
        params={"performanceSegmentationType": "Campaign"},
        description="Marketing Ads performance per campaign for the day: digital statistics (impressions, "
        "clicks, cost, conversions) and lead statistics (leads, bookings, jobs, revenue), with the return on "
        "the campaign's spend.",
    ),
    DateRangeDataset(
        "marketingads/attributed-leads",
        "attributed_leads",
        "fromUtc",
        "toUtc",
        utc=True,
        description="The leads of the day (calls, web bookings, web lead forms and manually booked jobs) with "
        "the campaign and ad they are attributed to, and the call, form, booking, job and customer behind each.",
    ),
)
DATE_RANGE_DATASETS_BY_KEY = {dataset.key: dataset for dataset in DATE_RANGE_DATASETS}


def day_range(day: date, zone: str | None) -> tuple[datetime, datetime]:
    """The UTC instants of ``day``'s local midnight and the next day's, in the IANA ``zone`` (None: UTC)."""
    tz = ZoneInfo(zone) if zone else UTC
    start = datetime.combine(day, time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass
class RangeProgress:
    """What reading one day took."""

    pages: int = 0


def iter_range_rows(
    client: ServiceTitanClient, dataset: DateRangeDataset, query: Mapping[str, str], progress: RangeProgress
) -> Iterator[dict[str, Any]]:
    """The rows of one range, in the order served; raises :class:`MalformedRowsError` at the first
    page (or answer) with a row that does not match the record model."""
    endpoint = dataset.endpoint
    if endpoint.kind == "list":
        for page in client.iter_list(endpoint, params=dict(query), include_inactive=False):
            progress.pages += 1
            if not page.validated:
                check_rows(dataset, page.records, client.tenant_id)
            yield from page.records
        return
    body, _ = client.request(endpoint, {**endpoint.fixed_params, **query})
    progress.pages += 1
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise MalformedRowsError(
            'the answer is not {"items": [...]} with an object per row',
            tenant_id=client.tenant_id,
            endpoint=endpoint.path,
        )
    check_rows(dataset, items, client.tenant_id)
    yield from items


def row_problems(dataset: DateRangeDataset, rows: list[dict[str, Any]]) -> list[str]:
    """What is wrong with each row that does not match the record model (``row N: field: why``)."""
    copies = copy.deepcopy(rows)  # validation nulls non-finite numbers in place: keep the answer as it is
    outcome = validate_page(dataset.dataset, copies)
    problems = []
    quarantined = {id(bad.record): bad.reason for bad in outcome.quarantined}
    for number, row in enumerate(copies, start=1):
        reason = quarantined.get(id(row))
        if reason is not None:
            problems.append(f"row {number}: {reason}")
        elif row != rows[number - 1]:
            changed = sorted(name for name in row if row[name] != rows[number - 1].get(name))
            problems.append(f"row {number}: {', '.join(changed)}: not a finite number")
    return problems


def check_rows(dataset: DateRangeDataset, rows: list[dict[str, Any]], tenant_id: int) -> None:
    """Raise :class:`MalformedRowsError` naming the first problems if any row does not match."""
    problems = row_problems(dataset, rows)
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS]) + ("; …" if len(problems) > SHOWN_PROBLEMS else "")
        raise MalformedRowsError(
            f"{len(problems)} of {len(rows)} rows do not match the {dataset.key} record model of the specs ({shown})",
            tenant_id=tenant_id,
            endpoint=dataset.endpoint.path,
        )
