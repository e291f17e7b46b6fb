"""Three marketing reports over a date range, with figures from the simulator's own records.

Endpoints, as in ``marketing-v2.json`` and ``marketing-ads-v2.json``:

- ``GET /marketing/v2/tenant/{tenant}/campaign-cost-summary?from=&to=`` (both required,
  date-times read as the tenant's wall clock; an offset, if any, is ignored): ``{"items": [...]}``,
  one item per campaign with a cost record for a day of the range, ``totalCost`` the sum of its
  ``dailyCost`` over the range's days (a day counts when its midnight is in ``[from, to)``), by
  campaign id. Not paged.
- ``GET /marketingads/v2/tenant/{tenant}/performance?fromUtc=&toUtc=&performanceSegmentationType=``
  (all required; the segmentation one of Campaign, AdGroup, Keyword): a paged list, one row per
  campaign with spend or leads in ``[fromUtc, toUtc)``, by campaign id (see :func:`performance`).
- ``GET /marketingads/v2/tenant/{tenant}/attributed-leads?fromUtc=&toUtc=&leadType=`` (the range
  required; ``leadType`` one of Call, WebBooking, WebLeadForm, ManualJob): a paged list, one row
  per lead created in ``[fromUtc, toUtc)``, by time, type and id (see :func:`attributed_leads`).

Paging is ``page`` (from 1), ``pageSize`` (50 by default) and ``includeTotal``. A missing or
invalid parameter, or a range that ends before it starts, is a 400. The figures are functions of
the records (decoded with exact decimals) and the range, so a test can compute them again from the
simulator's ground truth.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from st_pipeline.simulator.errors import invalid_parameter
from st_pipeline.simulator.feeds import MAX_PAGE_SIZE, Query
from st_pipeline.simulator.report_figures import Calendar, Record, Records, amount, cut, live
from st_pipeline.simulator.reports import paged
from st_pipeline.simulator.store import StoredRecord, dumpb

CAMPAIGNS, COSTS = "marketing/campaigns", "marketing/costs"
CALLS, BOOKINGS, LEADS, JOBS = "telecom/calls", "crm/bookings", "crm/leads", "jpm/jobs"
SOURCES = (CAMPAIGNS, COSTS, CALLS, BOOKINGS, LEADS, JOBS)
"""The datasets the figures are computed from (a dataset not generated counts as no records)."""

COST_SUMMARY, PERFORMANCE, ATTRIBUTED_LEADS = (
    "marketing/campaign-cost-summary",
    "marketingads/performance",
    "marketingads/attributed-leads",
)
SEGMENTATIONS = ("Campaign", "AdGroup", "Keyword")
LEAD_TYPES = {"Call": 1, "WebBooking": 2, "WebLeadForm": 3, "ManualJob": 4}
PAGE_SIZE = 50  # the specs' default

_PATH = re.compile(
    r"^/(?:marketing/v2/tenant/[^/]+/(?P<summary>campaign-cost-summary)"
    r"|marketingads/v2/tenant/[^/]+/(?P<ads>performance|attributed-leads))$"
)
_SECONDS_PER_DAY = Decimal(86_400)
_RATIO = Decimal("0.0001")
_CALENDAR = Calendar(None)


def match(path: str) -> str | None:
    """The dataset key of a marketing report path, or ``None`` for any other path."""
    found = _PATH.match(path)
    if found is None:
        return None
    return COST_SUMMARY if found["summary"] else f"marketingads/{found['ads']}"


# -- parameters ------------------------------------------------------------------------------------


def _moment(query: Query, name: str, *, utc: bool) -> datetime:
    value = query.get(name)
    if value is None or value == "":
        raise invalid_parameter(name, f"The {name} field is required.")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise invalid_parameter(name, f"The value '{value}' is not a valid date-time.") from None
    if not utc:
        return moment.replace(tzinfo=None)  # the wall clock as given
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def date_range(query: Query, from_name: str, to_name: str, *, utc: bool) -> tuple[datetime, datetime]:
    """The range ``[from, to)`` the query asks for; 400 when it is missing, invalid or backwards."""
    start, end = _moment(query, from_name, utc=utc), _moment(query, to_name, utc=utc)
    if end < start:
        raise invalid_parameter(to_name, f"{to_name} must not be before {from_name}.")
    return start, end


def _choice(query: Query, name: str, choices: tuple[str, ...], *, required: bool) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        if required:
            raise invalid_parameter(name, f"The {name} field is required.")
        return None
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise invalid_parameter(name, f"The value '{value}' is not valid for {name} ({', '.join(choices)}).")


# -- figures -------------------------------------------------------------------------------------------


def _days(start: datetime, end: datetime) -> list[date]:
    """The days whose midnight (naive) is in ``[start, end)``."""
    first = start.date() if start.time() == time() else start.date() + timedelta(days=1)
    days = []
    day = first
    while datetime.combine(day, time()) < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def _daily_costs(records: Records) -> dict[tuple[Any, int, int], Decimal]:
    """(campaign id, year, month) → the campaign's daily cost that month."""
    costs: dict[tuple[Any, int, int], Decimal] = {}
    for record in records(COSTS):
        daily = amount(record.get("dailyCost"))
        if live(record) and daily is not None:
            costs[(record.get("campaignId"), int(record["year"]), int(record["month"]))] = daily
    return costs


