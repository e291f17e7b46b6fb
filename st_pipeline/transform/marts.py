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

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.transform.expressions import (
    as_day,
    calendar_day,
    days_between,
    flag,
    live,
    money_per,
    money_share,
    ratio,
    unindexed,
)
from st_pipeline.transform.hubs import hub
from st_pipeline.transform.spec import Column, ColumnType
from st_pipeline.transform.tables import hub_table
from st_pipeline.transform.types import sql_type
from st_pipeline.warehouse.scratch import analyze, drop, load_ids, recreate, temporary_table

T, INT, M, D, R, DAY = (
    ColumnType.TEXT,
    ColumnType.INTEGER,
    ColumnType.MONEY,
    ColumnType.DECIMAL,
    ColumnType.COORDINATE,
    ColumnType.DATE,
)

# Job completion → membership sale: the "within 30 days" variant of membership conversion.
MEMBERSHIP_FOLLOW_UP_DAYS = 30
AGING_BUCKETS = ((0, 30, "0-30"), (31, 60, "31-60"), (61, 90, "61-90"), (91, None, "91+"))

Expression = ColumnElement[Any]
# The changed rows' ids of one hub table → the ids of the mart entities the change reaches.
EntityFinder = Callable[[int, sa.Select[Any]], sa.Select[Any]]


@dataclass(frozen=True)
class Scope:
    """Whose facts a query selects: one tenant's entities on one build day — all of them, or
    only those whose ids are in the temporary table ``entities`` — and the tenant's calendar."""

    tenant_id: int
    as_of: date  # the build day in the tenant's time zone
    entities: sa.Table | None = None
    time_zone: str = "UTC"  # the tenant's IANA zone: its calendar days

    def day(self, timestamp: Expression) -> Expression:
        """The tenant's local calendar day of a (UTC) timestamp."""
        return calendar_day(timestamp, self.time_zone)

    def tenant(self, table: sa.FromClause) -> ColumnElement[bool]:
        return table.c.tenant_id == self.tenant_id

    def chosen(self, entity_id: Expression) -> ColumnElement[bool]:
        if self.entities is None:
            return sa.true()
        return entity_id.in_(sa.select(self.entities.c.id))


@dataclass(frozen=True)
class Link:
    """How a change to one hub table reaches a mart's entities."""

    table: str  # the hub table whose change this follows
    entities: EntityFinder  # (tenant id, SELECT of the changed rows' ids) → SELECT of entity ids


@dataclass(frozen=True)
class Mart:
    """One KPI mart: ``mart_<name>``, keyed by ``tenant_id`` and ``group``.

    An additive mart gives ``facts``: a query, for a ``Scope``, of ``entity_id``, the ``group``
    columns and the ``measures``; the mart sums the measures per group and computes ``derived``
    columns from the sums (each a function of the sums by measure name). ``links`` say which
    entities a change of a hub table affects. ``daily``: the facts depend on the build day
    (``Scope.as_of``), so the first build of a day is a full one.
    """

    name: str
    description: str
    group: tuple[Column, ...]
    measures: tuple[Column, ...]
    reads: tuple[str, ...]  # hub tables, e.g. ``hub_jobs``
    facts: Callable[[Scope], sa.Select[Any]]
    links: tuple[Link, ...] = ()
    derived: tuple[tuple[Column, Callable[[Mapping[str, Expression]], Expression]], ...] = ()
    daily: bool = False
    # Figures for the UI to plot: (metadata label, column, summed over the last N days with data; 0 = all rows).
    headline: tuple[tuple[str, str, int], ...] = ()

    @property
    def table_name(self) -> str:
        return f"mart_{self.name}"

    @property
    def facts_table_name(self) -> str:
        return f"mart_{self.name}__facts"

    @property
    def key(self) -> tuple[str, ...]:
        return ("tenant_id", *(c.name for c in self.group))

    @property
    def columns(self) -> tuple[Column, ...]:
        return (_c("tenant_id", INT), *self.group, *self.measures, *(c for c, _ in self.derived))

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _c(name: str, kind: ColumnType, description: str = "") -> Column:
    return Column(name, name, kind, description)


def _hub(name: str, alias: str) -> sa.FromClause:
    """A hub table under a short alias (the facts queries read several at once)."""
    return hub_table(hub(name)).alias(alias)


