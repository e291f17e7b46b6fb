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
mart's description states its date basis. Days are UTC calendar days. Records that are deleted
(``deleted_at``) or inactive (``active`` false: voided, deactivated) never count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.transform.spec import Column, ColumnType
from st_pipeline.transform.types import MONEY_SCALE, sql_type

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


@dataclass(frozen=True)
class Sql:
    """Dialect helpers the mart queries are written with."""

    dialect: str

    def day(self, timestamp: str) -> str:
        """The UTC calendar day of a timestamp column."""
        if self.dialect == "sqlite":
            return f"substr({timestamp}, 1, 10)"
        return f"(({timestamp}) AT TIME ZONE 'UTC')::date"

    def days_between(self, later: str, earlier: str) -> str:
        """Whole days from one day (``date`` value) to another."""
        if self.dialect == "sqlite":
            return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"
        return f"(({later})::date - ({earlier})::date)"

    def date_param(self, name: str) -> str:
        """A date parameter as a value of the ``day`` columns."""
        return name if self.dialect == "sqlite" else f"CAST({name} AS DATE)"

    def ratio(self, numerator: str, denominator: str) -> str:
        """numerator / denominator as a floating-point rate (NULL when there is nothing to divide by)."""
        cast = "REAL" if self.dialect == "sqlite" else "double precision"
        return f"(CAST({numerator} AS {cast}) / NULLIF({denominator}, 0))"

    def money_per(self, amount: str, count: str) -> str:
        """An amount divided by a count, exact to 4 decimals (cut, not rounded, on both warehouses)."""
        if self.dialect == "sqlite":  # integer ten-thousandths: integer division cuts
            return f"({amount} / NULLIF({count}, 0))"
        return f"trunc({amount} / NULLIF({count}, 0), {MONEY_SCALE})"

    @staticmethod
    def live(alias: str) -> str:
        """A row that counts: not deleted, not inactive."""
        return f"({alias}.deleted_at IS NULL AND COALESCE({alias}.active, TRUE))"


@dataclass(frozen=True)
class Link:
    """How a change to one hub table reaches a mart's entities: SQL selecting the entity ids for the
    changed records, whose ids are in the temporary table ``st_changed_ids``."""

    table: str  # the hub table whose change this follows
    entities: str  # SELECT <entity id> … WHERE … IN (SELECT id FROM st_changed_ids)


@dataclass(frozen=True)
class Mart:
    """One KPI mart: ``mart_<name>``, keyed by ``tenant_id`` and ``group``.

    An additive mart gives ``facts``: a query of ``entity_id``, the ``group`` columns and the
    ``measures`` for the tenant's entities passing ``{entities}`` (a condition on the entity id);
    the mart sums the measures per group and computes ``derived`` columns from the sums (``{name}``
    in their SQL stands for the sum of measure ``name``). ``links`` say which entities a change of
    a hub table affects. ``daily``: the facts depend on the build day (``:as_of``), so the first
    build of a day is a full one.
    """

    name: str
    description: str
    group: tuple[Column, ...]
    measures: tuple[Column, ...]
    reads: tuple[str, ...]  # hub tables, e.g. ``hub_jobs``
    facts: Callable[[Sql, str], str]
    links: tuple[Link, ...] = ()
    derived: tuple[tuple[Column, Callable[[Sql], str]], ...] = ()
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


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _job_facts(s: Sql, entities: str) -> str:
    """One row per completed job of the tenant (passing ``entities`` on the job id): its day,
    business unit, location, threshold and totals."""
    return f"""
    SELECT j.id AS job_id, j.business_unit_id, j.location_id, {s.day("j.completed_on")} AS day,
           COALESCE(j.no_charge, FALSE) OR COALESCE(jt.no_charge, FALSE) AS no_charge,
           COALESCE(jt.sold_threshold, 0) AS threshold,
           COALESCE((SELECT SUM(i.sub_total) FROM hub_invoices i WHERE i.tenant_id = :tenant_id AND i.job_id = j.id
                     AND {Sql.live("i")} AND i.adjustment_to_id IS NULL), 0) AS invoiced,
           (SELECT COUNT(*) FROM hub_estimates e WHERE e.tenant_id = :tenant_id AND e.job_id = j.id
            AND {Sql.live("e")}) AS estimates,
           COALESCE((SELECT SUM(e.sub_total) FROM hub_estimates e WHERE e.tenant_id = :tenant_id AND e.job_id = j.id
                     AND {Sql.live("e")} AND e.status = 'Sold'), 0) AS sold
    FROM hub_jobs j
    LEFT JOIN hub_job_types jt ON jt.tenant_id = j.tenant_id AND jt.id = j.job_type_id
    WHERE j.tenant_id = :tenant_id AND {Sql.live("j")} AND j.job_status = 'Completed'
      AND j.completed_on IS NOT NULL AND {entities.format(id="j.id")}"""


