"""Tenant-level KPI figures read from the marts (for the demo and `st-pipeline kpis`)."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from st_pipeline.transform.mart_build import mart_table
from st_pipeline.transform.marts import MARTS_BY_NAME


def _sum(conn: sa.Connection, mart: str, column: str, tenant_id: int) -> Decimal | int:
    table = mart_table(MARTS_BY_NAME[mart])
    value = conn.execute(sa.select(sa.func.sum(table.c[column])).where(table.c.tenant_id == tenant_id)).scalar()
    return value if value is not None else 0


def _rate(numerator: Decimal | int, denominator: Decimal | int) -> str:
    return f"{100 * numerator / denominator:.1f}%" if denominator else "n/a"


def headline_kpis(conn: sa.Connection, tenant_id: int) -> dict[str, str]:
    """Completed revenue, sales, average ticket, conversion, close and booking rates, collections, A/R."""
    revenue = _sum(conn, "revenue_by_business_unit", "completed_revenue", tenant_id)
    completed = _sum(conn, "job_conversion", "completed_jobs", tenant_id)
    invoiced = _sum(conn, "job_conversion", "invoiced_subtotal", tenant_id)
    by_unit = mart_table(MARTS_BY_NAME["revenue_by_business_unit"])
    units = conn.execute(
        sa.select(sa.func.count(sa.distinct(by_unit.c.business_unit_id))).where(
            by_unit.c.tenant_id == tenant_id, by_unit.c.completed_revenue > 0
        )
    ).scalar_one()
    return {
        "completed revenue": f"{revenue:,.2f} in {units} business units",
        "sales (sold estimates)": f"{_sum(conn, 'sales', 'sales', tenant_id):,.2f}",
        "average ticket": f"{(invoiced / completed if completed else 0):,.2f} over {completed} completed jobs",
        "conversion rate": _rate(
            _sum(conn, "job_conversion", "converted", tenant_id),
            _sum(conn, "job_conversion", "opportunities", tenant_id),
        ),
        "close rate": _rate(
            _sum(conn, "job_conversion", "closed", tenant_id),
            _sum(conn, "job_conversion", "sales_opportunities", tenant_id),
        ),
        "membership conversion (same day)": _rate(
            _sum(conn, "membership_conversion", "sold_same_day", tenant_id),
            _sum(conn, "membership_conversion", "opportunities", tenant_id),
        ),
        "call booking rate": _rate(
            _sum(conn, "call_booking", "booked_calls", tenant_id),
            _sum(conn, "call_booking", "bookable_calls", tenant_id),
        ),
        "collected": f"{_sum(conn, 'collections', 'collected', tenant_id):,.2f}",
        "accounts receivable": f"{_sum(conn, 'accounts_receivable', 'open_balance', tenant_id):,.2f}",
    }
