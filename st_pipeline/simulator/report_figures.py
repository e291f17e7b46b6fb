"""The figures of the simulated Reporting API, computed from the simulator's own records.

Each report's figures are *facts*: one contribution of one record (a job, an invoice item, a call,
…) to one row of the report (a business unit, a technician, or the one row), on one calendar day
of the tenant (its time zone). A request sums the facts of the days it asks for.

The definitions are those of the README's *Metrics* (the marts), written again here from the
records as the API serves them — the simulator does not use the pipeline's transform code, so a
mart that agrees with a report is checked against an independent computation:

- a record counts when it is *live*: its ``active`` is not false (a record the simulator deleted
  is gone from its store);
- money is exact: decimal text (accounting's strings, other modules' JSON numbers) read as
  ``Decimal`` and cut (not rounded) to 4 places, as the warehouse reads it; a value that is not
  a plain decimal counts as nothing;
- a timestamp's day is its calendar day in the tenant's zone, after cutting it to milliseconds.

A figure whose dataset the simulator does not generate (``SimulatorConfig.datasets`` without it
or anything that needs it) is computed over no records: it is 0. Datasets that are generated
but not served (dependencies of served ones) are used.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from st_pipeline.simulator.clock import parse_ticks

Record = dict[str, Any]
Records = Callable[[str], list[Record]]
"""A dataset key → its current records (numbers decoded as ``Decimal``); ``[]`` if not generated."""

Value = int | Decimal
Fact = tuple[date, Hashable, Mapping[str, Value]]

JOBS, JOB_TYPES, INVOICES, ESTIMATES = "jpm/jobs", "jpm/job-types", "accounting/invoices", "sales/estimates"
BUSINESS_UNITS, TECHNICIANS = "settings/business-units", "settings/technicians"
SPLITS, ASSIGNMENTS, APPOINTMENTS = "payroll/jobs/splits", "dispatch/appointment-assignments", "jpm/appointments"
SHIFTS, CALLS, PAYMENTS = "dispatch/technician-shifts", "telecom/calls", "accounting/payments"

_SCALE = Decimal("0.0001")  # 4 places, as the warehouse keeps money and decimals
_PLAIN_DECIMAL = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICKS_PER_MS = 10_000
_ZERO = Decimal(0)


def amount(value: Any) -> Decimal | None:
    """A decimal value (text or number) cut to 4 places; ``None`` if it is not a plain decimal."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        return None
    text = str(value)
    if _PLAIN_DECIMAL.fullmatch(text) is None:
        return None
    return Decimal(text).quantize(_SCALE, rounding=ROUND_DOWN)


def cut(value: Decimal) -> Decimal:
    """A computed amount cut (towards zero) to 4 places."""
    return value.quantize(_SCALE, rounding=ROUND_DOWN)


def live(record: Record) -> bool:
    return record.get("active") is not False


def _id_of(reference: Any) -> Any:
    """The ``id`` of a nested reference (``{"id": …, "name": …}``), or ``None``."""
    return reference.get("id") if isinstance(reference, dict) else None


