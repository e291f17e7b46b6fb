"""The Reporting API (``/reporting/v2/tenant/{tenant}/…``), with figures from the simulator's records.

Endpoints, as in ``reporting-v2.json``:

- ``GET report-categories``: the categories (paged like every list);
- ``GET report-category/{category}/reports``: the category's reports (``{id, name, description}``,
  paged);
- ``GET report-category/{category}/reports/{reportId}``: the report's definition — its
  parameters and fields, and ``modifiedOn``, when its structure last changed;
- ``POST report-category/{category}/reports/{reportId}/data?page=&pageSize=&includeTotal=``
  with ``{"parameters": [{"name": "From", "value": "2024-03-01"}, …]}``: rows as arrays in the
  order of the report's fields (``pageSize`` 1000 by default, at most 25,000).

Every report takes two required Date parameters, ``From`` and ``To``: local days (the tenant's
``time_zone``), both included. Its figures are those of :mod:`report_figures`. A report's fields
can be changed for tests (:meth:`TenantReports.change_fields`), as a report owner may do: the
data follow the new field list at once.

Unknown categories and reports are 404; a missing or unknown parameter, a bad date, ``From``
after ``To``, a body that is not a ``ReportDataRequest`` or a page size out of range are 400,
with ``ApiErrorResponse`` bodies. The per-report rate limit is the server's (``server.py``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from st_pipeline.simulator import report_figures as rf
from st_pipeline.simulator.clock import REFERENCE_END_TICKS, TICKS_PER_DAY, format_ticks
from st_pipeline.simulator.errors import TITLE_NOT_FOUND, ApiError, invalid_parameter
from st_pipeline.simulator.feeds import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Query, bool_param, int_param
from st_pipeline.simulator.store import StoredRecord, dumpb, dumps

PREFIX = "/reporting/v2/tenant/"
DATA_PAGE_SIZE = 1000
MAX_DATA_PAGE_SIZE = 25_000
DATA_TYPES = ("String", "Number", "Boolean", "Date", "Time")
SCOPE_CATEGORIES = "tn.rpr.reportcategories:r"
SCOPE_REPORTS = "tn.rpr.reports:r"

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("operations", "Operations"),
    ("technician", "Technician"),
    ("marketing", "Marketing"),
    ("accounting", "Accounting"),
    ("custom", "Custom Reports"),
)

_VALIDATION = "One or more validation errors occurred."
_PATH = re.compile(
    r"^/reporting/v2/tenant/(?P<tenant>[^/]+)/(?:(?P<categories>report-categories)"
    r"|report-category/(?P<category>[^/]+)/reports(?:/(?P<report>[^/]+)(?P<data>/data)?)?)$"
)
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?Z?)?")


@dataclass(frozen=True)
class ReportField:
    """A field (column) of a report: ``name``, ``label`` and ``data_type`` (one of
    :data:`DATA_TYPES`). ``source`` is the built-in column whose values it carries (default: the
    column of its own name); a field with no such column is a new one, null in every row."""

    name: str
    label: str
    data_type: str = "Number"
    source: str | None = None

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "dataType": self.data_type}


@dataclass(frozen=True)
class ReportSpec:
    """A report as the simulator defines it: its place, its built-in fields and its figures."""

    id: int
    category: str
    name: str
    description: str
    fields: tuple[ReportField, ...]
    sources: tuple[str, ...]  # the datasets its figures are computed from
    figures: Callable[[rf.Records, rf.Calendar], rf.Figures]

    def list_item(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description}


def _n(name: str, label: str) -> ReportField:
    return ReportField(name, label, "Number")


_JOB_SOURCES = (rf.JOBS, rf.JOB_TYPES, rf.INVOICES, rf.ESTIMATES)

REPORTS: tuple[ReportSpec, ...] = (
    ReportSpec(
        1001,
        "operations",
        "BU Performance",
        "Completed revenue and job conversion per business unit, by job completion day.",
        (
            _n("BusinessUnitId", "Business Unit ID"),
            ReportField("BusinessUnitName", "Business Unit", "String"),
            _n("CompletedRevenue", "Completed Revenue"),
            _n("CompletedJobs", "Completed Jobs"),
            _n("Opportunities", "Opportunities"),
            _n("ConvertedJobs", "Converted Jobs"),
            _n("SalesOpportunities", "Sales Opportunities"),
            _n("ClosedOpportunities", "Closed Opportunities"),
        ),
        (*_JOB_SOURCES, rf.BUSINESS_UNITS),
        rf.bu_performance,
    ),
    ReportSpec(
        1002,
        "technician",
        "Technician Performance",
        "Jobs, split-weighted revenue and conversion per technician, by job completion day.",
        (
            _n("TechnicianId", "Technician ID"),
            ReportField("TechnicianName", "Technician", "String"),
            _n("CompletedJobs", "Completed Jobs"),
            _n("Revenue", "Total Revenue"),
            _n("Opportunities", "Opportunities"),
            _n("ConvertedJobs", "Converted Jobs"),
        ),
        (*_JOB_SOURCES, rf.SPLITS, rf.ASSIGNMENTS, rf.TECHNICIANS),
        rf.technician_performance,
    ),
    ReportSpec(
        1003,
        "marketing",
        "Call Booking",
        "Inbound calls, bookable calls and booked calls, by call day.",
        (_n("InboundCalls", "Inbound Calls"), _n("BookableCalls", "Bookable Calls"), _n("BookedCalls", "Booked Calls")),
        (rf.CALLS,),
        rf.call_booking,
    ),
    ReportSpec(
        1004,
        "accounting",
        "Collections",
        "Payments received and their total, by payment day.",
        (_n("Payments", "Payments"), _n("Collected", "Collected")),
        (rf.PAYMENTS,),
        rf.collections,
    ),
    ReportSpec(
        1005,
        "custom",
        "Daily Technician Hours",
        "A custom report: Normal shift hours (by shift start day) and appointments per technician.",
        (_n("TechnicianId", "Technician ID"), _n("ShiftHours", "Shift Hours"), _n("AppointmentCount", "Appointments")),
        (rf.SHIFTS, rf.ASSIGNMENTS, rf.APPOINTMENTS),
        rf.technician_hours,
    ),
)
REPORTS_BY_ID = {report.id: report for report in REPORTS}
PARAMETERS: tuple[dict[str, Any], ...] = tuple(
    {"name": name, "label": label, "dataType": "Date", "isArray": False, "isRequired": True, "acceptValues": None}
    for name, label in (("From", "From"), ("To", "To"))
)


@dataclass(frozen=True)
class ReportPath:
    """What a reporting request path names."""

    tenant: str
    category: str | None  # None: the category list
    report: str | None  # None: the category's report list
    data: bool


def match(path: str) -> ReportPath | None:
    """The reporting endpoint of a request path, or ``None`` for any other path."""
    found = _PATH.match(path)
    if found is None:
        return None
    return ReportPath(found["tenant"], found["category"], found["report"], found["data"] is not None)


def paged(items: Sequence[Any], query: Query, default: int, maximum: int) -> tuple[dict[str, Any], list[Any]]:
    page = int_param(query, "page", 1, 1, None)
    page_size = int_param(query, "pageSize", default, 1, maximum)
    start = (page - 1) * page_size
    head = {
        "page": page,
        "pageSize": page_size,
        "hasMore": start + page_size < len(items),
        "totalCount": len(items) if bool_param(query, "includeTotal") else None,
    }
    return head, list(items[start : start + page_size])


def _value_json(value: Any) -> str:
    """A cell: decimals as exact JSON numbers (never through a float)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return dumps(value)


