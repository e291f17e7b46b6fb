"""Marketing ROI: calls, leads, jobs, revenue and cost per campaign and day."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from st_pipeline.transform.expressions import flag, live, money_per, month_day, ratio
from st_pipeline.transform.mart_parts import (
    DAY_COLUMN,
    INT,
    JOB_LINKS,
    JOB_READS,
    Link,
    M,
    Mart,
    R,
    Scope,
    col,
    hub_alias,
    job_facts,
    no_money,
    one,
    own,
    zero,
)

_MEASURES = ("calls", "booked_calls", "leads", "booked_jobs", "completed_jobs", "revenue", "cost")


def _row(entity: Any, day: Any, campaign: Any, **values: Any) -> list[Any]:
    """A facts row: the entity, day and campaign, then every measure (0 unless given)."""
    measures = [values.get(m, no_money() if m in ("revenue", "cost") else zero()).label(m) for m in _MEASURES]
    return [entity.label("entity_id"), day.label("day"), campaign.label("campaign_id"), *measures]


def _month_days() -> sa.Subquery:
    """The numbers 0 to 30: the days of a month, counted from its first."""
    return sa.union_all(*(sa.select(sa.literal(n, sa.Integer()).label("n")) for n in range(31))).subquery("days")


def _marketing_facts(scope: Scope) -> sa.Select[Any]:
    c, le, j, k = (
        hub_alias("calls", "c"),
        hub_alias("leads", "le"),
        hub_alias("jobs", "j"),
        hub_alias("campaign_costs", "k"),
    )
    f = job_facts(scope).subquery("f")
    calls = sa.select(
        *_row(
            c.c.id,
            scope.day(c.c.created_on),
            c.c.campaign_id,
            calls=one(),
            booked_calls=flag(c.c.call_type == "Booked"),
        )
    ).where(scope.tenant(c), live(c), c.c.direction == "Inbound", c.c.created_on.is_not(None), scope.chosen(c.c.id))
    leads = sa.select(*_row(le.c.id, scope.day(le.c.created_on), le.c.campaign_id, leads=one())).where(
        scope.tenant(le), live(le), le.c.created_on.is_not(None), scope.chosen(le.c.id)
    )
    booked = sa.select(*_row(j.c.id, scope.day(j.c.created_on), j.c.campaign_id, booked_jobs=one())).where(
        scope.tenant(j), live(j), j.c.created_on.is_not(None), scope.chosen(j.c.id)
    )
    completed = sa.select(*_row(f.c.job_id, f.c.day, f.c.campaign_id, completed_jobs=one(), revenue=f.c.revenue))
    days = _month_days()
    cost_day = month_day(k.c.year, k.c.month, days.c.n)
    costs = (
        sa.select(*_row(k.c.id, cost_day, k.c.campaign_id, cost=k.c.daily_cost))
        .select_from(k.join(days, sa.true()))
        .where(scope.tenant(k), k.c.deleted_at.is_(None), cost_day.is_not(None), scope.chosen(k.c.id))
    )
    return sa.select(sa.union_all(calls, leads, booked, completed, costs).subquery("marketing"))


MARKETING_ROI = Mart(
    "marketing_roi",
    "Marketing per day (the tenant's calendar) and campaign: inbound calls and booked calls (call creation day, "
    "the call's campaign), leads (lead creation day), booked jobs (job creation day, the job's campaign), completed "
    "jobs and their revenue (income items, job completion day), and cost (the campaign's daily cost on every day "
    "of the month it is given for). Cost per lead and per booked job, and return on spend = (revenue − cost) / "
    "cost. Rows without a campaign (campaign_id NULL) keep the unattributed numbers. Ads performance and "
    "attributed leads (marketingads reports) are not extracted.",
    group=(DAY_COLUMN, col("campaign_id", INT)),
    measures=(
        col("calls", INT),
        col("booked_calls", INT),
        col("leads", INT),
        col("booked_jobs", INT),
        col("completed_jobs", INT),
        col("revenue", M),
        col("cost", M),
    ),
    derived=(
        (col("cost_per_lead", M), lambda m: money_per(m["cost"], m["leads"])),
        (col("cost_per_booked_job", M), lambda m: money_per(m["cost"], m["booked_jobs"])),
        (col("return_on_spend", R), lambda m: ratio(m["revenue"] - m["cost"], m["cost"])),
    ),
    reads=(*JOB_READS, "hub_calls", "hub_leads", "hub_campaign_costs"),
    facts=_marketing_facts,
    links=(
        *JOB_LINKS,
        Link("hub_calls", own("calls")),
        Link("hub_leads", own("leads")),
        Link("hub_campaign_costs", own("campaign_costs")),
    ),
    headline=(("cost_last_30_days", "cost", 30), ("revenue_last_30_days", "revenue", 30)),
)