def _one() -> Expression:
    return sa.literal_column("1")


def _completed(jobs: sa.FromClause) -> ColumnElement[bool]:
    """A job that counts as completed: live, status Completed, with a completion time."""
    return sa.and_(live(jobs), jobs.c.job_status == "Completed", jobs.c.completed_on.is_not(None))


def _income_items(scope: Scope, alias: str) -> tuple[sa.FromClause, sa.FromClause, sa.Join, tuple[Any, ...]]:
    """Invoice items (``it``), their invoices (``i``), the two joined, and what makes an item revenue:
    a live invoice, an item not deleted, booked to an Income GL account (pass-through items such as
    permit fees, booked to a liability account, are not revenue)."""
    it, i = _hub("invoice_items", f"{alias}_it"), _hub("invoices", f"{alias}_i")
    items = it.join(i, sa.and_(i.c.tenant_id == it.c.tenant_id, i.c.id == it.c.invoice_id))
    counted = (it.c.tenant_id == scope.tenant_id, live(i), it.c.deleted_at.is_(None), it.c.gl_account_type == "Income")
    return it, i, items, counted


def _job_revenue(scope: Scope, job_id: Expression) -> Expression:
    """A job's revenue: the income items of its invoices, adjustments excluded (its completed revenue)."""
    it, i, items, counted = _income_items(scope, "jr")
    total = sa.select(sa.func.sum(it.c.total)).select_from(items)
    return total.where(*counted, i.c.job_id == job_id, i.c.adjustment_to_id.is_(None)).scalar_subquery()


def _job_facts(scope: Scope) -> sa.Select[Any]:
    """One row per completed job of the tenant (chosen by job id): its day, business unit, location,
    customer, No Charge flag, sold threshold, invoiced subtotal and revenue (adjustments excluded),
    estimates and sold."""
    j, jt, i, e = _hub("jobs", "j"), _hub("job_types", "jt"), _hub("invoices", "i"), _hub("estimates", "e")
    invoiced = (
        sa.select(sa.func.sum(i.c.sub_total))
        .where(scope.tenant(i), i.c.job_id == j.c.id, live(i), i.c.adjustment_to_id.is_(None))
        .scalar_subquery()
    )
    job_estimates = (scope.tenant(e), e.c.job_id == j.c.id, live(e))
    estimates = sa.select(sa.func.count()).select_from(e).where(*job_estimates).scalar_subquery()
    sold = sa.select(sa.func.sum(e.c.sub_total)).where(*job_estimates, e.c.status == "Sold").scalar_subquery()
    no_charge = sa.or_(sa.func.coalesce(j.c.no_charge, sa.false()), sa.func.coalesce(jt.c.no_charge, sa.false()))
    return (
        sa.select(
            j.c.id.label("job_id"),
            j.c.business_unit_id,
            j.c.location_id,
            j.c.customer_id,
            scope.day(j.c.completed_on).label("day"),
            no_charge.label("no_charge"),
            sa.func.coalesce(jt.c.sold_threshold, 0).label("threshold"),
            sa.func.coalesce(invoiced, 0).label("invoiced"),
            sa.func.coalesce(_job_revenue(scope, j.c.id), 0).label("revenue"),
            estimates.label("estimates"),
            sa.func.coalesce(sold, 0).label("sold"),
        )
        .select_from(j.outerjoin(jt, sa.and_(jt.c.tenant_id == j.c.tenant_id, jt.c.id == j.c.job_type_id)))
        .where(scope.tenant(j), _completed(j), scope.chosen(j.c.id))
    )


