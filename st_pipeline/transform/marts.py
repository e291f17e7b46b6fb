"""KPI marts: per tenant and day, computed inside the warehouse from the hub tables.

Most marts are sums. Each is kept in two tables: ``mart_<name>__facts``, one row per
contribution of one entity (an invoice, a job, a call, …) to one mart row, and ``mart_<name>``,
the facts summed per key plus the rates and averages derived from the sums. A build after a
change recomputes the facts of the affected entities only (those whose hub rows changed, and
those that point at or are pointed at by changed rows: the jobs of a changed invoice or job type,
the invoices of a changed job, …), then re-sums just the mart rows whose facts moved. So a 1%
change costs about 1% of a full build, and gives the same table. A mart whose facts depend on the
build day (receivables by age) is rebuilt in full by the first build of each day.

The definitions follow how ServiceTitan computes each number (see the README's "Metrics"); every
mart's description states its date basis. Days are the tenant's calendar days: in its time zone
(``Scope.time_zone``, the registry's; UTC when none is set), while hub timestamps stay UTC. Records that are deleted
(``deleted_at``) or inactive (``active`` false: voided, deactivated) never count. The queries are
SQLAlchemy Core; what the two warehouses spell differently is in ``expressions``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from st_pipeline.transform.dashboard import DASHBOARD_MARTS
from st_pipeline.transform.expressions import days_between, flag, live, money_per, money_share
from st_pipeline.transform.job_costing import JOB_COSTING
from st_pipeline.transform.marketing import MARKETING_ROI
from st_pipeline.transform.mart_parts import (
    BU_COLUMN,
    DAY,
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
    T,
    col,
    hub_alias,
    income_items,
    is_closed,
    is_completed,
    is_converted,
    is_opportunity,
    is_sales_opportunity,
    job_facts,
    one,
    own,
    pointing,
    rate,
    through,
)
from st_pipeline.transform.membership_health import MEMBERSHIP_HEALTH
from st_pipeline.transform.operations import TECHNICIAN_CAPACITY

# Job completion → membership sale: the "within 30 days" variant of membership conversion.
MEMBERSHIP_FOLLOW_UP_DAYS = 30
AGING_BUCKETS = ((0, 30, "0-30"), (31, 60, "31-60"), (61, 90, "61-90"), (91, None, "91+"))


def _revenue_facts(scope: Scope) -> sa.Select[Any]:
    it, i, items, counted = income_items(scope, "rv")
    j = hub_alias("jobs", "j")
    chosen = (*counted, scope.chosen(i.c.id))
    completed = (
        sa.select(
            sa.literal("completed").label("kind"),
            i.c.id.label("invoice_id"),
            scope.day(j.c.completed_on).label("day"),
            sa.func.coalesce(it.c.business_unit_id, j.c.business_unit_id).label("business_unit_id"),
            it.c.total.label("amount"),
        )
        .select_from(items.join(j, sa.and_(j.c.tenant_id == i.c.tenant_id, j.c.id == i.c.job_id)))
        .where(*chosen, i.c.adjustment_to_id.is_(None), is_completed(j))
    )
    adjustment_or_non_job = (
        sa.select(
            sa.case((i.c.adjustment_to_id.is_not(None), sa.literal("adjustment")), else_=sa.literal("non_job")),
            i.c.id,
            scope.day(i.c.invoice_date),
            sa.func.coalesce(it.c.business_unit_id, i.c.business_unit_id),
            it.c.total,
        )
        .select_from(items)
        .where(*chosen, sa.or_(i.c.adjustment_to_id.is_not(None), i.c.job_id.is_(None)), i.c.invoice_date.is_not(None))
    )
    revenue = sa.union_all(completed, adjustment_or_non_job).subquery("revenue")

    def of_kind(kind: str) -> Expression:
        return sa.func.sum(sa.case((revenue.c.kind == kind, revenue.c.amount), else_=0))

    return sa.select(
        revenue.c.invoice_id.label("entity_id"),
        revenue.c.day,
        revenue.c.business_unit_id,
        of_kind("completed").label("completed_revenue"),
        of_kind("non_job").label("non_job_revenue"),
        of_kind("adjustment").label("adjustment_revenue"),
    ).group_by(revenue.c.invoice_id, revenue.c.day, revenue.c.business_unit_id)


def _sales_facts(scope: Scope) -> sa.Select[Any]:
    e = hub_alias("estimates", "e")
    return sa.select(
        e.c.id.label("entity_id"),
        scope.day(e.c.sold_on).label("day"),
        e.c.business_unit_id,
        one().label("sold_estimates"),
        e.c.sub_total.label("sales"),
    ).where(scope.tenant(e), live(e), e.c.status == "Sold", e.c.sold_on.is_not(None), scope.chosen(e.c.id))


def _conversion_facts(scope: Scope) -> sa.Select[Any]:
    f = job_facts(scope).subquery("f")
    return sa.select(
        f.c.job_id.label("entity_id"),
        f.c.day,
        f.c.business_unit_id,
        one().label("completed_jobs"),
        flag(is_opportunity(f)).label("opportunities"),
        flag(is_converted(f)).label("converted"),
        f.c.invoiced.label("invoiced_subtotal"),
        f.c.revenue.label("revenue"),
        flag(f.c.revenue > 0).label("jobs_with_revenue"),
        flag(is_sales_opportunity(f)).label("sales_opportunities"),
        flag(is_closed(f)).label("closed"),
    )


def _job_credits(scope: Scope) -> sa.Subquery:
    """Who is credited with each job, and with what share (percent): the technicians with a split
    above zero (``payroll/jobs/splits``, summed per technician); a job without any split record
    falls back to its actively assigned technicians, in equal shares (``share`` NULL, ``shared_by`` them)."""
    s, aa, other = (
        hub_alias("job_splits", "s"),
        hub_alias("appointment_assignments", "aa"),
        hub_alias("job_splits", "s2"),
    )
    by_split = (
        sa.select(
            s.c.job_id,
            s.c.technician_id,
            sa.func.sum(s.c.split).label("share"),
            sa.literal(1, sa.BigInteger()).label("shared_by"),
        )
        .where(scope.tenant(s), live(s), s.c.technician_id.is_not(None), s.c.split > 0, scope.chosen(s.c.job_id))
        .group_by(s.c.job_id, s.c.technician_id)
    )
    assigned = (
        sa.select(aa.c.job_id, aa.c.technician_id)
        .distinct()
        .where(
            scope.tenant(aa),
            live(aa),
            aa.c.technician_id.is_not(None),
            scope.chosen(aa.c.job_id),
            ~sa.exists().where(scope.tenant(other), live(other), other.c.job_id == aa.c.job_id),
        )
        .subquery("assigned")
    )
    peers = assigned.alias("peers")
    shared_by = (
        sa.select(sa.func.count()).select_from(peers).where(peers.c.job_id == assigned.c.job_id).scalar_subquery()
    )
    by_assignment = sa.select(
        assigned.c.job_id, assigned.c.technician_id, sa.null().label("share"), shared_by.label("shared_by")
    )
    return sa.union_all(by_split, by_assignment).subquery("credit")


def _technician_facts(scope: Scope) -> sa.Select[Any]:
    f, credit = job_facts(scope).subquery("f"), _job_credits(scope)

    def weighted(amount: Expression) -> Expression:
        return sa.case(
            (credit.c.share.is_(None), money_per(amount, credit.c.shared_by)), else_=money_share(amount, credit.c.share)
        )

    return sa.select(
        f.c.job_id.label("entity_id"),
        f.c.day,
        credit.c.technician_id,
        f.c.business_unit_id,
        one().label("completed_jobs"),
        flag(is_opportunity(f)).label("opportunities"),
        flag(is_converted(f)).label("converted"),
        flag(is_sales_opportunity(f)).label("sales_opportunities"),
        flag(is_closed(f)).label("closed"),
        weighted(f.c.revenue).label("revenue"),
        weighted(f.c.sold).label("sold_on_jobs"),
        f.c.revenue.label("revenue_unweighted"),
        f.c.sold.label("sold_on_jobs_unweighted"),
    ).select_from(f.join(credit, credit.c.job_id == f.c.job_id))


def _membership_facts(scope: Scope) -> sa.Select[Any]:
    """Two opportunities per completed job: at its location, and for its customer (any location)."""
    j, m = hub_alias("jobs", "j"), hub_alias("memberships", "m")
    f = (
        sa.select(j.c.id.label("job_id"), j.c.location_id, j.c.customer_id, scope.day(j.c.completed_on).label("day"))
        .where(scope.tenant(j), is_completed(j), scope.chosen(j.c.id))
        .subquery("f")
    )
    starts = scope.day(m.c.valid_from)
    # In force on the job's day: started before it, not yet ended (its ``to`` day is its last day in
    # force) and not canceled by then (the cancellation day is no longer in force; a Canceled
    # membership without a cancellation date never counts as in force).
    in_force = (
        starts < f.c.day,
        sa.or_(m.c.valid_to.is_(None), scope.day(m.c.valid_to) >= f.c.day),
        sa.or_(
            sa.func.coalesce(m.c.status, "") != "Canceled",
            sa.and_(m.c.cancellation_date.is_not(None), scope.day(m.c.cancellation_date) > f.c.day),
        ),
    )

    def holder(column: str) -> tuple[ColumnElement[bool], ...]:
        return (scope.tenant(m), live(m), m.c[column] == f.c[column])

    def sold_within(column: str, days: int) -> Expression:
        return flag(sa.exists().where(*holder(column), starts >= f.c.day, days_between(starts, f.c.day) <= days))

    flags = sa.select(
        f.c.job_id,
        f.c.day,
        flag(sa.and_(f.c.location_id.is_not(None), ~sa.exists().where(*holder("location_id"), *in_force))).label("lo"),
        sold_within("location_id", 0).label("l0"),
        sold_within("location_id", MEMBERSHIP_FOLLOW_UP_DAYS).label("l30"),
        flag(sa.and_(f.c.customer_id.is_not(None), ~sa.exists().where(*holder("customer_id"), *in_force))).label("co"),
        sold_within("customer_id", 0).label("c0"),
        sold_within("customer_id", MEMBERSHIP_FOLLOW_UP_DAYS).label("c30"),
    ).subquery("flags")
    g = flags.c
    return sa.select(
        g.job_id.label("entity_id"),
        g.day,
        g.lo.label("opportunities"),
        (g.lo * g.l0).label("sold_same_day"),
        (g.lo * g.l30).label("sold_within_30_days"),
        g.co.label("customer_opportunities"),
        (g.co * g.c0).label("customer_sold_same_day"),
        (g.co * g.c30).label("customer_sold_within_30_days"),
    ).where(sa.or_(g.lo == 1, g.co == 1))


def _calls_facts(scope: Scope) -> sa.Select[Any]:
    c = hub_alias("calls", "c")
    return sa.select(
        c.c.id.label("entity_id"),
        scope.day(c.c.created_on).label("day"),
        one().label("inbound_calls"),
        flag(c.c.call_type.in_(("Booked", "Unbooked"))).label("bookable_calls"),
        flag(c.c.call_type == "Booked").label("booked_calls"),
        flag(c.c.call_type == "Abandoned").label("abandoned_calls"),
    ).where(scope.tenant(c), live(c), c.c.direction == "Inbound", c.c.created_on.is_not(None), scope.chosen(c.c.id))


def _collections_facts(scope: Scope) -> sa.Select[Any]:
    p = hub_alias("payments", "p")
    return sa.select(
        p.c.id.label("entity_id"),
        scope.day(p.c.payment_date).label("day"),
        one().label("payments"),
        p.c.total.label("collected"),
    ).where(scope.tenant(p), live(p), p.c.payment_date.is_not(None), scope.chosen(p.c.id))


def _receivables_facts(scope: Scope) -> sa.Select[Any]:
    i = hub_alias("invoices", "i")
    as_of = scope.build_day()
    age = days_between(as_of, scope.day(i.c.invoice_date))
    bucket = sa.case(
        *((age <= high, sa.literal(label)) for _low, high, label in AGING_BUCKETS if high is not None),
        else_=sa.literal(AGING_BUCKETS[-1][2]),
    )
    owed, credit = i.c.balance > 0, i.c.balance < 0
    return sa.select(
        i.c.id.label("entity_id"),
        as_of.label("as_of"),
        bucket.label("aging_bucket"),
        flag(owed).label("open_invoices"),
        sa.case((owed, i.c.balance), else_=0).label("open_balance"),
        flag(credit).label("credit_invoices"),
        sa.case((credit, i.c.balance), else_=0).label("credits"),
    ).where(
        scope.tenant(i),
        live(i),
        i.c.balance != 0,
        i.c.invoice_date.is_not(None),
        scope.day(i.c.invoice_date) <= as_of,
        scope.chosen(i.c.id),
    )


MARTS: tuple[Mart, ...] = (
    Mart(
        "revenue_by_business_unit",
        "Revenue per day and business unit, as ServiceTitan's Completed Revenue: income items (invoice items "
        "whose GL account type is Income) of invoices of completed jobs, dated by the job's completion day and "
        "credited to the item's business unit (the job's when the item has none). Adjustment invoices are "
        "left out of completed revenue and shown apart, with invoices without a job, dated by invoice date and "
        "credited to the item's business unit (else the invoice's).",
        group=(DAY_COLUMN, BU_COLUMN),
        measures=(col("completed_revenue", M), col("non_job_revenue", M), col("adjustment_revenue", M)),
        derived=(
            (
                col("total_revenue", M),
                lambda m: m["completed_revenue"] + m["non_job_revenue"] + m["adjustment_revenue"],
            ),
        ),
        reads=("hub_invoice_items", "hub_invoices", "hub_jobs"),
        facts=_revenue_facts,
        links=(
            Link("hub_invoices", own("invoices")),
            Link("hub_jobs", pointing("invoices", "job_id")),
        ),
        headline=(("completed_revenue_last_30_days", "completed_revenue", 30),),
    ),
    Mart(
        "sales",
        "Sales per day and business unit: sold estimates and their subtotal, dated by the estimate's sold-on "
        "day and credited to the estimate's business unit (sales are not revenue: a job can be sold one day and "
        "invoiced later).",
        group=(DAY_COLUMN, BU_COLUMN),
        measures=(col("sold_estimates", INT), col("sales", M)),
        reads=("hub_estimates",),
        facts=_sales_facts,
        links=(Link("hub_estimates", own("estimates")),),
        headline=(("sales_last_30_days", "sales", 30),),
    ),
    Mart(
        "job_conversion",
        "Conversion, close rate and average ticket per day (job completion) and business unit (the job's). "
        "Opportunity: a completed job that is not No Charge (job or job type), or a No Charge job that reached "
        "the sold threshold. Converted: the job's invoiced subtotal (adjustments excluded) is positive and at "
        "least its job type's sold threshold. Sales opportunity: a completed job with an estimate, by the same "
        "No Charge rule (a No Charge job counts only when its sold estimates reach the threshold); closed when "
        "its sold estimates reach the threshold (a job whose estimates were all dismissed is still a sales "
        "opportunity). Revenue: the income items of the job's invoices (adjustments excluded; pass-through "
        "items such as permit fees are not revenue). Average ticket: revenue per completed job (No Charge jobs "
        "included), and per job with revenue; both cut to 4 decimals.",
        group=(DAY_COLUMN, BU_COLUMN),
        measures=(
            col("completed_jobs", INT),
            col("opportunities", INT),
            col("converted", INT),
            col("invoiced_subtotal", M),
            col("revenue", M),
            col("jobs_with_revenue", INT),
            col("sales_opportunities", INT),
            col("closed", INT),
        ),
        derived=(
            (col("conversion_rate", R), rate("converted", "opportunities")),
            (col("average_ticket", M), lambda m: money_per(m["revenue"], m["completed_jobs"])),
            (col("average_ticket_jobs_with_revenue", M), lambda m: money_per(m["revenue"], m["jobs_with_revenue"])),
            (col("close_rate", R), rate("closed", "sales_opportunities")),
        ),
        reads=JOB_READS,
        facts=_conversion_facts,
        links=JOB_LINKS,
        headline=(("completed_jobs_last_30_days", "completed_jobs", 30),),
    ),
    Mart(
        "technician_performance",
        "Per day (job completion), technician and business unit (the job's), credited as ServiceTitan does: by "
        "the job's splits (payroll/jobs/splits). A job counts once for every technician with a split above zero; "
        "its revenue (income items, as in job_conversion) and the sold estimates' subtotal are weighted by the "
        "technician's split (percent, cut to 4 decimals). A job without any split falls back to its actively "
        "assigned technicians in equal shares. Opportunities, converted, sales opportunities and closed count "
        "the job once per credited technician (as in job_conversion); the unweighted revenue and sales are kept "
        "beside, to reconcile. Job average: weighted revenue per completed job.",
        group=(DAY_COLUMN, col("technician_id", INT), BU_COLUMN),
        measures=(
            col("completed_jobs", INT),
            col("opportunities", INT),
            col("converted", INT),
            col("sales_opportunities", INT),
            col("closed", INT),
            col("revenue", M),
            col("sold_on_jobs", M),
            col("revenue_unweighted", M),
            col("sold_on_jobs_unweighted", M),
        ),
        derived=(
            (col("conversion_rate", R), rate("converted", "opportunities")),
            (col("close_rate", R), rate("closed", "sales_opportunities")),
            (col("job_average", M), lambda m: money_per(m["revenue"], m["completed_jobs"])),
        ),
        reads=(*JOB_READS, "hub_appointment_assignments", "hub_job_splits"),
        facts=_technician_facts,
        links=(
            *JOB_LINKS,
            Link("hub_appointment_assignments", own("appointment_assignments", "job_id")),
            Link("hub_job_splits", own("job_splits", "job_id")),
        ),
    ),
    Mart(
        "membership_conversion",
        "Membership conversion per day (job completion). Opportunity: a completed job at a location with no "
        "membership in force that day; in the customer variant (ServiceTitan's), a completed job of a customer "
        "with no membership in force at any of their locations. In force on a day: started (from) on an earlier "
        "day, its last day (to) not before it, and not canceled by then (a membership canceled later was in "
        "force; a canceled one without a cancellation date never is). Two variants each: sold the same day "
        '(ServiceTitan\'s: only memberships sold "for today") and sold within '
        f"{MEMBERSHIP_FOLLOW_UP_DAYS} days (a membership starting from the job's day on, as sold on a later "
        "visit). A membership's sale day is its start (from); the counts are of jobs converted, so one "
        "membership converts every opportunity in the window before it.",
        group=(DAY_COLUMN,),
        measures=(
            col("opportunities", INT),
            col("sold_same_day", INT),
            col("sold_within_30_days", INT),
            col("customer_opportunities", INT),
            col("customer_sold_same_day", INT),
            col("customer_sold_within_30_days", INT),
        ),
        derived=(
            (col("conversion_rate_same_day", R), rate("sold_same_day", "opportunities")),
            (col("conversion_rate_30_days", R), rate("sold_within_30_days", "opportunities")),
            (col("customer_conversion_rate_same_day", R), rate("customer_sold_same_day", "customer_opportunities")),
            (
                col("customer_conversion_rate_30_days", R),
                rate("customer_sold_within_30_days", "customer_opportunities"),
            ),
        ),
        reads=("hub_jobs", "hub_memberships"),
        facts=_membership_facts,
        links=(
            Link("hub_jobs", own("jobs")),
            Link("hub_memberships", through(own("memberships", "location_id"), pointing("jobs", "location_id"))),
            Link("hub_memberships", through(own("memberships", "customer_id"), pointing("jobs", "customer_id"))),
        ),
    ),
    Mart(
        "call_booking",
        "Inbound calls per day (call creation): bookable calls (call type Booked or Unbooked; excused and "
        "abandoned calls are not), booked calls, and the booking rate booked / bookable; abandoned calls and the "
        "missed-call rate abandoned / inbound.",
        group=(DAY_COLUMN,),
        measures=(
            col("inbound_calls", INT),
            col("bookable_calls", INT),
            col("booked_calls", INT),
            col("abandoned_calls", INT),
        ),
        derived=(
            (col("booking_rate", R), rate("booked_calls", "bookable_calls")),
            (col("missed_call_rate", R), rate("abandoned_calls", "inbound_calls")),
        ),
        reads=("hub_calls",),
        facts=_calls_facts,
        links=(Link("hub_calls", own("calls")),),
        headline=(("booked_calls_last_30_days", "booked_calls", 30),),
    ),
    Mart(
        "collections",
        "Collections per day (payment date): payments received and their total.",
        group=(DAY_COLUMN,),
        measures=(col("payments", INT), col("collected", M)),
        reads=("hub_payments",),
        facts=_collections_facts,
        links=(Link("hub_payments", own("payments")),),
        headline=(("collected_last_30_days", "collected", 30),),
    ),
    Mart(
        "accounts_receivable",
        "Accounts receivable on the build day (the tenant's calendar): the invoices' current balances by age "
        "since the invoice date, in buckets 0-30, 31-60, 61-90 and 91+ days: open balances (balance > 0), "
        "credits (balance < 0: owed to the customer, negative) and net receivables (open balance + credits). "
        "Rebuilt in full by the first build of each day (ages move on), incrementally after.",
        group=(col("as_of", DAY), col("aging_bucket", T)),
        measures=(col("open_invoices", INT), col("open_balance", M), col("credit_invoices", INT), col("credits", M)),
        derived=((col("net_receivables", M), lambda m: m["open_balance"] + m["credits"]),),
        reads=("hub_invoices",),
        facts=_receivables_facts,
        links=(Link("hub_invoices", own("invoices")),),
        daily=True,
        headline=(("open_balance", "open_balance", 0), ("net_receivables", "net_receivables", 0)),
    ),
    *DASHBOARD_MARTS,
    JOB_COSTING,
    MARKETING_ROI,
    TECHNICIAN_CAPACITY,
    MEMBERSHIP_HEALTH,
)

MARTS_BY_NAME = {mart.name: mart for mart in MARTS}
