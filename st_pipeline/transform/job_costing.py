"""Gross margin and job costing: what a completed job earned against what it cost."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from st_pipeline.transform.expressions import live, ratio
from st_pipeline.transform.mart_parts import (
    BU_COLUMN,
    DAY_COLUMN,
    INT,
    JOB_LINKS,
    JOB_READS,
    Expression,
    Link,
    M,
    Mart,
    R,
    Scope,
    col,
    hub_alias,
    job_facts,
    one,
    own,
)


def _total(scope: Scope, table: sa.FromClause, amount: str, job_id: Expression, *where: Any) -> Expression:
    """A job's sum of ``amount`` in ``table`` (rows not deleted), 0 without any."""
    total = sa.select(sa.func.sum(table.c[amount])).where(
        scope.tenant(table), table.c.job_id == job_id, table.c.deleted_at.is_(None), *where
    )
    return sa.func.coalesce(total.scalar_subquery(), 0)


def _costing_facts(scope: Scope) -> sa.Select[Any]:
    f = job_facts(scope).subquery("f")
    pay, po, bill = hub_alias("gross_pay_items", "g"), hub_alias("purchase_orders", "po"), hub_alias("ap_bills", "b")
    it, i = hub_alias("invoice_items", "it"), hub_alias("invoices", "i")
    materials = (
        sa.select(sa.func.sum(it.c.total_cost))
        .select_from(it.join(i, sa.and_(i.c.tenant_id == it.c.tenant_id, i.c.id == it.c.invoice_id)))
        .where(
            scope.tenant(it),
            i.c.job_id == f.c.job_id,
            live(i),
            i.c.adjustment_to_id.is_(None),
            it.c.deleted_at.is_(None),
        )
        .scalar_subquery()
    )
    labour = _total(scope, pay, "amount", f.c.job_id, sa.func.coalesce(pay.c.active, sa.true()))
    materials_cost = sa.func.coalesce(materials, 0)
    other = _total(scope, bill, "bill_amount", f.c.job_id, bill.c.purchase_order_id.is_(None))
    cost = labour + materials_cost + other
    return sa.select(
        f.c.job_id.label("entity_id"),
        f.c.day,
        f.c.business_unit_id,
        one().label("completed_jobs"),
        f.c.revenue.label("revenue"),
        labour.label("labour_cost"),
        materials_cost.label("materials_cost"),
        other.label("other_bill_cost"),
        _total(scope, po, "total", f.c.job_id, sa.func.coalesce(po.c.status, "") != "Canceled").label("purchased"),
        sa.case((f.c.warranty_id.is_not(None), cost), else_=0).label("warranty_cost"),
    )


def _margin(m: Any) -> Expression:
    return m["revenue"] - m["labour_cost"] - m["materials_cost"] - m["other_bill_cost"]


JOB_COSTING = Mart(
    "job_costing",
    "Gross margin of completed jobs per day (job completion) and business unit (the job's). Revenue: the "
    "job's income items (as in job_conversion). Costs: labour (the job's gross pay items: time worked and "
    "bonuses), materials (the job's invoice items at cost) and vendor bills for the job that are not for a "
    "purchase order. Purchase orders buy the materials already costed on the invoice: their totals (tax and "
    "shipping included, canceled ones left out) are shown as purchased, not subtracted again. Gross margin = "
    "revenue − labour − materials − other bills, and its share of revenue; warranty cost: the costs of "
    "warranty jobs (a warranty id), and its share of revenue.",
    group=(DAY_COLUMN, BU_COLUMN),
    measures=(
        col("completed_jobs", INT),
        col("revenue", M),
        col("labour_cost", M),
        col("materials_cost", M),
        col("other_bill_cost", M),
        col("purchased", M),
        col("warranty_cost", M),
    ),
    derived=(
        (col("gross_margin", M), _margin),
        (col("gross_margin_rate", R), lambda m: ratio(_margin(m), m["revenue"])),
        (col("warranty_cost_share", R), lambda m: ratio(m["warranty_cost"], m["revenue"])),
    ),
    reads=(*JOB_READS, "hub_gross_pay_items", "hub_purchase_orders", "hub_ap_bills"),
    facts=_costing_facts,
    links=(
        *JOB_LINKS,
        Link("hub_gross_pay_items", own("gross_pay_items", "job_id")),
        Link("hub_purchase_orders", own("purchase_orders", "job_id")),
        Link("hub_ap_bills", own("ap_bills", "job_id")),
    ),
    headline=(("gross_margin_last_30_days", "gross_margin", 30),),
)
