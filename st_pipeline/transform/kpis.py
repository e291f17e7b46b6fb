"""Tenant-level headline figures read from the marts (for the demo and `st-pipeline kpis`).

Each figure is a ``Kpi``: a value (an exact ``Decimal`` amount, a ``Decimal`` ratio or None when
there is nothing to divide by), its unit and a line of detail. The figures cover every day the
marts hold. Amounts per job are cut to 4 decimals, as the marts cut them; ratios are fractions
(0.25 is 25%) rounded to 6 decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from st_pipeline.transform.dashboard import PROMPT_CASH_DAYS
from st_pipeline.transform.frames import built_table
from st_pipeline.transform.marts import MARTS_BY_NAME
from st_pipeline.transform.spec import ColumnType
from st_pipeline.transform.types import MONEY_SCALE

MONEY = "money"  # an amount in the tenant's currency, exact to 4 decimals
RATIO = "ratio"  # a fraction: 0.25 is 25%
COUNT = "count"  # a whole number

_CENT_FRACTION = Decimal(1).scaleb(-MONEY_SCALE)
_RATIO_PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class Kpi:
    """One headline figure: ``key`` for scripts, ``label`` for people, the value and what it is made of."""

    key: str
    label: str
    value: Decimal | int | None  # None: nothing to divide by
    unit: str  # MONEY, RATIO or COUNT
    detail: str = ""

    def text(self) -> str:
        """The value for people: 12,345.67 or 45.2%, ``n/a`` when there is none."""
        if self.value is None:
            return "n/a"
        if self.unit == RATIO:
            return f"{100 * self.value:.1f}%"
        if self.unit == COUNT:
            return f"{self.value:,}"
        return f"{self.value:,.2f}"


def _sums(
    conn: sa.Connection, mart: str, tenant_id: int, *columns: str, where: ColumnElement[bool] | None = None
) -> list[Decimal | int]:
    """The tenant's sums of some columns of a mart (0 where it has no rows), of the rows ``where`` says."""
    table = built_table(conn, f"mart_{mart}").table
    query = sa.select(*(sa.func.sum(table.c[c]) for c in columns)).where(table.c.tenant_id == tenant_id)
    row = conn.execute(query if where is None else query.where(where)).one()
    zero = {c: Decimal(0) if MARTS_BY_NAME[mart].column(c).type is ColumnType.MONEY else 0 for c in columns}
    return [zero[c] if value is None else value for c, value in zip(columns, row, strict=True)]


def _ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    return (Decimal(numerator) / Decimal(denominator)).quantize(_RATIO_PLACES) if denominator else None


def _per(amount: Decimal | int, count: Decimal | int) -> Decimal | None:
    return (Decimal(amount) / count).quantize(_CENT_FRACTION, rounding=ROUND_DOWN) if count else None


def _money(amount: Decimal | int) -> str:
    return f"{amount:,.2f}"


