"""The dashboard's other KPI families, as marts: cash and missed revenue.

Like the marts in ``marts``, each is kept as facts per entity and summed per day of the tenant's
calendar, so an incremental build equals a full one. What the extracted datasets cannot say is
stated in each mart's description and in the README's *Metrics*.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from st_pipeline.transform.expressions import days_between, flag, live, money_per, ratio
from st_pipeline.transform.mart_parts import (
    DAY_COLUMN,
    INT,
    JOB_LINKS,
    JOB_READS,
    TRAILING_DAYS,
    Expression,
    Link,
    M,
    Mart,
    R,
    Scope,
    col,
    exploded,
    hub_alias,
    is_converted,
    is_opportunity,
    job_facts,
    no_money,
    one,
    own,
    rate,
    zero,
)

# A payment counts as prompt cash when it comes within this many days of the invoice date.
PROMPT_CASH_DAYS = 7


def _cash_facts(scope: Scope) -> sa.Select[Any]:
    """One row per invoice (not an adjustment, total above zero), by invoice day: what was collected on
    it within a week, and for a paid one the days until its last payment."""
    i, pa, p = hub_alias("invoices", "i"), hub_alias("payment_applications", "pa"), hub_alias("payments", "p")
    invoice_day = scope.day(i.c.invoice_date)
    payment_day = scope.day(p.c.payment_date)
    applied = (
        sa.select()
        .select_from(pa.join(p, sa.and_(p.c.tenant_id == pa.c.tenant_id, p.c.id == pa.c.payment_id)))
        .where(scope.tenant(pa), pa.c.invoice_id == i.c.id, live(p), p.c.payment_date.is_not(None))
    )
    prompt = applied.add_columns(sa.func.sum(pa.c.applied_amount)).where(
        days_between(payment_day, invoice_day) <= PROMPT_CASH_DAYS
    )
    last_payment = applied.add_columns(sa.func.max(payment_day)).scalar_subquery()
    paid = sa.and_(i.c.balance == 0, last_payment.is_not(None))
    return sa.select(
        i.c.id.label("entity_id"),
        invoice_day.label("day"),
        one().label("invoices"),
        i.c.total.label("invoiced"),
        sa.func.coalesce(prompt.scalar_subquery(), 0).label("collected_within_7_days"),
        flag(paid).label("paid_invoices"),
        sa.case((paid, days_between(last_payment, invoice_day)), else_=0).label("days_to_cash"),
    ).where(
        scope.tenant(i),
        live(i),
        i.c.adjustment_to_id.is_(None),
        i.c.total > 0,
        i.c.invoice_date.is_not(None),
        scope.chosen(i.c.id),
    )


def _missed_facts(scope: Scope) -> sa.Select[Any]:
    """Per day: unbooked calls, completed jobs not converted, canceled jobs, and the completed jobs'
    revenue (the basis of the trailing average ticket). Entities are calls and jobs (ids may meet:
    recomputing both kinds for one id is harmless)."""
    c, j, f = hub_alias("calls", "c"), hub_alias("jobs", "j"), job_facts(scope).subquery("f")
    calls = sa.select(
        c.c.id.label("entity_id"),
        scope.day(c.c.created_on).label("day"),
        one().label("unbooked_calls"),
        zero().label("completed_jobs"),
        zero().label("unconverted_jobs"),
        zero().label("canceled_jobs"),
        zero().label("jobs_with_revenue"),
        no_money().label("revenue"),
    ).where(
        scope.tenant(c),
        live(c),
        c.c.direction == "Inbound",
        c.c.call_type == "Unbooked",
        c.c.created_on.is_not(None),
        scope.chosen(c.c.id),
    )
    completed = sa.select(
        f.c.job_id,
        f.c.day,
        zero(),
        one(),
        flag(sa.and_(is_opportunity(f), sa.not_(is_converted(f)))),
        zero(),
        flag(f.c.revenue > 0),
        f.c.revenue,
    )
    log = hub_alias("job_canceled_logs", "l")
    logged = (
        sa.select(sa.func.max(log.c.created_on))
        .where(scope.tenant(log), log.c.job_id == j.c.id, log.c.deleted_at.is_(None))
        .scalar_subquery()
    )
    canceled_on = sa.func.coalesce(logged, j.c.modified_on)
    canceled = sa.select(j.c.id, scope.day(canceled_on), zero(), zero(), zero(), one(), zero(), no_money()).where(
        scope.tenant(j), live(j), j.c.job_status == "Canceled", canceled_on.is_not(None), scope.chosen(j.c.id)
    )
    return sa.select(sa.union_all(calls, completed, canceled).subquery("missed"))


def _average_ticket(window: Mapping[str, Expression]) -> Expression:
    """The trailing average ticket: the window's revenue per job with revenue."""
    return money_per(window["revenue"], window["jobs_with_revenue"])


