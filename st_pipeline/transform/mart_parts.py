"""The parts KPI marts are made of: what a mart is (``Mart``), whose facts a query selects
(``Scope``), how a change reaches a mart's entities (``Link`` and its finders), and the job facts
several marts share. The marts themselves are in ``marts`` and ``dashboard``; building them is
``mart_build``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from st_pipeline.transform.expressions import as_day, calendar_day, live, ratio
from st_pipeline.transform.hubs import hub
from st_pipeline.transform.spec import Column, ColumnType
from st_pipeline.transform.tables import hub_table
from st_pipeline.transform.types import sql_type

T, INT, M, D, R, DAY = (
    ColumnType.TEXT,
    ColumnType.INTEGER,
    ColumnType.MONEY,
    ColumnType.DECIMAL,
    ColumnType.COORDINATE,
    ColumnType.DATE,
)

# The window of a mart's ``trailing`` columns, in days (the row's day included).
TRAILING_DAYS = 30

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

    def build_day(self) -> Expression:
        """The build day (``as_of``) as a value of the ``day`` columns."""
        return as_day(sa.literal(self.as_of, sa.Date()))

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
    # Columns over each row's trailing window (its day and the window_days - 1 before): functions of
    # the row's sums and the window's sums, by measure name. Computed after every build from the mart's
    # rows (a mart grouped by day only).
    trailing: tuple[tuple[Column, Callable[[Mapping[str, Expression], Mapping[str, Expression]], Expression]], ...] = ()
    # The window of the trailing columns in days (the row's day included); None: every day up to the row's.
    window_days: int | None = TRAILING_DAYS
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
        return (
            col("tenant_id", INT),
            *self.group,
            *self.measures,
            *(c for c, _ in self.derived),
            *(c for c, _ in self.trailing),
        )

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def col(name: str, kind: ColumnType, description: str = "") -> Column:
    return Column(name, name, kind, description)


def hub_alias(name: str, alias: str) -> sa.FromClause:
    """A hub table under a short alias (the facts queries read several at once)."""
    return hub_table(hub(name)).alias(alias)


def one() -> Expression:
    return sa.literal_column("1")


def zero() -> Expression:
    """A count of 0, for a union's rows that do not count a measure."""
    return sa.literal(0, sa.BigInteger())


def no_money() -> Expression:
    """An amount of 0, typed as money, for a union's rows that do not carry an amount."""
    return sa.literal(0, sql_type(M))


def is_completed(jobs: sa.FromClause) -> ColumnElement[bool]:
    """A job that counts as completed: live, status Completed, with a completion time."""
    return sa.and_(live(jobs), jobs.c.job_status == "Completed", jobs.c.completed_on.is_not(None))


def income_items(scope: Scope, alias: str) -> tuple[sa.FromClause, sa.FromClause, sa.Join, tuple[Any, ...]]:
    """Invoice items (``it``), their invoices (``i``), the two joined, and what makes an item revenue:
    a live invoice, an item not deleted, booked to an Income GL account (pass-through items such as
    permit fees, booked to a liability account, are not revenue)."""
    it, i = hub_alias("invoice_items", f"{alias}_it"), hub_alias("invoices", f"{alias}_i")
    items = it.join(i, sa.and_(i.c.tenant_id == it.c.tenant_id, i.c.id == it.c.invoice_id))
    counted = (it.c.tenant_id == scope.tenant_id, live(i), it.c.deleted_at.is_(None), it.c.gl_account_type == "Income")
    return it, i, items, counted


def job_revenue(scope: Scope, job_id: Expression) -> Expression:
    """A job's revenue: the income items of its invoices, adjustments excluded (its completed revenue)."""
    it, i, items, counted = income_items(scope, "jr")
    total = sa.select(sa.func.sum(it.c.total)).select_from(items)
    return total.where(*counted, i.c.job_id == job_id, i.c.adjustment_to_id.is_(None)).scalar_subquery()