def headline_kpis(conn: sa.Connection, tenant_id: int) -> list[Kpi]:
    """Revenue, sales, average tickets, conversion, close, membership and booking rates, collections
    (and the share collected within a week), receivables (open, credits, net), gross margin, marketing
    return on spend, missed revenue, capacity use, active members and recurring-service completion. A
    mart not built yet raises ``frames.TableNotBuiltError``."""
    (revenue,) = _sums(conn, "revenue_by_business_unit", tenant_id, "completed_revenue")
    by_unit = built_table(conn, "mart_revenue_by_business_unit").table
    units = conn.execute(
        sa.select(sa.func.count(sa.distinct(by_unit.c.business_unit_id))).where(
            by_unit.c.tenant_id == tenant_id, by_unit.c.completed_revenue > 0
        )
    ).scalar_one()
    sold, estimates = _sums(conn, "sales", tenant_id, "sales", "sold_estimates")
    completed, job_revenue, with_revenue, converted, opportunities, closed, sales_opportunities = _sums(
        conn,
        "job_conversion",
        tenant_id,
        "completed_jobs",
        "revenue",
        "jobs_with_revenue",
        "converted",
        "opportunities",
        "closed",
        "sales_opportunities",
    )
    sold_same_day, membership_opportunities = _sums(
        conn, "membership_conversion", tenant_id, "sold_same_day", "opportunities"
    )
    booked, bookable = _sums(conn, "call_booking", tenant_id, "booked_calls", "bookable_calls")
    collected, payments = _sums(conn, "collections", tenant_id, "collected", "payments")
    prompt, invoiced = _sums(conn, "cash", tenant_id, "collected_within_7_days", "invoiced")
    open_balance, open_invoices, credits, credit_invoices, net = _sums(
        conn,
        "accounts_receivable",
        tenant_id,
        "open_balance",
        "open_invoices",
        "credits",
        "credit_invoices",
        "net_receivables",
    )
    costed_revenue, margin = _sums(conn, "job_costing", tenant_id, "revenue", "gross_margin")
    campaigns = built_table(conn, "mart_marketing_roi").table
    campaign_revenue, cost = _sums(
        conn, "marketing_roi", tenant_id, "revenue", "cost", where=campaigns.c.campaign_id.is_not(None)
    )
    missed, unbooked, unconverted, canceled = _sums(
        conn, "missed_revenue", tenant_id, "missed_revenue", "unbooked_calls", "unconverted_jobs", "canceled_jobs"
    )
    booked_minutes, available_minutes = _sums(
        conn, "technician_capacity", tenant_id, "booked_minutes", "available_minutes"
    )
    new_members, events_won, events_due = _sums(
        conn, "membership_health", tenant_id, "new_memberships", "service_events_won", "service_events_due"
    )
    health = built_table(conn, "mart_membership_health").table
    latest = conn.execute(
        sa.select(health.c.day, health.c.active_members)
        .where(health.c.tenant_id == tenant_id)
        .order_by(health.c.day.desc())
        .limit(1)
    ).one_or_none()
    return [
        Kpi("completed_revenue", "completed revenue", revenue, MONEY, f"in {units} business units"),
        Kpi("sales", "sales (sold estimates)", sold, MONEY, f"{estimates} sold estimates"),
        Kpi(
            "average_ticket",
            "average ticket",
            _per(job_revenue, completed),
            MONEY,
            f"revenue {_money(job_revenue)} over {completed} completed jobs",
        ),
        Kpi(
            "average_ticket_jobs_with_revenue",
            "average ticket (jobs with revenue)",
            _per(job_revenue, with_revenue),
            MONEY,
            f"over {with_revenue} jobs with revenue",
        ),
        Kpi(
            "conversion_rate",
            "conversion rate",
            _ratio(converted, opportunities),
            RATIO,
            f"{converted} of {opportunities} opportunities",
        ),
        Kpi(
            "close_rate",
            "close rate",
            _ratio(closed, sales_opportunities),
            RATIO,
            f"{closed} of {sales_opportunities} sales opportunities",
        ),
        Kpi(
            "membership_conversion_same_day",
            "membership conversion (same day)",
            _ratio(sold_same_day, membership_opportunities),
            RATIO,
            f"{sold_same_day} of {membership_opportunities} opportunities",
        ),
        Kpi(
            "call_booking_rate",
            "call booking rate",
            _ratio(booked, bookable),
            RATIO,
            f"{booked} of {bookable} bookable calls",
        ),
        Kpi("collected", "collected", collected, MONEY, f"{payments} payments"),
        Kpi(
            "collected_within_7_days",
            f"collected within {PROMPT_CASH_DAYS} days",
            _ratio(prompt, invoiced),
            RATIO,
            f"{_money(prompt)} of {_money(invoiced)} invoiced",
        ),
        Kpi("open_balance", "open balance (A/R)", open_balance, MONEY, f"{open_invoices} open invoices"),
        Kpi("credits", "credits", credits, MONEY, f"{credit_invoices} invoices with a credit balance"),
        Kpi("net_receivables", "net receivables", net, MONEY, "open balance + credits"),
        Kpi("gross_margin", "gross margin", margin, MONEY, f"on revenue {_money(costed_revenue)} (job costing)"),
        Kpi(
            "gross_margin_rate",
            "gross margin rate",
            _ratio(margin, costed_revenue),
            RATIO,
            "gross margin / revenue of completed jobs",
        ),
        Kpi(
            "marketing_return_on_spend",
            "marketing return on spend",
            _ratio(campaign_revenue - cost, cost),
            RATIO,
            f"(revenue {_money(campaign_revenue)} - cost {_money(cost)}) / cost, of campaigns",
        ),
        Kpi(
            "missed_revenue",
            "missed revenue",
            missed,
            MONEY,
            f"{unbooked} unbooked calls, {unconverted} unconverted and {canceled} canceled jobs",
        ),
        Kpi(
            "capacity_use",
            "capacity use",
            _ratio(booked_minutes, available_minutes),
            RATIO,
            f"{booked_minutes:,} booked of {available_minutes:,} available technician minutes",
        ),
        Kpi(
            "active_members",
            "active members",
            latest.active_members if latest is not None else 0,
            COUNT,
            f"at the end of {latest.day}, of {new_members} memberships sold" if latest else "no memberships",
        ),
        Kpi(
            "service_completion_rate",
            "recurring service completion",
            _ratio(events_won, events_due),
            RATIO,
            f"{events_won} of {events_due} recurring service events won",
        ),
    ]


def kpi_table(kpis: list[Kpi]) -> list[str]:
    """The figures as aligned lines: label, value, detail."""
    label_width = max((len(k.label) for k in kpis), default=0)
    value_width = max((len(k.text()) for k in kpis), default=0)
    return [f"{k.label:{label_width}}  {k.text():>{value_width}}  {k.detail}".rstrip() for k in kpis]