# A job is an opportunity unless it is No Charge (a No Charge job that still reaches the sold
# threshold counts); it converted when its invoiced subtotal is positive and reaches the threshold.
def _converted(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.and_(f.c.invoiced > 0, f.c.invoiced >= f.c.threshold)


def _opportunity(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.or_(sa.not_(f.c.no_charge), _converted(f))


# A sales opportunity is a completed job with an estimate, by the same rule for No Charge jobs: one
# counts only when its sold estimates reach the threshold. It closed when they reach the threshold.
def _closed(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.and_(f.c.estimates > 0, f.c.sold > 0, f.c.sold >= f.c.threshold)


def _sales_opportunity(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.and_(f.c.estimates > 0, sa.or_(sa.not_(f.c.no_charge), _closed(f)))


def _own(name: str, column: str = "id") -> EntityFinder:
    """The entities are ``column`` of the changed rows themselves (their ids, or e.g. their job)."""
    table = _hub(name, "x")
    return lambda tenant_id, changed: sa.select(table.c[column]).where(
        table.c.tenant_id == tenant_id, table.c.id.in_(changed)
    )


def _pointing(name: str, column: str) -> EntityFinder:
    """The entities are the rows of ``name`` whose ``column`` points at a changed row."""
    table = _hub(name, "p")
    return lambda tenant_id, changed: sa.select(table.c.id).where(
        table.c.tenant_id == tenant_id, table.c[column].in_(changed)
    )


def _through(first: EntityFinder, then: EntityFinder) -> EntityFinder:
    """Two hops: the entities ``then`` finds from the ids ``first`` finds."""
    return lambda tenant_id, changed: then(tenant_id, first(tenant_id, changed))


# The jobs a change reaches: the job itself, its invoices and estimates, its job type.
_JOB_LINKS = (
    Link("hub_jobs", _own("jobs")),
    Link("hub_invoices", _own("invoices", "job_id")),
    Link("hub_estimates", _own("estimates", "job_id")),
    Link("hub_job_types", _pointing("jobs", "job_type_id")),
)
_JOB_READS = ("hub_jobs", "hub_job_types", "hub_invoices", "hub_invoice_items", "hub_estimates")


def _revenue_facts(scope: Scope) -> sa.Select[Any]:
    it, i, items, counted = _income_items(scope, "rv")
    j = _hub("jobs", "j")
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
        .where(*chosen, i.c.adjustment_to_id.is_(None), _completed(j))
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
    e = _hub("estimates", "e")
    return sa.select(
        e.c.id.label("entity_id"),
        scope.day(e.c.sold_on).label("day"),
        e.c.business_unit_id,
        _one().label("sold_estimates"),
        e.c.sub_total.label("sales"),
    ).where(scope.tenant(e), live(e), e.c.status == "Sold", e.c.sold_on.is_not(None), scope.chosen(e.c.id))


def _conversion_facts(scope: Scope) -> sa.Select[Any]:
    f = _job_facts(scope).subquery("f")
    return sa.select(
        f.c.job_id.label("entity_id"),
        f.c.day,
        f.c.business_unit_id,
        _one().label("completed_jobs"),
        flag(_opportunity(f)).label("opportunities"),
        flag(_converted(f)).label("converted"),
        f.c.invoiced.label("invoiced_subtotal"),
        f.c.revenue.label("revenue"),
        flag(f.c.revenue > 0).label("jobs_with_revenue"),
        flag(_sales_opportunity(f)).label("sales_opportunities"),
        flag(_closed(f)).label("closed"),
    )


def _job_credits(scope: Scope) -> sa.Subquery:
    """Who is credited with each job, and with what share (percent): the technicians with a split
    above zero (``payroll/jobs/splits``, summed per technician); a job without any split record
    falls back to its actively assigned technicians, in equal shares (``share`` NULL, ``shared_by`` them)."""
    s, aa, other = _hub("job_splits", "s"), _hub("appointment_assignments", "aa"), _hub("job_splits", "s2")
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
    f, credit = _job_facts(scope).subquery("f"), _job_credits(scope)

    def weighted(amount: Expression) -> Expression:
        return sa.case(
            (credit.c.share.is_(None), money_per(amount, credit.c.shared_by)), else_=money_share(amount, credit.c.share)
        )

    return sa.select(
        f.c.job_id.label("entity_id"),
        f.c.day,
        credit.c.technician_id,
        f.c.business_unit_id,
        _one().label("completed_jobs"),
        flag(_opportunity(f)).label("opportunities"),
        flag(_converted(f)).label("converted"),
        flag(_sales_opportunity(f)).label("sales_opportunities"),
        flag(_closed(f)).label("closed"),
        weighted(f.c.revenue).label("revenue"),
        weighted(f.c.sold).label("sold_on_jobs"),
        f.c.revenue.label("revenue_unweighted"),
        f.c.sold.label("sold_on_jobs_unweighted"),
    ).select_from(f.join(credit, credit.c.job_id == f.c.job_id))


def _membership_facts(scope: Scope) -> sa.Select[Any]:
    """Two opportunities per completed job: at its location, and for its customer (any location)."""
    j, m = _hub("jobs", "j"), _hub("memberships", "m")
    f = (
        sa.select(j.c.id.label("job_id"), j.c.location_id, j.c.customer_id, scope.day(j.c.completed_on).label("day"))
        .where(scope.tenant(j), _completed(j), scope.chosen(j.c.id))
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
    c = _hub("calls", "c")
    return sa.select(
        c.c.id.label("entity_id"),
        scope.day(c.c.created_on).label("day"),
        _one().label("inbound_calls"),
        flag(c.c.call_type.in_(("Booked", "Unbooked"))).label("bookable_calls"),
        flag(c.c.call_type == "Booked").label("booked_calls"),
    ).where(scope.tenant(c), live(c), c.c.direction == "Inbound", c.c.created_on.is_not(None), scope.chosen(c.c.id))


def _collections_facts(scope: Scope) -> sa.Select[Any]:
    p = _hub("payments", "p")
    return sa.select(
        p.c.id.label("entity_id"),
        scope.day(p.c.payment_date).label("day"),
        _one().label("payments"),
        p.c.total.label("collected"),
    ).where(scope.tenant(p), live(p), p.c.payment_date.is_not(None), scope.chosen(p.c.id))


def _receivables_facts(scope: Scope) -> sa.Select[Any]:
    i = _hub("invoices", "i")
    as_of = as_day(sa.literal(scope.as_of, sa.Date()))
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


def _rate(numerator: str, denominator: str) -> Callable[[Mapping[str, Expression]], Expression]:
    return lambda sums: ratio(sums[numerator], sums[denominator])


DAY_COLUMN, BU_COLUMN = _c("day", DAY), _c("business_unit_id", INT)

MARTS: tuple[Mart, ...] = (
    Mart(
        "revenue_by_business_unit",
        "Revenue per day and business unit, as ServiceTitan's Completed Revenue: income items (invoice items "
        "whose GL account type is Income) of invoices of completed jobs, dated by the job's completion day and "
        "credited to the item's business unit (the job's when the item has none). Adjustment invoices are "
        "left out of completed revenue and shown apart, with invoices without a job, dated by invoice date and "
        "credited to the item's business unit (else the invoice's).",
        group=(DAY_COLUMN, BU_COLUMN),
        measures=(_c("completed_revenue", M), _c("non_job_revenue", M), _c("adjustment_revenue", M)),
        derived=(
            (_c("total_revenue", M), lambda m: m["completed_revenue"] + m["non_job_revenue"] + m["adjustment_revenue"]),
        ),
        reads=("hub_invoice_items", "hub_invoices", "hub_jobs"),
        facts=_revenue_facts,
        links=(
            Link("hub_invoices", _own("invoices")),
            Link("hub_jobs", _pointing("invoices", "job_id")),
        ),
        headline=(("completed_revenue_last_30_days", "completed_revenue", 30),),
    ),
    Mart(
        "sales",
        "Sales per day and business unit: sold estimates and their subtotal, dated by the estimate's sold-on "
        "day and credited to the estimate's business unit (sales are not revenue: a job can be sold one day and "
        "invoiced later).",
        group=(DAY_COLUMN, BU_COLUMN),
        measures=(_c("sold_estimates", INT), _c("sales", M)),
        reads=("hub_estimates",),
        facts=_sales_facts,
        links=(Link("hub_estimates", _own("estimates")),),
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
            _c("completed_jobs", INT),
            _c("opportunities", INT),
            _c("converted", INT),
            _c("invoiced_subtotal", M),
            _c("revenue", M),
            _c("jobs_with_revenue", INT),
            _c("sales_opportunities", INT),
            _c("closed", INT),
        ),
        derived=(
            (_c("conversion_rate", R), _rate("converted", "opportunities")),
            (_c("average_ticket", M), lambda m: money_per(m["revenue"], m["completed_jobs"])),
            (_c("average_ticket_jobs_with_revenue", M), lambda m: money_per(m["revenue"], m["jobs_with_revenue"])),
            (_c("close_rate", R), _rate("closed", "sales_opportunities")),
        ),
        reads=_JOB_READS,
        facts=_conversion_facts,
        links=_JOB_LINKS,
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
        group=(DAY_COLUMN, _c("technician_id", INT), BU_COLUMN),
        measures=(
            _c("completed_jobs", INT),
            _c("opportunities", INT),
            _c("converted", INT),
            _c("sales_opportunities", INT),
            _c("closed", INT),
            _c("revenue", M),
            _c("sold_on_jobs", M),
            _c("revenue_unweighted", M),
            _c("sold_on_jobs_unweighted", M),
        ),
        derived=(
            (_c("conversion_rate", R), _rate("converted", "opportunities")),
            (_c("close_rate", R), _rate("closed", "sales_opportunities")),
            (_c("job_average", M), lambda m: money_per(m["revenue"], m["completed_jobs"])),
        ),
        reads=(*_JOB_READS, "hub_appointment_assignments", "hub_job_splits"),
        facts=_technician_facts,
        links=(
            *_JOB_LINKS,
            Link("hub_appointment_assignments", _own("appointment_assignments", "job_id")),
            Link("hub_job_splits", _own("job_splits", "job_id")),
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
            _c("opportunities", INT),
            _c("sold_same_day", INT),
            _c("sold_within_30_days", INT),
            _c("customer_opportunities", INT),
            _c("customer_sold_same_day", INT),
            _c("customer_sold_within_30_days", INT),
        ),
        derived=(
            (_c("conversion_rate_same_day", R), _rate("sold_same_day", "opportunities")),
            (_c("conversion_rate_30_days", R), _rate("sold_within_30_days", "opportunities")),
            (_c("customer_conversion_rate_same_day", R), _rate("customer_sold_same_day", "customer_opportunities")),
            (
                _c("customer_conversion_rate_30_days", R),
                _rate("customer_sold_within_30_days", "customer_opportunities"),
            ),
        ),
        reads=("hub_jobs", "hub_memberships"),
        facts=_membership_facts,
        links=(
            Link("hub_jobs", _own("jobs")),
            Link("hub_memberships", _through(_own("memberships", "location_id"), _pointing("jobs", "location_id"))),
            Link("hub_memberships", _through(_own("memberships", "customer_id"), _pointing("jobs", "customer_id"))),
        ),
    ),
    Mart(
        "call_booking",
        "Inbound calls per day (call creation): bookable calls (call type Booked or Unbooked; excused and "
        "abandoned calls are not), booked calls, and the booking rate booked / bookable.",
        group=(DAY_COLUMN,),
        measures=(_c("inbound_calls", INT), _c("bookable_calls", INT), _c("booked_calls", INT)),
        derived=((_c("booking_rate", R), _rate("booked_calls", "bookable_calls")),),
        reads=("hub_calls",),
        facts=_calls_facts,
        links=(Link("hub_calls", _own("calls")),),
        headline=(("booked_calls_last_30_days", "booked_calls", 30),),
    ),
    Mart(
        "collections",
        "Collections per day (payment date): payments received and their total.",
        group=(DAY_COLUMN,),
        measures=(_c("payments", INT), _c("collected", M)),
        reads=("hub_payments",),
        facts=_collections_facts,
        links=(Link("hub_payments", _own("payments")),),
        headline=(("collected_last_30_days", "collected", 30),),
    ),
    Mart(
        "accounts_receivable",
        "Accounts receivable on the build day (the tenant's calendar): the invoices' current balances by age "
        "since the invoice date, in buckets 0-30, 31-60, 61-90 and 91+ days: open balances (balance > 0), "
        "credits (balance < 0: owed to the customer, negative) and net receivables (open balance + credits). "
        "Rebuilt in full by the first build of each day (ages move on), incrementally after.",
        group=(_c("as_of", DAY), _c("aging_bucket", T)),
        measures=(_c("open_invoices", INT), _c("open_balance", M), _c("credit_invoices", INT), _c("credits", M)),
        derived=((_c("net_receivables", M), lambda m: m["open_balance"] + m["credits"]),),
        reads=("hub_invoices",),
        facts=_receivables_facts,
        links=(Link("hub_invoices", _own("invoices")),),
        daily=True,
        headline=(("open_balance", "open_balance", 0), ("net_receivables", "net_receivables", 0)),
    ),
)

MARTS_BY_NAME = {mart.name: mart for mart in MARTS}
mart_metadata = sa.MetaData()


_defining = threading.Lock()


def mart_table(mart: Mart) -> sa.Table:
    """The SQLAlchemy table of a mart (its key may hold NULLs, e.g. no business unit: an index, not a
    primary key; the ``unique_key`` check watches it)."""
    with _defining:  # defined once per process, whichever thread asks first
        if mart.table_name in mart_metadata.tables:
            return mart_metadata.tables[mart.table_name]
        return _define_mart(mart)


def _define_mart(mart: Mart) -> sa.Table:
    return sa.Table(
        mart.table_name,
        mart_metadata,
        *(sa.Column(c.name, sql_type(c.type)) for c in mart.columns),
        sa.Column("built_at", UtcDateTime(), nullable=False),
        sa.Index(f"ix_{mart.table_name}_key", *mart.key),
    )


def facts_table(mart: Mart) -> sa.Table:
    """The facts a mart sums: one row per (entity, mart key) contribution."""
    name = mart.facts_table_name
    with _defining:
        if name in mart_metadata.tables:
            return mart_metadata.tables[name]
        return _define_facts(mart, name)


def _define_facts(mart: Mart, name: str) -> sa.Table:
    return sa.Table(
        name,
        mart_metadata,
        sa.Column("tenant_id", sa.BigInteger, nullable=False),
        sa.Column("entity_id", sa.BigInteger, nullable=False),
        *(sa.Column(c.name, sql_type(c.type)) for c in (*mart.group, *mart.measures)),
        sa.Index(f"ix_{name[:50]}_entity", "tenant_id", "entity_id"),
        sa.Index(f"ix_{name[:50]}_group", "tenant_id", *(c.name for c in mart.group)),
    )


def mart_tables(mart: Mart) -> list[sa.Table]:
    return [mart_table(mart), facts_table(mart)]


@dataclass
class MartBuild:
    """One mart built for one tenant."""

    table: str
    row_count: int
    headline: dict[str, float]
    # "full"; "incremental": the facts of ``entities`` entities, ``groups`` rows re-summed; "unchanged"
    mode: str = "full"
    entities: int = 0
    groups: int = 0


def _group_names(mart: Mart) -> list[str]:
    return [c.name for c in mart.group]


def _measure_names(mart: Mart) -> list[str]:
    return [c.name for c in mart.measures]


def _fill_facts(mart: Mart, scope: Scope) -> sa.Insert:
    """INSERT the scope's facts into the mart's facts table."""
    facts = facts_table(mart)
    query = mart.facts(scope).subquery("q")
    names = ["entity_id", *_group_names(mart), *_measure_names(mart)]
    select = sa.select(sa.literal(scope.tenant_id, sa.BigInteger()), *(query.c[n] for n in names))
    return facts.insert().from_select(["tenant_id", *names], select)


def _sum(column: Column, value: Expression) -> Expression:
    """SUM of a measure; counts stay 64-bit integers (PostgreSQL sums bigints as numeric)."""
    total = sa.func.sum(value)
    return sa.cast(total, sa.BigInteger()) if column.type == INT else total


def _derived(mart: Mart, sums: Mapping[str, Expression]) -> list[Expression]:
    return [derive(sums) for _, derive in mart.derived]


def _summed(mart: Mart, tenant_id: int, built_at: datetime) -> sa.Select[Any]:
    """The tenant's mart rows from its facts: sums per key, then the derived columns."""
    facts = facts_table(mart)
    group = [facts.c[n] for n in _group_names(mart)]
    sums = {m.name: _sum(m, facts.c[m.name]) for m in mart.measures}
    return (
        sa.select(
            sa.literal(tenant_id, sa.BigInteger()),
            *group,
            *sums.values(),
            *_derived(mart, sums),
            sa.literal(built_at, UtcDateTime()),
        )
        .where(facts.c.tenant_id == tenant_id)
        .group_by(*group)
    )


def _same_group(mart: Mart, left: sa.FromClause, right: sa.FromClause) -> ColumnElement[bool]:
    """``left`` and ``right`` have the same mart key (NULL-safe after the first column, never NULL)."""
    first, *rest = _group_names(mart)
    return sa.and_(left.c[first] == right.c[first], *(left.c[n].is_not_distinct_from(right.c[n]) for n in rest))


def _column_names(mart: Mart) -> list[str]:
    return [*(c.name for c in mart.columns), "built_at"]


def build_mart(
    conn: sa.Connection,
    mart: Mart,
    tenant_id: int,
    *,
    as_of: date,
    built_at: datetime,
    entities: set[int] | None = None,
    time_zone: str = "UTC",
) -> MartBuild:
    """Build a mart for one tenant: in full, or (``entities``) for the facts of those entities only;
    days in the tenant's ``time_zone``."""
    table, facts = mart_table(mart), facts_table(mart)
    if entities is None:
        conn.execute(facts.delete().where(facts.c.tenant_id == tenant_id))
        conn.execute(_fill_facts(mart, Scope(tenant_id, as_of, time_zone=time_zone)))
        analyze(conn, facts)
        conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
        conn.execute(table.insert().from_select(_column_names(mart), _summed(mart, tenant_id, built_at)))
        return _finish(conn, mart, tenant_id, MartBuild(mart.table_name, 0, {}))
    build = MartBuild(mart.table_name, 0, {}, mode="incremental", entities=len(entities))
    build.groups = _apply_change(
        conn, mart, Scope(tenant_id, as_of, load_ids(conn, "st_mart_entities", entities), time_zone), built_at
    )
    return _finish(conn, mart, tenant_id, build)


def _apply_change(conn: sa.Connection, mart: Mart, scope: Scope, built_at: datetime) -> int:
    """Recompute the facts of the scope's entities and carry the change into the mart; the mart rows changed.

    The entities' old facts are subtracted from the mart rows and their new facts added
    (``st_delta``, summed per key into ``st_change``); rows left without facts go, new keys come
    in, and the derived columns of the changed rows are computed again. The work follows the
    number of changed entities, not the size of the mart.
    """
    assert scope.entities is not None
    target, facts = mart_table(mart), facts_table(mart)
    group, measures = _group_names(mart), _measure_names(mart)

    def scratch(name: str, columns: tuple[Column, ...], index: tuple[str, ...] = ()) -> sa.Table:
        return recreate(
            conn, temporary_table(name, *(sa.Column(c.name, sql_type(c.type)) for c in columns), index=index)
        )

    delta = scratch("st_delta", (*mart.group, *mart.measures))
    change = scratch("st_change", (*mart.group, *mart.measures), index=tuple(group))  # looked up per mart row
    emptied = scratch("st_emptied", mart.group)
    theirs = sa.and_(facts.c.tenant_id == scope.tenant_id, facts.c.entity_id.in_(sa.select(scope.entities.c.id)))
    fact_group = [facts.c[n] for n in group]
    # Grouped by an unindexed key: SQLite would otherwise walk the tenant's facts in the group index's
    # order (to spare a sort) instead of looking the few entities' facts up by entity.
    by_group = [unindexed(fact_group[0]), *fact_group[1:]]
    old = sa.select(*fact_group, *(-sa.func.sum(facts.c[m]) for m in measures)).where(theirs).group_by(*by_group)
    conn.execute(delta.insert().from_select([*group, *measures], old))
    conn.execute(facts.delete().where(theirs))
    conn.execute(_fill_facts(mart, scope))
    new = sa.select(*fact_group, *(sa.func.sum(facts.c[m]) for m in measures)).where(theirs).group_by(*by_group)
    conn.execute(delta.insert().from_select([*group, *measures], new))
    delta_group = [delta.c[n] for n in group]
    net = sa.select(*delta_group, *(sa.func.sum(delta.c[m]) for m in measures)).group_by(*delta_group)
    conn.execute(change.insert().from_select([*group, *measures], net))
    changed_rows = conn.execute(sa.select(sa.func.count()).select_from(change)).scalar_one()
    analyze(conn, change)

    # Existing rows: add the change, and derive again from the new sums (SET reads the old values).
    after = {m: target.c[m] + change.c[m] for m in measures}
    derived_after = {c.name: derive(after) for c, derive in mart.derived}
    conn.execute(
        target.update()
        .where(target.c.tenant_id == scope.tenant_id, _same_group(mart, target, change))
        .values({**after, **derived_after, "built_at": built_at})
    )
    # New keys.
    existing = target.alias("t")
    new_sums = {m: change.c[m] for m in measures}
    new_rows = sa.select(
        sa.literal(scope.tenant_id, sa.BigInteger()),
        *(change.c[n] for n in group),
        *new_sums.values(),
        *_derived(mart, new_sums),
        sa.literal(built_at, UtcDateTime()),
    ).where(~sa.exists().where(existing.c.tenant_id == scope.tenant_id, _same_group(mart, existing, change)))
    conn.execute(target.insert().from_select(_column_names(mart), new_rows))
    # Keys left without facts (found from the change, then removed).
    without_facts = sa.select(*(change.c[n] for n in group)).where(
        ~sa.exists().where(facts.c.tenant_id == scope.tenant_id, _same_group(mart, facts, change))
    )
    conn.execute(emptied.insert().from_select(group, without_facts))
    if conn.execute(sa.select(sa.func.count()).select_from(emptied)).scalar_one():
        first = group[0]
        conn.execute(
            target.delete().where(
                target.c.tenant_id == scope.tenant_id,
                target.c[first].in_(sa.select(emptied.c[first])),
                sa.exists().where(_same_group(mart, target, emptied)),
            )
        )
    drop(conn, emptied, delta, change)
    return int(changed_rows)


def current_mart(conn: sa.Connection, mart: Mart, tenant_id: int) -> MartBuild:
    """A mart as it stands for the tenant (nothing it reads changed): its rows and headline figures."""
    return _finish(conn, mart, tenant_id, MartBuild(mart.table_name, 0, {}, mode="unchanged"))


def entities_reached(link: Link, tenant_id: int, changed_ids: sa.Table) -> sa.Select[Any]:
    """The ids of the mart entities a link reaches from the changed rows (ids in ``changed_ids``)."""
    return link.entities(tenant_id, sa.select(changed_ids.c.id))


def _finish(conn: sa.Connection, mart: Mart, tenant_id: int, build: MartBuild) -> MartBuild:
    table = mart_table(mart)
    build.row_count = conn.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
    ).scalar_one()
    build.headline = _headline(conn, mart, tenant_id)
    return build


def _headline(conn: sa.Connection, mart: Mart, tenant_id: int) -> dict[str, float]:
    """The mart's headline figures: sums over the last N days with data (or all rows), as floats for plots."""
    table = mart_table(mart)
    figures: dict[str, float] = {}
    for label, column, days in mart.headline:
        query = sa.select(sa.func.sum(table.c[column])).where(table.c.tenant_id == tenant_id)
        if days:
            latest = conn.execute(sa.select(sa.func.max(table.c.day)).where(table.c.tenant_id == tenant_id)).scalar()
            if latest is None:
                figures[label] = 0.0
                continue
            if isinstance(latest, str):
                latest = date.fromisoformat(latest)
            query = query.where(table.c.day > latest - timedelta(days=days))
        figures[label] = float(conn.execute(query).scalar() or 0)
    return figures


def mart_fingerprint(mart: Mart, dialect: sa.Dialect) -> str:
    """Changes whenever the mart's columns or queries change (then it is rebuilt in full for every tenant).

    The queries are compiled for a fixed tenant and day; their parameters (the constants the
    queries compare with) are part of the fingerprint beside the SQL. (Compiling them costs; the
    build remembers the result per version of the code: ``build._mart_fingerprints``.)
    """
    tenant_id, day, at = 0, date(2000, 1, 1), datetime(2000, 1, 1, tzinfo=UTC)
    ids = temporary_table("st_changed_ids", sa.Column("id", sa.BigInteger))
    queries = [
        _summed(mart, tenant_id, at),
        mart.facts(Scope(tenant_id, day)),
        *(entities_reached(link, tenant_id, ids) for link in mart.links),
    ]
    compiled = [query.compile(dialect=dialect) for query in queries]
    shape = repr(
        (
            [(c.name, c.type.value) for c in mart.columns],
            mart.key,
            [(str(c), sorted(c.params.items(), key=lambda item: item[0])) for c in compiled],
        )
    )
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def ensure_mart_tables(conn: sa.Connection, marts: tuple[Mart, ...] = MARTS) -> None:
    """Create missing mart and facts tables; recreate one whose columns no longer match its definition.

    Runs in the caller's transaction, inside ``schema_change_lock``.
    """
    from st_pipeline.warehouse.access import secure_tables

    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names())
    created = False
    for mart in marts:
        for table in mart_tables(mart):
            if table.name in existing:
                if [c["name"] for c in inspector.get_columns(table.name)] == [c.name for c in table.columns]:
                    continue
                table.drop(conn)
            table.create(conn)
            created = True
    if created:
        secure_tables(conn)