def job_facts(scope: Scope) -> sa.Select[Any]:
    """One row per completed job of the tenant (chosen by job id): its day, business unit, location,
    customer, No Charge flag, sold threshold, invoiced subtotal and revenue (adjustments excluded),
    estimates and sold."""
    j, jt, i, e = (
        hub_alias("jobs", "j"),
        hub_alias("job_types", "jt"),
        hub_alias("invoices", "i"),
        hub_alias("estimates", "e"),
    )
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
            j.c.campaign_id,
            j.c.warranty_id,
            scope.day(j.c.completed_on).label("day"),
            no_charge.label("no_charge"),
            sa.func.coalesce(jt.c.sold_threshold, 0).label("threshold"),
            sa.func.coalesce(invoiced, 0).label("invoiced"),
            sa.func.coalesce(job_revenue(scope, j.c.id), 0).label("revenue"),
            estimates.label("estimates"),
            sa.func.coalesce(sold, 0).label("sold"),
        )
        .select_from(j.outerjoin(jt, sa.and_(jt.c.tenant_id == j.c.tenant_id, jt.c.id == j.c.job_type_id)))
        .where(scope.tenant(j), is_completed(j), scope.chosen(j.c.id))
    )


# A job is an opportunity unless it is No Charge (a No Charge job that still reaches the sold
# threshold counts); it converted when its invoiced subtotal is positive and reaches the threshold.
def is_converted(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.and_(f.c.invoiced > 0, f.c.invoiced >= f.c.threshold)


def is_opportunity(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.or_(sa.not_(f.c.no_charge), is_converted(f))


# A sales opportunity is a completed job with an estimate, by the same rule for No Charge jobs: one
# counts only when its sold estimates reach the threshold. It closed when they reach the threshold.
def is_closed(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.and_(f.c.estimates > 0, f.c.sold > 0, f.c.sold >= f.c.threshold)


def is_sales_opportunity(f: sa.Subquery) -> ColumnElement[bool]:
    return sa.and_(f.c.estimates > 0, sa.or_(sa.not_(f.c.no_charge), is_closed(f)))


def own(name: str, column: str = "id") -> EntityFinder:
    """The entities are ``column`` of the changed rows themselves (their ids, or e.g. their job)."""
    table = hub_alias(name, "x")
    return lambda tenant_id, changed: sa.select(table.c[column]).where(
        table.c.tenant_id == tenant_id, table.c.id.in_(changed)
    )


def pointing(name: str, column: str) -> EntityFinder:
    """The entities are the rows of ``name`` whose ``column`` points at a changed row."""
    table = hub_alias(name, "p")
    return lambda tenant_id, changed: sa.select(table.c.id).where(
        table.c.tenant_id == tenant_id, table.c[column].in_(changed)
    )


def exploded(name: str, parent: str, column: str) -> EntityFinder:
    """The entities are ``column`` of the rows of ``name`` exploded from the changed records (whose id
    is their ``parent``): e.g. the invoices a changed payment was applied to."""
    table = hub_alias(name, "x")
    return lambda tenant_id, changed: sa.select(table.c[column]).where(
        table.c.tenant_id == tenant_id, table.c[parent].in_(changed)
    )


def through(first: EntityFinder, then: EntityFinder) -> EntityFinder:
    """Two hops: the entities ``then`` finds from the ids ``first`` finds."""
    return lambda tenant_id, changed: then(tenant_id, first(tenant_id, changed))


# The jobs a change reaches: the job itself, its invoices and estimates, its job type.
JOB_LINKS = (
    Link("hub_jobs", own("jobs")),
    Link("hub_invoices", own("invoices", "job_id")),
    Link("hub_estimates", own("estimates", "job_id")),
    Link("hub_job_types", pointing("jobs", "job_type_id")),
)
JOB_READS = ("hub_jobs", "hub_job_types", "hub_invoices", "hub_invoice_items", "hub_estimates")


def rate(numerator: str, denominator: str) -> Callable[[Mapping[str, Expression]], Expression]:
    return lambda sums: ratio(sums[numerator], sums[denominator])


DAY_COLUMN, BU_COLUMN = col("day", DAY), col("business_unit_id", INT)