def _campaigns(records: Records) -> dict[Any, Record]:
    return {record["id"]: record for record in records(CAMPAIGNS)}


def cost_summary(records: Records, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The campaign-cost-summary items of ``[start, end)`` (naive wall-clock bounds)."""
    costs = _daily_costs(records)
    campaigns = _campaigns(records)
    totals: dict[Any, Decimal] = {}
    for day in _days(start, end):
        for (campaign, year, month), daily in costs.items():
            if (year, month) == (day.year, day.month):
                totals[campaign] = totals.get(campaign, Decimal(0)) + daily
    return [
        {
            "campaignId": campaign,
            "campaignName": str((campaigns.get(campaign) or {}).get("name") or ""),
            "totalCost": cut(totals[campaign]),
        }
        for campaign in sorted(totals)
    ]


def _in(record: Record, field: str, start: datetime, end: datetime) -> bool:
    moment = _CALENDAR.moment(record.get(field))
    return moment is not None and start <= moment < end


def _spend(costs: dict[tuple[Any, int, int], Decimal], campaign: Any, start: datetime, end: datetime) -> Decimal:
    """The campaign's spend in ``[start, end)``: each UTC day's daily cost, by the share of the day in range."""
    total = Decimal(0)
    day = start.date()
    while datetime.combine(day, time(), tzinfo=UTC) < end:
        day_start = datetime.combine(day, time(), tzinfo=UTC)
        overlap = min(end, day_start + timedelta(days=1)) - max(start, day_start)
        daily = costs.get((campaign, day.year, day.month))
        if daily is not None and overlap > timedelta(0):
            total += daily * Decimal(int(overlap.total_seconds())) / _SECONDS_PER_DAY
        day += timedelta(days=1)
    return cut(total)


def _ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(_RATIO, rounding=ROUND_HALF_UP)


def _campaign_of(record: Record) -> Any:
    campaign = record.get("campaign")
    return campaign.get("id") if isinstance(campaign, dict) else record.get("campaignId")


def _inbound_calls(records: Records, start: datetime, end: datetime) -> list[Record]:
    return [
        call
        for call in records(CALLS)
        if live(call) and call.get("direction") == "Inbound" and _campaign_of(call) is not None
        if _in(call, "createdOn", start, end)
    ]


def _manual_jobs(records: Records, start: datetime, end: datetime) -> list[Record]:
    """Jobs created in range with a campaign, booked neither by a call nor by a booking."""
    by_call = {_id(call.get("job")) for call in records(CALLS)}
    by_booking = {booking.get("jobId") for booking in records(BOOKINGS)}
    return [
        job
        for job in records(JOBS)
        if live(job) and job.get("campaignId") is not None and _in(job, "createdOn", start, end)
        if job.get("bookingId") is None and job["id"] not in by_call and job["id"] not in by_booking
    ]


def _id(reference: Any) -> Any:
    return reference.get("id") if isinstance(reference, dict) else None


def _segment(segmentation: str, campaign: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The adGroup and keyword of a row: empty for Campaign; one per campaign otherwise."""
    none = {"id": "", "name": "", "status": None}
    group = {"id": f"{campaign}-ads", "name": f"{name} ads", "status": "Live"}
    keyword = {"id": f"{campaign}-kw", "name": f"{name.lower()} near me", "status": "Live"}
    if segmentation == "Campaign":
        return none, none
    return group, keyword if segmentation == "Keyword" else none


def performance(records: Records, start: datetime, end: datetime, segmentation: str) -> list[dict[str, Any]]:
    """The performance rows of ``[start, end)`` (UTC), one per campaign with spend or leads:

    - lead statistics: ``leadCalls`` inbound calls, ``onlineBooking`` bookings, web lead forms and
      ``manualBooking`` jobs booked by neither, all created in range (``leads`` their sum);
      ``bookedJobs`` jobs created in range; ``ranJobs`` jobs completed in range, ``soldJobs`` those
      with a total above 0, ``revenue`` their totals, ``potentialRevenue`` the totals of jobs
      created in range and still open; ``bookingRate`` booked jobs per lead, ``avgTicket`` revenue
      per sold job;
    - digital statistics: ``cost`` the spend (:func:`_spend`), 4 clicks per lead and 25 impressions
      per click, ``conversions`` the booked jobs, and the ratios of these;
    - ``returnOnInvestment`` revenue per spend. Ratios have 4 places; null where they divide by 0.
    """
    costs = _daily_costs(records)
    campaigns = _campaigns(records)
    tallies: dict[Hashable, dict[str, Any]] = {}

    def tally(campaign: Any) -> dict[str, Any]:
        return tallies.setdefault(
            campaign,
            {"calls": 0, "online": 0, "forms": 0, "manual": 0, "booked": 0, "ran": 0, "sold": 0}
            | {"revenue": Decimal(0), "potential": Decimal(0)},
        )

    for call in _inbound_calls(records, start, end):
        tally(_campaign_of(call))["calls"] += 1
    for booking in records(BOOKINGS):
        if live(booking) and booking.get("campaignId") is not None and _in(booking, "createdOn", start, end):
            tally(booking["campaignId"])["online"] += 1
    for lead in records(LEADS):
        if live(lead) and lead.get("campaignId") is not None and _in(lead, "createdOn", start, end):
            tally(lead["campaignId"])["forms"] += 1
    for job in _manual_jobs(records, start, end):
        tally(job["campaignId"])["manual"] += 1
    for job in records(JOBS):
        campaign, total = job.get("campaignId"), amount(job.get("total")) or Decimal(0)
        if not live(job) or campaign is None:
            continue
        if _in(job, "createdOn", start, end):
            tally(campaign)["booked"] += 1
            if job.get("jobStatus") not in ("Completed", "Canceled"):
                tally(campaign)["potential"] += total
        if job.get("jobStatus") == "Completed" and _in(job, "completedOn", start, end):
            tally(campaign)["ran"] += 1
            if total > 0:
                tally(campaign)["sold"] += 1
                tally(campaign)["revenue"] += total
    for campaign in {key[0] for key in costs}:
        if _spend(costs, campaign, start, end) > 0:
            tally(campaign)
    rows = []
    for campaign in sorted(tallies, key=lambda c: (str(type(c)), c)):
        t = tallies[campaign]
        record = campaigns.get(campaign) or {}
        name = str(record.get("name") or "")
        spend = _spend(costs, campaign, start, end)
        leads = t["calls"] + t["online"] + t["forms"] + t["manual"]
        clicks = 4 * leads
        impressions = 25 * clicks
        ad_group, keyword = _segment(segmentation, campaign, name)
        category = record.get("category")
        rows.append(
            {
                "campaign": {
                    "id": campaign,
                    "externalId": None,
                    "name": name,
                    "category": str(category.get("name") or "") if isinstance(category, dict) else "",
                    "launchDate": str(record.get("createdOn") or "")[:10],
                    "status": "Stopped" if record.get("active") is False else "Live",
                },
                "adGroup": ad_group,
                "keyword": keyword,
                "digitalStats": {
                    "impressionShare": None,
                    "impressions": impressions,
                    "clicks": clicks,
                    "averageCPC": _ratio(spend, clicks) or Decimal(0),
                    "conversions": t["booked"],
                    "allConversions": Decimal(t["booked"]),
                    "cost": spend,
                    "clickRate": _ratio(clicks, impressions),
                    "costPerConversion": _ratio(spend, t["booked"]),
                    "conversionRate": _ratio(t["booked"], clicks),
                },
                "leadStats": {
                    "leads": leads,
                    "leadCalls": t["calls"],
                    "onlineBooking": t["online"],
                    "manualBooking": t["manual"],
                    "bookedJobs": t["booked"],
                    "ranJobs": t["ran"],
                    "soldJobs": t["sold"],
                    "revenue": cut(t["revenue"]),
                    "potentialRevenue": cut(t["potential"]),
                    "bookingRate": _ratio(t["booked"], leads),
                    "avgTicket": _ratio(t["revenue"], t["sold"]),
                },
                "returnOnInvestment": _ratio(t["revenue"], spend),
            }
        )
    return rows


def _attribution(campaigns: dict[Any, Record], campaign: Any) -> dict[str, Any]:
    name = str((campaigns.get(campaign) or {}).get("name") or "")
    return {
        "utmSource": "",
        "utmMedium": "",
        "utmCampaign": name,
        "landingPageUrl": "",
        "referrerUrl": "",
        "clickId": "",
        "gbraid": "",
        "wbraid": "",
        "stCampaignId": campaign,
        "originalCampaign": name,
        "attributionOverwriteType": None,
        "attributionOverwriteId": None,
        "overwrittenBookingJobId": None,
        "adGroupId": "",
        "adGroupName": "",
        "keywordId": "",
        "keywordName": "",
    }


def _lead(
    campaigns: dict[Any, Record], kind: str, moment: Any, campaign: Any, *, job: Any = None, customer: Any = None
) -> dict[str, Any]:
    customer = customer if isinstance(customer, dict) else {"id": customer, "name": ""}
    return {
        "dateTime": moment,
        "leadType": LEAD_TYPES[kind],
        "attribution": _attribution(campaigns, campaign),
        "job": {"id": job, "name": str(job) if job is not None else ""},
        "customer": {"id": customer.get("id"), "name": str(customer.get("name") or "")},
        "call": {
            "duration": "",
            "id": None,
            "type": "",
            "source": "",
            "callerNumber": "",
            "trackingNumber": "",
            "excusedReason": "",
        },
        "leadForm": {"leadNumber": None, "leadStatus": "", "notes": ""},
        "booking": {"id": None},
    }


def attributed_leads(records: Records, start: datetime, end: datetime, lead_type: str | None) -> list[dict[str, Any]]:
    """The attributed leads of ``[start, end)`` (UTC): inbound calls with a campaign (Call), bookings
    (WebBooking), web lead forms (WebLeadForm) and jobs booked by neither (ManualJob), each at its
    ``createdOn``, with its campaign; ``lead_type`` keeps one kind only."""
    campaigns = _campaigns(records)
    leads: list[tuple[Any, int, Any, dict[str, Any]]] = []
    for call in _inbound_calls(records, start, end):
        lead = _lead(campaigns, "Call", call["createdOn"], _campaign_of(call), job=_id(call.get("job")))
        lead["customer"] = {"id": _id(call.get("customer")), "name": str((call.get("customer") or {}).get("name", ""))}
        lead["call"] = {
            "duration": str(call.get("duration") or ""),
            "id": call["id"],
            "type": str(call.get("type") or ""),
            "source": "",
            "callerNumber": str(call.get("from") or ""),
            "trackingNumber": str(call.get("to") or ""),
            "excusedReason": "",
        }
        leads.append((call["createdOn"], 1, call["id"], lead))
    for booking in records(BOOKINGS):
        if live(booking) and booking.get("campaignId") is not None and _in(booking, "createdOn", start, end):
            lead = _lead(campaigns, "WebBooking", booking["createdOn"], booking["campaignId"], job=booking.get("jobId"))
            lead["booking"] = {"id": booking["id"]}
            leads.append((booking["createdOn"], 2, booking["id"], lead))
    for form in records(LEADS):
        if live(form) and form.get("campaignId") is not None and _in(form, "createdOn", start, end):
            lead = _lead(
                campaigns, "WebLeadForm", form["createdOn"], form["campaignId"], customer=form.get("customerId")
            )
            lead["leadForm"] = {
                "leadNumber": form["id"],
                "leadStatus": str(form.get("status") or ""),
                "notes": str(form.get("summary") or ""),
            }
            leads.append((form["createdOn"], 3, form["id"], lead))
    for job in _manual_jobs(records, start, end):
        lead = _lead(
            campaigns, "ManualJob", job["createdOn"], job["campaignId"], job=job["id"], customer=job.get("customerId")
        )
        leads.append((job["createdOn"], 4, job["id"], lead))
    leads.sort(key=lambda lead: (_CALENDAR.moment(lead[0]), lead[1], lead[2]))
    wanted = LEAD_TYPES[lead_type] if lead_type else None
    return [lead for _, kind, _, lead in leads if wanted is None or kind == wanted]


# -- answers -----------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """Decimals as JSON numbers (through a float: 4 places print exactly), recursively."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def rows_for(records: Records, key: str, query: Query) -> list[dict[str, Any]]:
    """All rows (every page) one request asks for, as served (plain JSON values)."""
    if key == COST_SUMMARY:
        start, end = date_range(query, "from", "to", utc=False)
        return plain(cost_summary(records, start, end))
    start, end = date_range(query, "fromUtc", "toUtc", utc=True)
    if key == PERFORMANCE:
        segmentation = _choice(query, "performanceSegmentationType", SEGMENTATIONS, required=True)
        assert segmentation is not None
        return plain(performance(records, start, end, segmentation))
    lead_type = _choice(query, "leadType", tuple(LEAD_TYPES), required=False)
    return plain(attributed_leads(records, start, end, lead_type))


Damage = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass
class _Decoded:
    stored: list[StoredRecord] | None
    records: list[Record]


class TenantMarketing:
    """One tenant's marketing reports: the records they read, decoded once per version of each dataset."""

    def __init__(self, records: Callable[[str], list[StoredRecord] | None]) -> None:
        self._records = records
        self._lock = threading.Lock()
        self._decoded: dict[str, _Decoded] = {}

    def records(self, key: str) -> list[Record]:
        stored = self._records(key)
        with self._lock:
            cached = self._decoded.get(key)
            if cached is None or cached.stored is not stored:
                decoded = [json.loads(record.blob, parse_float=Decimal) for record in stored or []]
                cached = self._decoded[key] = _Decoded(stored, decoded)
            return cached.records

    def body(self, key: str, query: Query, damage: Damage | None = None) -> bytes:
        """The answer to one request (one page of a paged report)."""
        rows = rows_for(self.records, key, query)
        if damage is not None:
            rows = damage(rows)
        if key == COST_SUMMARY:
            return dumpb({"items": rows})
        head, page = paged(rows, query, PAGE_SIZE, MAX_PAGE_SIZE)
        return dumpb({**head, "data": page})