def _missed(*counts: str) -> Any:
    """The row's ``counts`` valued at the trailing average ticket."""

    def compute(row: Mapping[str, Expression], window: Mapping[str, Expression]) -> Expression:
        lost = sum((row[count] for count in counts[1:]), row[counts[0]])
        return lost * _average_ticket(window)

    return compute


DASHBOARD_MARTS: tuple[Mart, ...] = (
    Mart(
        "cash",
        "Cash per invoice day (the tenant's calendar): invoices (not adjustments, total above zero), their "
        f"total, what was collected on them within {PROMPT_CASH_DAYS} days of the invoice day (payments applied, "
        "by payment day) and its share of the total; paid invoices (balance 0) and the average days from the "
        "invoice day to the last payment applied (days to cash).",
        group=(DAY_COLUMN,),
        measures=(
            col("invoices", INT),
            col("invoiced", M),
            col("collected_within_7_days", M),
            col("paid_invoices", INT),
            col("days_to_cash", INT),
        ),
        derived=(
            (col("share_collected_within_7_days", R), rate("collected_within_7_days", "invoiced")),
            (col("average_days_to_cash", R), lambda m: ratio(m["days_to_cash"], m["paid_invoices"])),
        ),
        reads=("hub_invoices", "hub_payments", "hub_payment_applications"),
        facts=_cash_facts,
        links=(
            Link("hub_invoices", own("invoices")),
            Link("hub_payments", exploded("payment_applications", "payment_id", "invoice_id")),
        ),
        headline=(("invoiced_last_30_days", "invoiced", 30),),
    ),
    Mart(
        "missed_revenue",
        "Missed revenue per day (the tenant's calendar), as the dashboard estimates it: unbooked inbound calls "
        "(call creation day), completed jobs that were opportunities but did not convert (job completion day) "
        "and canceled jobs (the day of the job's cancellation log, else the day the job last changed), each "
        "valued at the trailing "
        f"{TRAILING_DAYS}-day average ticket (revenue of the jobs completed on the day and the {TRAILING_DAYS - 1} "
        "days before, per job with revenue). NULL where the window has no job with revenue.",
        group=(DAY_COLUMN,),
        measures=(
            col("unbooked_calls", INT),
            col("completed_jobs", INT),
            col("unconverted_jobs", INT),
            col("canceled_jobs", INT),
            col("jobs_with_revenue", INT),
            col("revenue", M),
        ),
        trailing=(
            (
                col("trailing_average_ticket", M),
                lambda row, window: _average_ticket(window),
            ),
            (col("missed_call_revenue", M), _missed("unbooked_calls")),
            (col("missed_opportunity_revenue", M), _missed("unconverted_jobs")),
            (col("missed_canceled_revenue", M), _missed("canceled_jobs")),
            (col("missed_revenue", M), _missed("unbooked_calls", "unconverted_jobs", "canceled_jobs")),
        ),
        reads=(*JOB_READS, "hub_calls", "hub_job_canceled_logs"),
        facts=_missed_facts,
        links=(
            *JOB_LINKS,
            Link("hub_calls", own("calls")),
            Link("hub_job_canceled_logs", own("job_canceled_logs", "job_id")),
        ),
        headline=(("missed_revenue_last_30_days", "missed_revenue", 30),),
    ),
)
