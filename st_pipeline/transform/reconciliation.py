"""Marts held against the ServiceTitan reports they should equal: to the cent, count for count.

A ``ReportMapping`` names a ServiceTitan report (by the name in its definition), the mart it
should equal, which report fields key its rows (e.g. ``BusinessUnitId`` ↔ the mart's
``business_unit_id``) and which fields are which mart columns. For one tenant and period (the
report's From and To days, the tenant's calendar, as the mart's days are), the mart's rows of the
period's days are summed per key and compared with the report's rows; a key missing on one side
counts as zeros there. Every cell that differs is listed with both values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from st_pipeline.transform.expressions import as_day
from st_pipeline.transform.mart_build import mart_table
from st_pipeline.transform.marts import MARTS_BY_NAME
from st_pipeline.warehouse.tables import transform_state_table

Key = tuple[Any, ...]


@dataclass(frozen=True)
class ReportMapping:
    """Which report fields are which columns of one mart."""

    name: str
    report: str  # the report's name in its definition, e.g. "BU Performance" (compared case-insensitively)
    mart: str
    key: tuple[tuple[str, str], ...]  # (report field, mart column) pairs that identify a row, besides the day
    measures: tuple[tuple[str, str], ...]  # (report field, mart column) pairs compared

    @property
    def mart_table_name(self) -> str:
        return MARTS_BY_NAME[self.mart].table_name

    def applies_to(self, report_name: str, fields: Sequence[str]) -> bool:
        needed = {field for field, _ in (*self.key, *self.measures)}
        return report_name.casefold() == self.report.casefold() and needed <= set(fields)


MAPPINGS: tuple[ReportMapping, ...] = (
    ReportMapping(
        "bu_performance_revenue",
        "BU Performance",
        "revenue_by_business_unit",
        key=(("BusinessUnitId", "business_unit_id"),),
        measures=(("CompletedRevenue", "completed_revenue"),),
    ),
    ReportMapping(
        "bu_performance_conversion",
        "BU Performance",
        "job_conversion",
        key=(("BusinessUnitId", "business_unit_id"),),
        measures=(
            ("CompletedJobs", "completed_jobs"),
            ("Opportunities", "opportunities"),
            ("ConvertedJobs", "converted"),
            ("SalesOpportunities", "sales_opportunities"),
            ("ClosedOpportunities", "closed"),
        ),
    ),
    ReportMapping(
        "technician_performance",
        "Technician Performance",
        "technician_performance",
        key=(("TechnicianId", "technician_id"),),
        measures=(
            ("CompletedJobs", "completed_jobs"),
            ("Revenue", "revenue"),
            ("Opportunities", "opportunities"),
            ("ConvertedJobs", "converted"),
        ),
    ),
    ReportMapping(
        "call_booking",
        "Call Booking",
        "call_booking",
        key=(),
        measures=(
            ("InboundCalls", "inbound_calls"),
            ("BookableCalls", "bookable_calls"),
            ("BookedCalls", "booked_calls"),
        ),
    ),
    ReportMapping(
        "collections",
        "Collections",
        "collections",
        key=(),
        measures=(("Payments", "payments"), ("Collected", "collected")),
    ),
)


@dataclass(frozen=True)
class Difference:
    key: dict[str, Any]
    field: str
    report: Decimal
    mart: Decimal

    def as_json(self) -> dict[str, Any]:
        return {**self.key, "field": self.field, "report": str(self.report), "mart": str(self.mart)}


@dataclass(frozen=True)
class Reconciliation:
    mapping: ReportMapping
    period: tuple[date, date]
    cells: int  # cells compared
    differences: tuple[Difference, ...]
    mart_built: bool = True  # False: the tenant's mart was never built, so nothing was compared

    @property
    def passed(self) -> bool:
        return self.mart_built and not self.differences


def _number(value: Any, where: str) -> Decimal:
    """A report or mart value as an exact number (a JSON float's shortest text is its decimal)."""
    if value is None:
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a number") from None


def _key_value(value: Any) -> Any:
    """Report key values arrive as JSON numbers (ids) or text; mart keys are integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def mart_built(conn: sa.Connection, mapping: ReportMapping, tenant_id: int) -> bool:
    """Whether the tenant's build has written the mapping's mart (its build state is recorded)."""
    if not sa.inspect(conn).has_table(transform_state_table.name):
        return False
    state = transform_state_table
    built = sa.select(state.c.tenant_id).where(
        state.c.tenant_id == tenant_id, state.c.table_name == mapping.mart_table_name
    )
    return conn.execute(built).first() is not None


def mart_sums(
    conn: sa.Connection, mapping: ReportMapping, tenant_id: int, period: tuple[date, date]
) -> dict[Key, dict]:
    """The mart's measures summed per key over the period's days."""
    table = mart_table(MARTS_BY_NAME[mapping.mart])
    keys = [table.c[column] for _, column in mapping.key]
    sums = [sa.func.sum(table.c[column]).label(column) for _, column in mapping.measures]
    query = (
        sa.select(*keys, *sums)
        .where(
            table.c.tenant_id == tenant_id,
            table.c.day >= as_day(sa.literal(period[0], sa.Date())),
            table.c.day <= as_day(sa.literal(period[1], sa.Date())),
        )
        .group_by(*keys)
    )
    result: dict[Key, dict] = {}
    for row in conn.execute(query).mappings():
        key = tuple(row[column] for _, column in mapping.key)
        result[key] = {column: row[column] for _, column in mapping.measures}
    return result


def reconcile(
    conn: sa.Connection,
    mapping: ReportMapping,
    tenant_id: int,
    period: tuple[date, date],
    report_rows: Sequence[Mapping[str, Any]],
) -> Reconciliation:
    """Compare the report's rows of one period with the mart's rows of the same days (nothing is
    compared when the tenant's mart was never built: ``mart_built`` is then False)."""
    if not mart_built(conn, mapping, tenant_id):
        return Reconciliation(mapping, period, 0, (), mart_built=False)
    reported: dict[Key, dict[str, Decimal]] = {}
    for row in report_rows:
        key = tuple(_key_value(row[field]) for field, _ in mapping.key)
        totals = reported.setdefault(key, {field: Decimal(0) for field, _ in mapping.measures})
        for field, _ in mapping.measures:
            totals[field] += _number(row[field], f"report field {field}")
    computed = mart_sums(conn, mapping, tenant_id, period)
    differences = []
    cells = 0
    for key in sorted(set(reported) | set(computed), key=repr):
        for field, column in mapping.measures:
            cells += 1
            ours = _number(computed.get(key, {}).get(column), f"mart column {column}")
            theirs = reported.get(key, {}).get(field, Decimal(0))
            if ours != theirs:
                named = {column_name: value for (_, column_name), value in zip(mapping.key, key, strict=True)}
                differences.append(Difference(named, field, theirs, ours))
    return Reconciliation(mapping, period, cells, tuple(differences))