class Calendar:
    """The tenant's calendar: the local day of a timestamp."""

    def __init__(self, zone: tzinfo | None) -> None:
        self.zone = zone  # None: UTC

    def moment(self, value: Any) -> datetime | None:
        """A timestamp (UTC unless it says otherwise) cut to milliseconds; ``None`` if it is none."""
        if not isinstance(value, str):
            return None
        try:
            ticks = parse_ticks(value)
        except ValueError:
            return None
        return _EPOCH + timedelta(milliseconds=ticks // _TICKS_PER_MS)

    def day(self, value: Any) -> date | None:
        moment = self.moment(value)
        if moment is None:
            return None
        return (moment if self.zone is None else moment.astimezone(self.zone)).date()


class DailyFacts:
    """Facts ordered by day, summed per row key over a range of days."""

    def __init__(self, facts: Iterable[Fact], measures: tuple[str, ...]) -> None:
        self.measures = measures
        self._facts = sorted((fact for fact in facts if fact[0] is not None), key=lambda fact: fact[0])
        self._days = [fact[0] for fact in self._facts]

    def __len__(self) -> int:
        return len(self._facts)

    def totals(self, first: date, last: date) -> dict[Hashable, dict[str, Value]]:
        """Each row key's sums over the days from ``first`` to ``last`` (both included)."""
        sums: dict[Hashable, dict[str, Value]] = {}
        for _day, key, values in self._facts[bisect_left(self._days, first) : bisect_right(self._days, last)]:
            tally = sums.get(key)
            if tally is None:
                tally = sums[key] = dict.fromkeys(self.measures, 0)
            for name, value in values.items():
                tally[name] += value
        return sums


@dataclass(frozen=True)
class Figures:
    """A report's facts and how a row is made of a key and its sums (names looked up, …)."""

    facts: DailyFacts
    row: Callable[[Hashable, Mapping[str, Value]], dict[str, Any]]
    single_row: bool = False  # one row, even when nothing happened (its key is None)

    def rows(self, first: date, last: date) -> list[dict[str, Any]]:
        """The report's rows for the days ``first`` to ``last``: ordered by key (``None`` last);
        keys whose sums are all zero are left out, except for a single-row report."""
        totals = self.facts.totals(first, last)
        if self.single_row:
            return [self.row(None, totals.get(None) or dict.fromkeys(self.facts.measures, 0))]
        keys = [key for key, sums in totals.items() if any(value != 0 for value in sums.values())]
        keys.sort(key=lambda key: (key is None, key if isinstance(key, int) else 0, str(key)))
        return [self.row(key, totals[key]) for key in keys]


# -- jobs: the facts the operations and technician reports share ---------------------------------


@dataclass(frozen=True)
class CompletedJob:
    """A live job with status Completed and a completion time, and what its KPIs depend on."""

    id: int
    day: date | None
    business_unit_id: Any
    no_charge: bool  # the job's or its job type's
    threshold: Decimal  # the job type's sold threshold (0 without one)
    invoiced: Decimal  # subtotal of its live invoices, adjustments excluded
    revenue: Decimal  # income items of those invoices
    estimates: int  # its live estimates
    sold: Decimal  # the subtotal of those that are Sold

    @property
    def converted(self) -> bool:
        return self.invoiced > 0 and self.invoiced >= self.threshold

    @property
    def opportunity(self) -> bool:
        return not self.no_charge or self.converted

    @property
    def closed(self) -> bool:
        return self.estimates > 0 and self.sold > 0 and self.sold >= self.threshold

    @property
    def sales_opportunity(self) -> bool:
        return self.estimates > 0 and (not self.no_charge or self.closed)


def _own_invoices(records: Records) -> list[Record]:
    """Live invoices of a job that are not adjustments."""
    return [
        invoice
        for invoice in records(INVOICES)
        if live(invoice) and invoice.get("adjustmentToId") is None and _id_of(invoice.get("job")) is not None
    ]


def _income_items(invoice: Record) -> list[tuple[Any, Decimal]]:
    """(the item's business unit id, its total) of each item booked to an Income GL account."""
    found = []
    for item in invoice.get("items") or ():
        if not isinstance(item, dict):
            continue
        account = item.get("generalLedgerAccount")
        total = amount(item.get("total"))
        if isinstance(account, dict) and account.get("type") == "Income" and total is not None:
            found.append((_id_of(item.get("businessUnit")), total))
    return found


def completed_jobs(records: Records, calendar: Calendar) -> dict[int, CompletedJob]:
    """Every completed job by id (see :class:`CompletedJob`)."""
    types = {t.get("id"): t for t in records(JOB_TYPES)}  # a job type counts live or not, as the mart joins it
    invoiced: dict[Any, Decimal] = defaultdict(Decimal)
    revenue: dict[Any, Decimal] = defaultdict(Decimal)
    for invoice in _own_invoices(records):
        job_id = _id_of(invoice.get("job"))
        invoiced[job_id] += amount(invoice.get("subTotal")) or _ZERO
        revenue[job_id] += sum((total for _unit, total in _income_items(invoice)), _ZERO)
    estimates: dict[Any, int] = defaultdict(int)
    sold: dict[Any, Decimal] = defaultdict(Decimal)
    for estimate in records(ESTIMATES):
        if not live(estimate) or estimate.get("jobId") is None:
            continue
        estimates[estimate["jobId"]] += 1
        status = estimate.get("status")
        if isinstance(status, dict) and status.get("name") == "Sold":
            sold[estimate["jobId"]] += amount(estimate.get("subtotal")) or _ZERO
    jobs = {}
    for job in records(JOBS):
        if not live(job) or job.get("jobStatus") != "Completed" or job.get("completedOn") is None:
            continue
        job_type = types.get(job.get("jobTypeId")) or {}
        jobs[job["id"]] = CompletedJob(
            id=job["id"],
            day=calendar.day(job["completedOn"]),
            business_unit_id=job.get("businessUnitId"),
            no_charge=job.get("noCharge") is True or job_type.get("noCharge") is True,
            threshold=amount(job_type.get("soldThreshold")) or _ZERO,
            invoiced=invoiced.get(job["id"], _ZERO),
            revenue=revenue.get(job["id"], _ZERO),
            estimates=estimates.get(job["id"], 0),
            sold=sold.get(job["id"], _ZERO),
        )
    return jobs


def _names(records: list[Record]) -> dict[Any, Any]:
    return {record.get("id"): record.get("name") for record in records}


def _conversion(job: CompletedJob) -> dict[str, Value]:
    return {
        "CompletedJobs": 1,
        "Opportunities": int(job.opportunity),
        "ConvertedJobs": int(job.converted),
        "SalesOpportunities": int(job.sales_opportunity),
        "ClosedOpportunities": int(job.closed),
    }


def bu_performance(records: Records, calendar: Calendar) -> Figures:
    """Per business unit: **completed revenue** (income items of the live, non-adjustment invoices of
    completed jobs, credited to the item's business unit, else the job's, on the job's completion
    day: ``mart_revenue_by_business_unit``) and the job counts of ``mart_job_conversion`` (completed
    jobs, opportunities, converted, sales opportunities, closed; the job's business unit and
    completion day)."""
    jobs = completed_jobs(records, calendar)
    facts: list[Fact] = []
    for invoice in _own_invoices(records):
        job = jobs.get(_id_of(invoice.get("job")))
        if job is None or job.day is None:
            continue
        for unit, total in _income_items(invoice):
            facts.append((job.day, job.business_unit_id if unit is None else unit, {"CompletedRevenue": total}))
    for job in jobs.values():
        if job.day is not None:
            facts.append((job.day, job.business_unit_id, _conversion(job)))
    names = _names(records(BUSINESS_UNITS))
    measures = (
        "CompletedRevenue",
        "CompletedJobs",
        "Opportunities",
        "ConvertedJobs",
        "SalesOpportunities",
        "ClosedOpportunities",
    )

    def row(key: Hashable, sums: Mapping[str, Value]) -> dict[str, Any]:
        return {"BusinessUnitId": key, "BusinessUnitName": names.get(key), **sums}

    return Figures(DailyFacts(facts, measures), row)


def job_credits(records: Records) -> dict[Any, list[tuple[Any, Decimal | None, int]]]:
    """Who is credited with each job: (technician, share in percent, shared by), as the mart does.

    The technicians with a live split above zero (summed per technician; ``shared_by`` 1). A job
    with no live split at all falls back to its live assignments' technicians in equal shares
    (share ``None``, ``shared_by`` their number). A job whose splits are all zero is credited to
    nobody.
    """
    shares: dict[Any, dict[Any, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    split_jobs = set()
    for split in records(SPLITS):
        if not live(split):
            continue
        split_jobs.add(split.get("jobId"))
        share = amount(split.get("split"))
        if split.get("technicianId") is not None and share is not None and share > 0:
            shares[split.get("jobId")][split["technicianId"]] += share
    assigned: dict[Any, set[Any]] = defaultdict(set)
    for assignment in records(ASSIGNMENTS):
        job_id = assignment.get("jobId")
        if live(assignment) and assignment.get("technicianId") is not None and job_id not in split_jobs:
            assigned[job_id].add(assignment["technicianId"])
    credits: dict[Any, list[tuple[Any, Decimal | None, int]]] = {}
    for job_id, by_technician in shares.items():
        credits[job_id] = [(technician, share, 1) for technician, share in by_technician.items()]
    for job_id, technicians in assigned.items():
        credits[job_id] = [(technician, None, len(technicians)) for technician in technicians]
    return credits


def technician_performance(records: Records, calendar: Calendar) -> Figures:
    """Per technician (``mart_technician_performance`` summed over business units): the jobs
    credited to them (see :func:`job_credits`), the revenue weighted by their share — ``revenue ×
    split / 100``, or ``revenue / shared_by`` without splits, each cut to 4 places before summing —
    and the credited jobs that were opportunities and converted."""
    jobs = completed_jobs(records, calendar)
    facts: list[Fact] = []
    for job_id, credited in job_credits(records).items():
        job = jobs.get(job_id)
        if job is None or job.day is None:
            continue
        for technician, share, shared_by in credited:
            weighted = cut(job.revenue / shared_by) if share is None else cut(job.revenue * share / 100)
            facts.append(
                (
                    job.day,
                    technician,
                    {
                        "CompletedJobs": 1,
                        "Revenue": weighted,
                        "Opportunities": int(job.opportunity),
                        "ConvertedJobs": int(job.converted),
                    },
                )
            )
    names = _names(records(TECHNICIANS))

    def row(key: Hashable, sums: Mapping[str, Value]) -> dict[str, Any]:
        return {"TechnicianId": key, "TechnicianName": names.get(key), **sums}

    return Figures(DailyFacts(facts, ("CompletedJobs", "Revenue", "Opportunities", "ConvertedJobs")), row)


def call_booking(records: Records, calendar: Calendar) -> Figures:
    """One row (``mart_call_booking``): live inbound calls by creation day; bookable: type Booked
    or Unbooked; booked: type Booked."""
    facts: list[Fact] = []
    for call in records(CALLS):
        day = calendar.day(call.get("createdOn"))
        if not live(call) or call.get("direction") != "Inbound" or day is None:
            continue
        kind = call.get("type")
        facts.append(
            (
                day,
                None,
                {
                    "InboundCalls": 1,
                    "BookableCalls": int(kind in ("Booked", "Unbooked")),
                    "BookedCalls": int(kind == "Booked"),
                },
            )
        )
    return Figures(DailyFacts(facts, ("InboundCalls", "BookableCalls", "BookedCalls")), _as_is, single_row=True)


def collections(records: Records, calendar: Calendar) -> Figures:
    """One row (``mart_collections``): live payments by payment day (``date``) and their total."""
    facts: list[Fact] = []
    for payment in records(PAYMENTS):
        day = calendar.day(payment.get("date"))
        if live(payment) and day is not None:
            facts.append((day, None, {"Payments": 1, "Collected": amount(payment.get("total")) or _ZERO}))
    return Figures(DailyFacts(facts, ("Payments", "Collected")), _as_is, single_row=True)


def _minutes(calendar: Calendar, start: Any, end: Any) -> int | None:
    """Whole minutes (rounded) from start to end, 0 when the end is not after the start."""
    first, last = calendar.moment(start), calendar.moment(end)
    if first is None or last is None:
        return None
    if last <= first:
        return 0
    seconds = Decimal((last - first) // timedelta(milliseconds=1)) / 1000
    return int((seconds / 60).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def technician_hours(records: Records, calendar: Calendar) -> Figures:
    """Per technician (``mart_technician_capacity``): ``ShiftHours``, the minutes of their live
    Normal shifts (each rounded to whole minutes) by the shift's start day, over 60 and cut to 4
    places; ``AppointmentCount``, their live assignments to live appointments that are not
    Canceled, by the appointment's start day."""
    facts: list[Fact] = []
    for shift in records(SHIFTS):
        if not live(shift) or shift.get("technicianId") is None or shift.get("shiftType") != "Normal":
            continue
        minutes = _minutes(calendar, shift.get("start"), shift.get("end"))
        day = calendar.day(shift.get("start"))
        if minutes is not None and day is not None:
            facts.append((day, shift["technicianId"], {"ShiftMinutes": minutes}))
    appointments = {
        appointment.get("id"): appointment
        for appointment in records(APPOINTMENTS)
        if live(appointment) and appointment.get("status") != "Canceled" and appointment.get("end") is not None
    }
    for assignment in records(ASSIGNMENTS):
        appointment = appointments.get(assignment.get("appointmentId"))
        if not live(assignment) or assignment.get("technicianId") is None or appointment is None:
            continue
        day = calendar.day(appointment.get("start"))
        if day is not None:
            facts.append((day, assignment["technicianId"], {"AppointmentCount": 1}))

    def row(key: Hashable, sums: Mapping[str, Value]) -> dict[str, Any]:
        hours = cut(Decimal(sums["ShiftMinutes"]) / 60)
        return {"TechnicianId": key, "ShiftHours": hours, "AppointmentCount": sums["AppointmentCount"]}

    return Figures(DailyFacts(facts, ("ShiftMinutes", "AppointmentCount")), row)


def _as_is(_key: Hashable, sums: Mapping[str, Value]) -> dict[str, Any]:
    return dict(sums)