# A job is an opportunity unless it is No Charge (a No Charge job that still reaches the sold
# threshold counts); it converted when its invoiced subtotal is positive and reaches the threshold.
_CONVERTED = "(f.invoiced > 0 AND f.invoiced >= f.threshold)"
_OPPORTUNITY = f"(NOT f.no_charge OR {_CONVERTED})"
# A sales opportunity is a completed job with an estimate; it closed when its sold estimates
# reach the threshold.
_SALES_OPPORTUNITY = "(f.estimates > 0)"
_CLOSED = "(f.estimates > 0 AND f.sold > 0 AND f.sold >= f.threshold)"


def _changed(table: str, column: str = "id") -> str:
    return (
        f"SELECT x.{column} FROM {table} x WHERE x.tenant_id = :tenant_id AND x.id IN (SELECT id FROM st_changed_ids)"
    )


# The jobs a change reaches: the job itself, its invoices and estimates, its job type, its assignments.
_JOB_LINKS = (
    Link("hub_jobs", _changed("hub_jobs")),
    Link("hub_invoices", _changed("hub_invoices", "job_id")),
    Link("hub_estimates", _changed("hub_estimates", "job_id")),
    Link(
        "hub_job_types",
        "SELECT j.id FROM hub_jobs j WHERE j.tenant_id = :tenant_id "
        "AND j.job_type_id IN (SELECT id FROM st_changed_ids)",
    ),
)


def _revenue_facts(s: Sql, entities: str) -> str:
    income = "it.gl_account_type = 'Income'"
    base = "FROM hub_invoice_items it JOIN hub_invoices i ON i.tenant_id = it.tenant_id AND i.id = it.invoice_id"
    where = (
        f"it.tenant_id = :tenant_id AND {s.live('i')} AND it.deleted_at IS NULL AND {income} "
        f"AND {entities.format(id='i.id')}"
    )
    return f"""
    SELECT invoice_id AS entity_id, day, business_unit_id,
           SUM(CASE WHEN kind = 'completed' THEN amount ELSE 0 END) AS completed_revenue,
           SUM(CASE WHEN kind = 'non_job' THEN amount ELSE 0 END) AS non_job_revenue,
           SUM(CASE WHEN kind = 'adjustment' THEN amount ELSE 0 END) AS adjustment_revenue
    FROM (
      SELECT 'completed' AS kind, i.id AS invoice_id, {s.day("j.completed_on")} AS day,
             COALESCE(it.business_unit_id, j.business_unit_id) AS business_unit_id, it.total AS amount
      {base} JOIN hub_jobs j ON j.tenant_id = i.tenant_id AND j.id = i.job_id
      WHERE {where} AND i.adjustment_to_id IS NULL AND {s.live("j")} AND j.job_status = 'Completed'
        AND j.completed_on IS NOT NULL
      UNION ALL
      SELECT CASE WHEN i.adjustment_to_id IS NOT NULL THEN 'adjustment' ELSE 'non_job' END, i.id,
             {s.day("i.invoice_date")}, COALESCE(it.business_unit_id, i.business_unit_id), it.total
      {base}
      WHERE {where} AND (i.adjustment_to_id IS NOT NULL OR i.job_id IS NULL) AND i.invoice_date IS NOT NULL
    ) revenue
    GROUP BY invoice_id, day, business_unit_id"""


def _sales_facts(s: Sql, entities: str) -> str:
    return f"""
    SELECT e.id AS entity_id, {s.day("e.sold_on")} AS day, e.business_unit_id, 1 AS sold_estimates, e.sub_total AS sales
    FROM hub_estimates e
    WHERE e.tenant_id = :tenant_id AND {s.live("e")} AND e.status = 'Sold' AND e.sold_on IS NOT NULL
      AND {entities.format(id="e.id")}"""