def parse_range(body: bytes) -> tuple[date, date]:
    """``From`` and ``To`` of a ``ReportDataRequest`` body; ``ApiError`` 400 when it is not one."""
    try:
        document = json.loads(body) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, _VALIDATION, {"body": ["The request body is not valid JSON."]}) from None
    if not isinstance(document, dict) or not isinstance(document.get("parameters"), list):
        raise invalid_parameter("parameters", "The parameters field is required (a list of {name, value}).")
    known = {parameter["name"].lower(): parameter["name"] for parameter in PARAMETERS}
    values: dict[str, Any] = {}
    for item in document["parameters"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise invalid_parameter("parameters", "Each parameter needs a name.")
        name = known.get(item["name"].lower())
        if name is None:
            raise invalid_parameter(item["name"], f"The report has no parameter '{item['name']}'.")
        if name in values:
            raise invalid_parameter(name, f"The parameter '{name}' is given more than once.")
        values[name] = item.get("value")
    days = {}
    for parameter in PARAMETERS:
        name = parameter["name"]
        value = values.get(name)
        if value is None or value == "":
            raise invalid_parameter(name, f"The parameter '{name}' is required.")
        found = _DATE.fullmatch(value.strip()) if isinstance(value, str) else None
        try:
            days[name] = date.fromisoformat(found.group(1)) if found else None
        except ValueError:
            days[name] = None
        if days[name] is None:
            raise invalid_parameter(name, f"The value '{value}' is not a valid date.")
    first, last = days["From"], days["To"]
    assert first is not None and last is not None
    if last < first:
        raise invalid_parameter("To", "To must not be before From.")
    return first, last


@dataclass
class _Definition:
    fields: tuple[ReportField, ...]
    modified_ticks: int


class TenantReports:
    """One tenant's reports: their current definitions, and their figures, computed from the
    tenant's records on demand and kept until one of the datasets they read changes."""

    def __init__(
        self,
        records: Callable[[str], list[StoredRecord] | None],
        calendar: rf.Calendar,
        *,
        page_size_cap: int = MAX_DATA_PAGE_SIZE,
    ) -> None:
        self._records = records  # a dataset's current records (None: not generated)
        self._calendar = calendar
        self._page_size_cap = page_size_cap  # a larger pageSize asked for gets pages of this size
        self._lock = threading.Lock()
        self._definitions = {
            report.id: _Definition(report.fields, REFERENCE_END_TICKS - (report.id - 1000) * 30 * TICKS_PER_DAY)
            for report in REPORTS
        }
        self._decoded: dict[str, tuple[list[StoredRecord], list[rf.Record]]] = {}
        self._figures: dict[int, tuple[tuple[list[StoredRecord] | None, ...], rf.Figures]] = {}

    # -- definitions -----------------------------------------------------------------------

    def report(self, category: str, report_id: str) -> ReportSpec:
        """The report ``report_id`` of ``category``; 404 for any other."""
        try:
            report = REPORTS_BY_ID.get(int(report_id))
        except ValueError:
            report = None
        if report is None or report.category != category:
            raise ApiError(404, TITLE_NOT_FOUND)
        return report

    def definition(self, report: ReportSpec) -> dict[str, Any]:
        with self._lock:
            current = self._definitions[report.id]
        return {
            "id": report.id,
            "name": report.name,
            "description": report.description,
            "modifiedOn": format_ticks(current.modified_ticks),
            "parameters": [dict(parameter) for parameter in PARAMETERS],
            "fields": [field.definition() for field in current.fields],
        }

    def change_fields(self, report_id: int, fields: Sequence[ReportField], now_ticks: int) -> str:
        """Replace a report's fields (see :class:`ReportField`); returns the new ``modifiedOn``."""
        if report_id not in REPORTS_BY_ID:
            raise KeyError(f"no report {report_id}; reports: {sorted(REPORTS_BY_ID)}")
        names = [field.name for field in fields]
        if not fields or any(not name for name in names) or len(set(names)) != len(names):
            raise ValueError("a report needs at least one field, each with a unique, non-empty name")
        unknown = sorted({field.data_type for field in fields} - set(DATA_TYPES))
        if unknown:
            raise ValueError(f"unknown data types {unknown}; known: {list(DATA_TYPES)}")
        with self._lock:
            current = self._definitions[report_id]
            ticks = max(now_ticks, current.modified_ticks + 1)
            self._definitions[report_id] = _Definition(tuple(fields), ticks)
        return format_ticks(ticks)

    # -- answers -----------------------------------------------------------------------------

    def categories_body(self, query: Query) -> bytes:
        head, page = paged(
            [{"id": key, "name": name} for key, name in CATEGORIES], query, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
        )
        return dumpb({**head, "data": page})

    def reports_body(self, category: str, query: Query) -> bytes:
        if category not in dict(CATEGORIES):
            raise ApiError(404, TITLE_NOT_FOUND)
        items = [report.list_item() for report in REPORTS if report.category == category]
        head, page = paged(items, query, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return dumpb({**head, "data": page})

    def data_body(self, report: ReportSpec, query: Query, body: bytes) -> bytes:
        """The data answer (``ReportDataResponse``): the page's rows in the current fields' order."""
        page = int_param(query, "page", 1, 1, None)
        page_size = min(int_param(query, "pageSize", DATA_PAGE_SIZE, 1, MAX_DATA_PAGE_SIZE), self._page_size_cap)
        include_total = bool_param(query, "includeTotal")
        first, last = parse_range(body)
        with self._lock:
            fields = self._definitions[report.id].fields
        rows = self.figures(report).rows(first, last)
        start = (page - 1) * page_size
        cells = [
            "[" + ",".join(_value_json(row.get(field.source or field.name)) for field in fields) + "]"
            for row in rows[start : start + page_size]
        ]
        head = {
            "fields": [{"name": field.name, "label": field.label} for field in fields],
            "page": page,
            "pageSize": page_size,
            "hasMore": start + page_size < len(rows),
            "totalCount": len(rows) if include_total else None,
        }
        return (dumps(head)[:-1] + ',"data":[' + ",".join(cells) + "]}").encode()

    def figures(self, report: ReportSpec) -> rf.Figures:
        """The report's figures, recomputed when a dataset they read has changed."""
        snapshot = tuple(self._records(key) for key in report.sources)
        with self._lock:
            cached = self._figures.get(report.id)
            if cached is not None and all(a is b for a, b in zip(cached[0], snapshot, strict=True)):
                return cached[1]
            decoded = {key: self._decode(key, stored) for key, stored in zip(report.sources, snapshot, strict=True)}
            figures = report.figures(lambda key: decoded.get(key, []), self._calendar)
            self._figures[report.id] = (snapshot, figures)
            return figures

    def _decode(self, key: str, stored: list[StoredRecord] | None) -> list[rf.Record]:
        """The records decoded with exact decimals (the lock is held)."""
        if stored is None:
            return []
        cached = self._decoded.get(key)
        if cached is not None and cached[0] is stored:
            return cached[1]
        records = [json.loads(record.blob, parse_float=Decimal) for record in stored]
        self._decoded[key] = (stored, records)
        return records