def _conversion_facts(s: Sql, entities: str) -> str:
    return f"""
    SELECT f.job_id AS entity_id, f.day, f.business_unit_id, 1 AS completed_jobs,
           {_flag(_OPPORTUNITY)} AS opportunities, {_flag(_CONVERTED)} AS converted,
           f.invoiced AS invoiced_subtotal, {_flag(_SALES_OPPORTUNITY)} AS sales_opportunities,
           {_flag(_CLOSED)} AS closed
    FROM ({_job_facts(s, entities)}) f"""


def _technician_facts(s: Sql, entities: str) -> str:
    # Each technician assigned to a job is credited with the job once, however many visits.
    return f"""
    SELECT f.job_id AS entity_id, f.day, a.technician_id, f.business_unit_id, 1 AS completed_jobs,
           {_flag(_OPPORTUNITY)} AS opportunities, {_flag(_CONVERTED)} AS converted,
           {_flag(_SALES_OPPORTUNITY)} AS sales_opportunities, {_flag(_CLOSED)} AS closed, f.sold AS sold_on_jobs
    FROM ({_job_facts(s, entities)}) f
    JOIN (SELECT DISTINCT aa.job_id, aa.technician_id FROM hub_appointment_assignments aa
          WHERE aa.tenant_id = :tenant_id AND {s.live("aa")} AND aa.technician_id IS NOT NULL
            AND {entities.format(id="aa.job_id")}) a ON a.job_id = f.job_id"""


def _membership_facts(s: Sql, entities: str) -> str:
    # Opportunity: a completed job at a location with no membership in force that day. (``+`` keeps
    # SQLite from scanning the location index for ``IS NOT NULL`` instead of looking the jobs up.)
    covered = f"""EXISTS (SELECT 1 FROM hub_memberships m WHERE m.tenant_id = :tenant_id AND {s.live("m")}
        AND m.location_id = f.location_id AND {s.day("m.valid_from")} < f.day
        AND (m.valid_to IS NULL OR {s.day("m.valid_to")} >= f.day) AND COALESCE(m.status, '') <> 'Canceled')"""
    sold_within = f"""EXISTS (SELECT 1 FROM hub_memberships m WHERE m.tenant_id = :tenant_id AND {s.live("m")}
        AND m.location_id = f.location_id AND {s.day("m.valid_from")} >= f.day
        AND {s.days_between(s.day("m.valid_from"), "f.day")} <= {{days}})"""
    return f"""
    SELECT f.job_id AS entity_id, f.day, 1 AS opportunities,
           {_flag(sold_within.format(days=0))} AS sold_same_day,
           {_flag(sold_within.format(days=MEMBERSHIP_FOLLOW_UP_DAYS))} AS sold_within_30_days
    FROM (SELECT j.id AS job_id, j.location_id, {s.day("j.completed_on")} AS day FROM hub_jobs j
          WHERE j.tenant_id = :tenant_id AND {s.live("j")} AND j.job_status = 'Completed'
            AND j.completed_on IS NOT NULL AND +j.location_id IS NOT NULL AND {entities.format(id="j.id")}) f
    WHERE NOT {covered}"""


def _calls_facts(s: Sql, entities: str) -> str:
    bookable = "c.call_type IN ('Booked', 'Unbooked')"
    return f"""
    SELECT c.id AS entity_id, {s.day("c.created_on")} AS day, 1 AS inbound_calls,
           {_flag(bookable)} AS bookable_calls, {_flag("c.call_type = 'Booked'")} AS booked_calls
    FROM hub_calls c
    WHERE c.tenant_id = :tenant_id AND {s.live("c")} AND c.direction = 'Inbound' AND c.created_on IS NOT NULL
      AND {entities.format(id="c.id")}"""


def _collections_facts(s: Sql, entities: str) -> str:
    return f"""
    SELECT p.id AS entity_id, {s.day("p.payment_date")} AS day, 1 AS payments, p.total AS collected
    FROM hub_payments p
    WHERE p.tenant_id = :tenant_id AND {s.live("p")} AND p.payment_date IS NOT NULL AND {entities.format(id="p.id")}"""


def _receivables_facts(s: Sql, entities: str) -> str:
    age = s.days_between(s.date_param(":as_of"), s.day("i.invoice_date"))
    bucket = (
        "CASE "
        + " ".join(f"WHEN {age} <= {high} THEN '{label}'" for _low, high, label in AGING_BUCKETS if high is not None)
        + f" ELSE '{AGING_BUCKETS[-1][2]}' END"
    )
    return f"""
    SELECT i.id AS entity_id, {s.date_param(":as_of")} AS as_of, {bucket} AS aging_bucket, 1 AS open_invoices,
           i.balance AS open_balance
    FROM hub_invoices i
    WHERE i.tenant_id = :tenant_id AND {s.live("i")} AND i.balance > 0 AND i.invoice_date IS NOT NULL
      AND {s.day("i.invoice_date")} <= {s.date_param(":as_of")} AND {entities.format(id="i.id")}"""


def _rate(numerator: str, denominator: str) -> Callable[[Sql], str]:
    return lambda s: s.ratio(f"{{{numerator}}}", f"{{{denominator}}}")


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
        derived=((_c("total_revenue", M), lambda s: "{completed_revenue} + {non_job_revenue} + {adjustment_revenue}"),),
        reads=("hub_invoice_items", "hub_invoices", "hub_jobs"),
        facts=_revenue_facts,
        links=(
            Link("hub_invoices", _changed("hub_invoices")),
            Link(
                "hub_jobs",
                "SELECT i.id FROM hub_invoices i WHERE i.tenant_id = :tenant_id "
                "AND i.job_id IN (SELECT id FROM st_changed_ids)",
            ),
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
        links=(Link("hub_estimates", _changed("hub_estimates")),),
        headline=(("sales_last_30_days", "sales", 30),),
    ),
    Mart(
        "job_conversion",
        "Conversion, close rate and average ticket per day (job completion) and business unit (the job's). "
        "Opportunity: a completed job that is not No Charge (job or job type), or a No Charge job that reached "
        "the sold threshold. Converted: the job's invoiced subtotal (adjustments excluded) is positive and at "
        "least its job type's sold threshold. Sales opportunity: a completed job with an estimate; closed when "
        "its sold estimates reach the threshold (a job whose estimates were all dismissed is still a sales "
        "opportunity). Average ticket: invoiced subtotal (all items, adjustments excluded) per completed job, "
        "No Charge jobs included, cut to 4 decimals.",
        group=(DAY_COLUMN, BU_COLUMN),
        measures=(
            _c("completed_jobs", INT),
            _c("opportunities", INT),
            _c("converted", INT),
            _c("invoiced_subtotal", M),
            _c("sales_opportunities", INT),
            _c("closed", INT),
        ),
        derived=(
            (_c("conversion_rate", R), _rate("converted", "opportunities")),
            (_c("average_ticket", M), lambda s: s.money_per("{invoiced_subtotal}", "{completed_jobs}")),
            (_c("close_rate", R), _rate("closed", "sales_opportunities")),
        ),
        reads=("hub_jobs", "hub_job_types", "hub_invoices", "hub_estimates"),
        facts=_conversion_facts,
        links=_JOB_LINKS,
        headline=(("completed_jobs_last_30_days", "completed_jobs", 30),),
    ),
    Mart(
        "technician_performance",
        "Per day (job completion), technician and business unit (the job's): completed jobs credited once to "
        "every technician assigned to them in full (no split weighting: a job of two technicians counts for "
        "both), opportunities, converted jobs and conversion rate (as in job_conversion), sales opportunities, "
        "closed, and the sold estimates' subtotal of their jobs (also in full for each).",
        group=(DAY_COLUMN, _c("technician_id", INT), BU_COLUMN),
        measures=(
            _c("completed_jobs", INT),
            _c("opportunities", INT),
            _c("converted", INT),
            _c("sales_opportunities", INT),
            _c("closed", INT),
            _c("sold_on_jobs", M),
        ),
        derived=((_c("conversion_rate", R), _rate("converted", "opportunities")),),
        reads=("hub_jobs", "hub_job_types", "hub_invoices", "hub_estimates", "hub_appointment_assignments"),
        facts=_technician_facts,
        links=(*_JOB_LINKS, Link("hub_appointment_assignments", _changed("hub_appointment_assignments", "job_id"))),
    ),
    Mart(
        "membership_conversion",
        "Membership conversion per day (job completion). Opportunity: a completed job at a location with no "
        "membership in force that day. Two variants: sold the same day (ServiceTitan's: only memberships "
        f'sold "for today") and sold within {MEMBERSHIP_FOLLOW_UP_DAYS} days (a membership starting at the '
        "location from the job's day on, as sold on a later visit). A membership's sale day is its start "
        "(from); the counts are of jobs converted, so one membership converts every opportunity at its location "
        "in the window before it.",
        group=(DAY_COLUMN,),
        measures=(_c("opportunities", INT), _c("sold_same_day", INT), _c("sold_within_30_days", INT)),
        derived=(
            (_c("conversion_rate_same_day", R), _rate("sold_same_day", "opportunities")),
            (_c("conversion_rate_30_days", R), _rate("sold_within_30_days", "opportunities")),
        ),
        reads=("hub_jobs", "hub_memberships"),
        facts=_membership_facts,
        links=(
            Link("hub_jobs", _changed("hub_jobs")),
            Link(
                "hub_memberships",
                "SELECT j.id FROM hub_jobs j WHERE j.tenant_id = :tenant_id AND j.location_id IN "
                f"({_changed('hub_memberships', 'location_id')})",
            ),
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
        links=(Link("hub_calls", _changed("hub_calls")),),
        headline=(("booked_calls_last_30_days", "booked_calls", 30),),
    ),
    Mart(
        "collections",
        "Collections per day (payment date): payments received and their total.",
        group=(DAY_COLUMN,),
        measures=(_c("payments", INT), _c("collected", M)),
        reads=("hub_payments",),
        facts=_collections_facts,
        links=(Link("hub_payments", _changed("hub_payments")),),
        headline=(("collected_last_30_days", "collected", 30),),
    ),
    Mart(
        "accounts_receivable",
        "Accounts receivable on the build day: the invoices' current open balances (balance > 0) by age "
        "since the invoice date, in buckets 0-30, 31-60, 61-90 and 91+ days. Rebuilt in full by the first "
        "build of each day (ages move on), incrementally after.",
        group=(_c("as_of", DAY), _c("aging_bucket", T)),
        measures=(_c("open_invoices", INT), _c("open_balance", M)),
        reads=("hub_invoices",),
        facts=_receivables_facts,
        links=(Link("hub_invoices", _changed("hub_invoices")),),
        daily=True,
        headline=(("open_balance", "open_balance", 0),),
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


def _binds(statement: str, tenant_id: int, as_of: date, built_at: object) -> tuple[sa.TextClause, dict[str, object]]:
    params: dict[str, object] = {"tenant_id": tenant_id}
    binds: list[sa.BindParameter[datetime] | sa.BindParameter[date]] = []
    if ":built_at" in statement:
        params["built_at"] = built_at
        binds.append(sa.bindparam("built_at", type_=UtcDateTime()))
    if ":as_of" in statement:
        params["as_of"] = as_of
        binds.append(sa.bindparam("as_of", type_=sa.Date()))
    return sa.text(statement).bindparams(*binds), params


def _run(conn: sa.Connection, statement: str, tenant_id: int, as_of: date, built_at: object) -> None:
    query, params = _binds(statement, tenant_id, as_of, built_at)
    conn.execute(query, params)


def _summed(mart: Mart, s: Sql, where: str) -> str:
    """SELECT the mart's rows from its facts (those passing ``where``): sums per key, then derived columns."""
    sums = {
        c.name: (f"CAST(SUM(f.{c.name}) AS BIGINT)" if c.type == INT else f"SUM(f.{c.name})") for c in mart.measures
    }
    group = ", ".join(f"f.{c.name}" for c in mart.group)
    derived = [sql(s).format(**sums) for _, sql in mart.derived]
    columns = ", ".join(["CAST(:tenant_id AS BIGINT)", group, *sums.values(), *derived, ":built_at"])
    return (
        f"SELECT {columns} FROM {mart.facts_table_name} f WHERE f.tenant_id = :tenant_id AND {where} GROUP BY {group}"
    )


def _same_group(mart: Mart, s: Sql, left: str, right: str) -> str:
    """``left`` and ``right`` have the same mart key (NULL-safe after the first column, never NULL)."""
    same = "IS" if s.dialect == "sqlite" else "IS NOT DISTINCT FROM"
    first, *rest = (c.name for c in mart.group)
    return " AND ".join([f"{left}.{first} = {right}.{first}", *(f"{left}.{n} {same} {right}.{n}" for n in rest)])


def build_mart(
    conn: sa.Connection, mart: Mart, tenant_id: int, *, as_of: date, built_at: object, entities: set[int] | None = None
) -> MartBuild:
    """Build a mart for one tenant: in full, or (``entities``) for the facts of those entities only.

    Incrementally, the affected entities' old facts are subtracted from the mart rows and their new
    facts added (``st_delta``, summed per key into ``st_change``); rows left without facts go, new
    keys come in, and the derived columns of the changed rows are computed again. The work follows
    the number of changed entities, not the size of the mart.
    """
    s = Sql(conn.dialect.name)
    table = mart_table(mart)
    names = ", ".join([*(c.name for c in mart.columns), "built_at"])
    facts = facts_table(mart)
    fact_columns = ", ".join(["tenant_id", "entity_id", *(c.name for c in (*mart.group, *mart.measures))])
    if entities is None:
        conn.execute(facts.delete().where(facts.c.tenant_id == tenant_id))
        _run(
            conn,
            f"INSERT INTO {facts.name} ({fact_columns}) SELECT :tenant_id, q.* FROM ({mart.facts(s, '1 = 1')}) q",
            tenant_id,
            as_of,
            built_at,
        )
        analyze(conn, facts.name)
        conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
        _run(conn, f"INSERT INTO {mart.table_name} ({names}) {_summed(mart, s, '1 = 1')}", tenant_id, as_of, built_at)
        return _finish(conn, mart, tenant_id, MartBuild(mart.table_name, 0, {}))

    build = MartBuild(mart.table_name, 0, {}, mode="incremental", entities=len(entities))
    load_ids(conn, "st_mart_entities", entities)
    group = ", ".join(c.name for c in mart.group)
    by_fact_group = ", ".join(f"f.{c.name}" for c in mart.group)
    measures = [c.name for c in mart.measures]
    # The entities' facts; CROSS JOIN keeps SQLite looking facts up by entity, from the few entities.
    theirs = f"FROM st_mart_entities x CROSS JOIN {facts.name} f WHERE f.tenant_id = :tenant_id AND f.entity_id = x.id"
    for temporary in ("st_delta", "st_change"):
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {temporary}"))
    negated = ", ".join(f"-SUM(f.{m}) AS {m}" for m in measures)
    _run(
        conn,
        f"CREATE TEMPORARY TABLE st_delta AS SELECT {by_fact_group}, {negated} {theirs} GROUP BY {by_fact_group}",
        tenant_id,
        as_of,
        built_at,
    )
    conn.execute(
        sa.text(
            f"DELETE FROM {facts.name} WHERE tenant_id = :tenant_id AND entity_id IN (SELECT id FROM st_mart_entities)"
        ),
        {"tenant_id": tenant_id},
    )
    _run(
        conn,
        f"INSERT INTO {facts.name} ({fact_columns}) SELECT :tenant_id, q.* FROM "
        f"({mart.facts(s, '{id} IN (SELECT id FROM st_mart_entities)')}) q",
        tenant_id,
        as_of,
        built_at,
    )
    added = ", ".join(f"SUM(f.{m})" for m in measures)
    _run(
        conn,
        f"INSERT INTO st_delta SELECT {by_fact_group}, {added} {theirs} GROUP BY {by_fact_group}",
        tenant_id,
        as_of,
        built_at,
    )
    conn.execute(
        sa.text(
            f"CREATE TEMPORARY TABLE st_change AS SELECT {group}, "
            f"{', '.join(f'SUM({m}) AS {m}' for m in measures)} FROM st_delta GROUP BY {group}"
        )
    )
    build.groups = conn.execute(sa.text("SELECT count(*) FROM st_change")).scalar_one()
    conn.execute(sa.text(f"CREATE INDEX st_change_key ON st_change ({group})"))  # looked up per mart row below
    analyze(conn, "st_change")
    target = mart.table_name
    matches = _same_group(mart, s, "t", "c")
    after_change = {m: f"(t.{m} + c.{m})" for m in measures}
    derived_after = "".join(f", {c.name} = {sql(s).format(**after_change)}" for c, sql in mart.derived)
    # Existing rows: add the change, and derive again from the new sums (SET reads the old values).
    _run(
        conn,
        f"UPDATE {target} AS t SET {', '.join(f'{m} = t.{m} + c.{m}' for m in measures)}{derived_after}, "
        f"built_at = :built_at FROM st_change c WHERE t.tenant_id = :tenant_id AND {matches}",
        tenant_id,
        as_of,
        built_at,
    )
    # New keys.
    new_sums = {m: f"c.{m}" for m in measures}
    derived_new = "".join(f", {sql(s).format(**new_sums)}" for _, sql in mart.derived)
    _run(
        conn,
        f"INSERT INTO {target} ({names}) SELECT CAST(:tenant_id AS BIGINT), "
        f"{', '.join(f'c.{c.name}' for c in mart.group)}, {', '.join(f'c.{m}' for m in measures)}"
        f"{derived_new}, :built_at FROM st_change c "
        f"WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE t.tenant_id = :tenant_id AND {matches})",
        tenant_id,
        as_of,
        built_at,
    )
    # Keys left without facts (found from the change, then removed).
    conn.execute(sa.text("DROP TABLE IF EXISTS st_emptied"))
    _run(
        conn,
        f"CREATE TEMPORARY TABLE st_emptied AS SELECT {', '.join(f'c.{c.name}' for c in mart.group)} "
        f"FROM st_change c WHERE NOT EXISTS (SELECT 1 FROM {facts.name} f "
        f"WHERE f.tenant_id = :tenant_id AND {_same_group(mart, s, 'f', 'c')})",
        tenant_id,
        as_of,
        built_at,
    )
    if conn.execute(sa.text("SELECT count(*) FROM st_emptied")).scalar_one():
        first = mart.group[0].name
        _run(
            conn,
            f"DELETE FROM {target} WHERE tenant_id = :tenant_id AND {target}.{first} IN "
            f"(SELECT {first} FROM st_emptied) AND EXISTS (SELECT 1 FROM st_emptied c "
            f"WHERE {_same_group(mart, s, target, 'c')})",
            tenant_id,
            as_of,
            built_at,
        )
    conn.execute(sa.text("DROP TABLE st_emptied"))
    for temporary in ("st_delta", "st_change"):
        conn.execute(sa.text(f"DROP TABLE {temporary}"))
    return _finish(conn, mart, tenant_id, build)


def current_mart(conn: sa.Connection, mart: Mart, tenant_id: int) -> MartBuild:
    """A mart as it stands for the tenant (nothing it reads changed): its rows and headline figures."""
    return _finish(conn, mart, tenant_id, MartBuild(mart.table_name, 0, {}, mode="unchanged"))


def analyze(conn: sa.Connection, table: str) -> None:
    """Refresh PostgreSQL's statistics of a table just filled in bulk (the next queries plan on them)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"ANALYZE {table}"))


def load_ids(conn: sa.Connection, name: str, ids: set[int]) -> None:
    """Fill the temporary table ``name`` (one ``id`` column) with ``ids``, replacing what it held."""
    conn.execute(sa.text(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} (id BIGINT PRIMARY KEY)"))
    conn.execute(sa.text(f"DELETE FROM {name}"))
    ordered = sorted(ids)
    if conn.dialect.name == "postgresql":  # one statement with an array, not a round trip per id
        conn.execute(sa.text(f"INSERT INTO {name} (id) SELECT unnest(CAST(:ids AS BIGINT[]))"), {"ids": ordered})
        conn.execute(sa.text(f"ANALYZE {name}"))  # temporary tables have no statistics otherwise
        return
    for start in range(0, len(ordered), 5000):
        conn.execute(
            sa.text(f"INSERT INTO {name} (id) VALUES (:id)"), [{"id": i} for i in ordered[start : start + 5000]]
        )


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


def mart_fingerprint(mart: Mart, dialect: str) -> str:
    """Changes whenever the mart's columns or queries change (then it is rebuilt in full for every tenant)."""
    import hashlib

    s = Sql(dialect)
    queries = _summed(mart, s, "1 = 1") + mart.facts(s, "{id} = 0")
    shape = repr(
        ([(c.name, c.type.value) for c in mart.columns], mart.key, queries, [link.entities for link in mart.links])
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
