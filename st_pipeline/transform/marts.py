"""KPI marts: per tenant and day, computed inside the warehouse from the hub tables.

Each mart is one SQL query over hub tables, written once with a few dialect helpers, and
rebuilt for the whole tenant whenever a hub table it reads changed (marts are small aggregates;
a rebuild costs a fraction of the hub build that triggered it). The definitions follow how
ServiceTitan computes each number (see the README's "Metrics"); every mart's description states
its date basis. Days are UTC calendar days. Rows of records that are deleted (``deleted_at``) or
inactive (``active`` false: voided, deactivated) never count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.transform.spec import Column, ColumnType
from st_pipeline.transform.types import MONEY_SCALE, sql_type

T, I, M, D, R, DAY = (ColumnType.TEXT, ColumnType.INTEGER, ColumnType.MONEY, ColumnType.DECIMAL,
                      ColumnType.COORDINATE, ColumnType.DATE)

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
class Mart:
    """One KPI mart: ``mart_<name>``, its columns (``tenant_id`` comes first) and its query.

    The query selects the columns in order, for ``:tenant_id``; ``:as_of`` (a date) is there for
    marts that are a snapshot.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    reads: tuple[str, ...]  # hub tables, e.g. ``hub_jobs``
    query: Callable[[Sql], str]
    # Figures for the UI to plot: (metadata label, column, summed over the last N days with data; 0 = all rows).
    headline: tuple[tuple[str, str, int], ...] = ()

    @property
    def table_name(self) -> str:
        return f"mart_{self.name}"


def _c(name: str, kind: ColumnType, description: str = "") -> Column:
    return Column(name, name, kind, description)


def _job_facts(s: Sql) -> str:
    """One row per completed job of the tenant: its day, business unit, threshold and totals."""
    return f"""
    SELECT j.tenant_id, j.id AS job_id, j.business_unit_id, {s.day('j.completed_on')} AS day,
           COALESCE(j.no_charge, FALSE) OR COALESCE(jt.no_charge, FALSE) AS no_charge,
           COALESCE(jt.sold_threshold, 0) AS threshold,
           COALESCE(inv.invoiced, 0) AS invoiced,
           COALESCE(est.estimates, 0) AS estimates,
           COALESCE(est.sold, 0) AS sold
    FROM hub_jobs j
    LEFT JOIN hub_job_types jt ON jt.tenant_id = j.tenant_id AND jt.id = j.job_type_id
    LEFT JOIN (SELECT i.job_id, SUM(i.sub_total) AS invoiced FROM hub_invoices i
               WHERE i.tenant_id = :tenant_id AND {Sql.live('i')} AND i.adjustment_to_id IS NULL
               GROUP BY i.job_id) inv ON inv.job_id = j.id
    LEFT JOIN (SELECT e.job_id, COUNT(*) AS estimates,
                      SUM(CASE WHEN e.status = 'Sold' THEN e.sub_total ELSE 0 END) AS sold
               FROM hub_estimates e WHERE e.tenant_id = :tenant_id AND {Sql.live('e')}
               GROUP BY e.job_id) est ON est.job_id = j.id
    WHERE j.tenant_id = :tenant_id AND {Sql.live('j')} AND j.job_status = 'Completed'
      AND j.completed_on IS NOT NULL"""


# A job is an opportunity unless it is No Charge (a No Charge job that still reaches the sold
# threshold counts); it converted when its invoiced subtotal is positive and reaches the threshold.
_CONVERTED = "(f.invoiced > 0 AND f.invoiced >= f.threshold)"
_OPPORTUNITY = f"(NOT f.no_charge OR {_CONVERTED})"
# A sales opportunity is a completed job with an estimate; it closed when its sold estimates
# reach the threshold.
_SALES_OPPORTUNITY = "(f.estimates > 0)"
_CLOSED = "(f.estimates > 0 AND f.sold > 0 AND f.sold >= f.threshold)"


def _revenue_query(s: Sql) -> str:
    income = "it.gl_account_type = 'Income'"
    base = ("FROM hub_invoice_items it JOIN hub_invoices i ON i.tenant_id = it.tenant_id AND i.id = it.invoice_id")
    where = f"it.tenant_id = :tenant_id AND {s.live('i')} AND it.deleted_at IS NULL AND {income}"
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, day, business_unit_id,
           SUM(CASE WHEN kind = 'completed' THEN amount ELSE 0 END) AS completed_revenue,
           SUM(CASE WHEN kind = 'non_job' THEN amount ELSE 0 END) AS non_job_revenue,
           SUM(CASE WHEN kind = 'adjustment' THEN amount ELSE 0 END) AS adjustment_revenue,
           SUM(amount) AS total_revenue,
           COUNT(DISTINCT job_id) AS completed_jobs
    FROM (
      SELECT 'completed' AS kind, {s.day('j.completed_on')} AS day,
             COALESCE(it.business_unit_id, j.business_unit_id) AS business_unit_id, it.total AS amount, j.id AS job_id
      {base} JOIN hub_jobs j ON j.tenant_id = i.tenant_id AND j.id = i.job_id
      WHERE {where} AND i.adjustment_to_id IS NULL AND {s.live('j')} AND j.job_status = 'Completed'
        AND j.completed_on IS NOT NULL
      UNION ALL
      SELECT CASE WHEN i.adjustment_to_id IS NOT NULL THEN 'adjustment' ELSE 'non_job' END, {s.day('i.invoice_date')},
             COALESCE(it.business_unit_id, i.business_unit_id), it.total, NULL
      {base}
      WHERE {where} AND (i.adjustment_to_id IS NOT NULL OR i.job_id IS NULL) AND i.invoice_date IS NOT NULL
    ) revenue
    GROUP BY day, business_unit_id"""


def _sales_query(s: Sql) -> str:
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, {s.day('e.sold_on')} AS day, e.business_unit_id,
           COUNT(*) AS sold_estimates, SUM(e.sub_total) AS sales
    FROM hub_estimates e
    WHERE e.tenant_id = :tenant_id AND {s.live('e')} AND e.status = 'Sold' AND e.sold_on IS NOT NULL
    GROUP BY {s.day('e.sold_on')}, e.business_unit_id"""


def _conversion_query(s: Sql) -> str:
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, f.day, f.business_unit_id,
           COUNT(*) AS completed_jobs,
           SUM(CASE WHEN {_OPPORTUNITY} THEN 1 ELSE 0 END) AS opportunities,
           SUM(CASE WHEN {_CONVERTED} THEN 1 ELSE 0 END) AS converted,
           {s.ratio(f"SUM(CASE WHEN {_CONVERTED} THEN 1 ELSE 0 END)", f"SUM(CASE WHEN {_OPPORTUNITY} THEN 1 ELSE 0 END)")}
             AS conversion_rate,
           SUM(f.invoiced) AS invoiced_subtotal,
           {s.money_per('SUM(f.invoiced)', 'COUNT(*)')} AS average_ticket,
           SUM(CASE WHEN {_SALES_OPPORTUNITY} THEN 1 ELSE 0 END) AS sales_opportunities,
           SUM(CASE WHEN {_CLOSED} THEN 1 ELSE 0 END) AS closed,
           {s.ratio(f"SUM(CASE WHEN {_CLOSED} THEN 1 ELSE 0 END)", f"SUM(CASE WHEN {_SALES_OPPORTUNITY} THEN 1 ELSE 0 END)")}
             AS close_rate
    FROM ({_job_facts(s)}) f
    GROUP BY f.day, f.business_unit_id"""


def _technician_query(s: Sql) -> str:
    # Each technician assigned to a job is credited with the job once, however many visits.
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, f.day, a.technician_id,
           COUNT(*) AS completed_jobs,
           SUM(CASE WHEN {_OPPORTUNITY} THEN 1 ELSE 0 END) AS opportunities,
           SUM(CASE WHEN {_CONVERTED} THEN 1 ELSE 0 END) AS converted,
           {s.ratio(f"SUM(CASE WHEN {_CONVERTED} THEN 1 ELSE 0 END)", f"SUM(CASE WHEN {_OPPORTUNITY} THEN 1 ELSE 0 END)")}
             AS conversion_rate,
           SUM(CASE WHEN {_SALES_OPPORTUNITY} THEN 1 ELSE 0 END) AS sales_opportunities,
           SUM(CASE WHEN {_CLOSED} THEN 1 ELSE 0 END) AS closed,
           SUM(f.sold) AS sold_on_jobs
    FROM ({_job_facts(s)}) f
    JOIN (SELECT DISTINCT aa.job_id, aa.technician_id FROM hub_appointment_assignments aa
          WHERE aa.tenant_id = :tenant_id AND {s.live('aa')} AND aa.technician_id IS NOT NULL) a ON a.job_id = f.job_id
    GROUP BY f.day, a.technician_id"""


def _membership_query(s: Sql) -> str:
    # Opportunity: a completed job at a location with no membership in force that day.
    covered = f"""EXISTS (SELECT 1 FROM hub_memberships m WHERE m.tenant_id = :tenant_id AND {s.live('m')}
        AND m.location_id = f.location_id AND {s.day('m.valid_from')} < f.day
        AND (m.valid_to IS NULL OR {s.day('m.valid_to')} >= f.day) AND COALESCE(m.status, '') <> 'Canceled')"""
    sold_within = f"""EXISTS (SELECT 1 FROM hub_memberships m WHERE m.tenant_id = :tenant_id AND {s.live('m')}
        AND m.location_id = f.location_id AND {s.day('m.valid_from')} >= f.day
        AND {s.days_between(s.day('m.valid_from'), 'f.day')} <= {{days}})"""
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, f.day,
           COUNT(*) AS opportunities,
           SUM(CASE WHEN {sold_within.format(days=0)} THEN 1 ELSE 0 END) AS sold_same_day,
           SUM(CASE WHEN {sold_within.format(days=MEMBERSHIP_FOLLOW_UP_DAYS)} THEN 1 ELSE 0 END) AS sold_within_30_days,
           {s.ratio(f"SUM(CASE WHEN {sold_within.format(days=0)} THEN 1 ELSE 0 END)", "COUNT(*)")} AS conversion_rate_same_day,
           {s.ratio(f"SUM(CASE WHEN {sold_within.format(days=MEMBERSHIP_FOLLOW_UP_DAYS)} THEN 1 ELSE 0 END)", "COUNT(*)")}
             AS conversion_rate_30_days
    FROM (SELECT j.id AS job_id, j.location_id, {s.day('j.completed_on')} AS day FROM hub_jobs j
          WHERE j.tenant_id = :tenant_id AND {s.live('j')} AND j.job_status = 'Completed'
            AND j.completed_on IS NOT NULL AND j.location_id IS NOT NULL) f
    WHERE NOT {covered}
    GROUP BY f.day"""


def _calls_query(s: Sql) -> str:
    bookable = "c.call_type IN ('Booked', 'Unbooked')"
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, {s.day('c.created_on')} AS day,
           COUNT(*) AS inbound_calls,
           SUM(CASE WHEN {bookable} THEN 1 ELSE 0 END) AS bookable_calls,
           SUM(CASE WHEN c.call_type = 'Booked' THEN 1 ELSE 0 END) AS booked_calls,
           {s.ratio("SUM(CASE WHEN c.call_type = 'Booked' THEN 1 ELSE 0 END)", f"SUM(CASE WHEN {bookable} THEN 1 ELSE 0 END)")}
             AS booking_rate
    FROM hub_calls c
    WHERE c.tenant_id = :tenant_id AND {s.live('c')} AND c.direction = 'Inbound' AND c.created_on IS NOT NULL
    GROUP BY {s.day('c.created_on')}"""


def _collections_query(s: Sql) -> str:
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, {s.day('p.payment_date')} AS day,
           COUNT(*) AS payments, SUM(p.total) AS collected
    FROM hub_payments p
    WHERE p.tenant_id = :tenant_id AND {s.live('p')} AND p.payment_date IS NOT NULL
    GROUP BY {s.day('p.payment_date')}"""


def _receivables_query(s: Sql) -> str:
    age = s.days_between(s.date_param(":as_of"), s.day("i.invoice_date"))
    bucket = "CASE " + " ".join(
        f"WHEN {age} <= {high} THEN '{label}'" for _low, high, label in AGING_BUCKETS if high is not None
    ) + f" ELSE '{AGING_BUCKETS[-1][2]}' END"
    return f"""
    SELECT CAST(:tenant_id AS BIGINT) AS tenant_id, {s.date_param(':as_of')} AS as_of, {bucket} AS aging_bucket,
           COUNT(*) AS open_invoices, SUM(i.balance) AS open_balance
    FROM hub_invoices i
    WHERE i.tenant_id = :tenant_id AND {s.live('i')} AND i.balance > 0 AND i.invoice_date IS NOT NULL
      AND {s.day('i.invoice_date')} <= {s.date_param(':as_of')}
    GROUP BY {bucket}"""


MARTS = (
    Mart(
        "revenue_by_business_unit",
        "Revenue per day and business unit, as ServiceTitan's Completed Revenue: income items (invoice items "
        "whose GL account type is Income) of invoices of completed jobs, dated by the job's completion day and "
        "credited to the item's business unit (the job's when the item has none). Adjustment invoices are "
        "left out of completed revenue and shown apart, with invoices without a job, dated by invoice date and "
        "credited to the item's business unit (else the invoice's). completed_jobs: jobs with completed revenue "
        "in that day and unit (a job whose items span units counts in each).",
        (_c("tenant_id", I), _c("day", DAY), _c("business_unit_id", I), _c("completed_revenue", M),
         _c("non_job_revenue", M), _c("adjustment_revenue", M), _c("total_revenue", M), _c("completed_jobs", I)),
        ("tenant_id", "day", "business_unit_id"),
        ("hub_invoice_items", "hub_invoices", "hub_jobs"),
        _revenue_query,
        (("completed_revenue_last_30_days", "completed_revenue", 30),),
    ),
    Mart(
        "sales",
        "Sales per day and business unit: sold estimates and their subtotal, dated by the estimate's sold-on "
        "day and credited to the estimate's business unit (sales are not revenue: a job can be sold one day and "
        "invoiced later).",
        (_c("tenant_id", I), _c("day", DAY), _c("business_unit_id", I), _c("sold_estimates", I), _c("sales", M)),
        ("tenant_id", "day", "business_unit_id"),
        ("hub_estimates",),
        _sales_query,
        (("sales_last_30_days", "sales", 30),),
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
        (_c("tenant_id", I), _c("day", DAY), _c("business_unit_id", I), _c("completed_jobs", I),
         _c("opportunities", I), _c("converted", I), _c("conversion_rate", R), _c("invoiced_subtotal", M),
         _c("average_ticket", M), _c("sales_opportunities", I), _c("closed", I), _c("close_rate", R)),
        ("tenant_id", "day", "business_unit_id"),
        ("hub_jobs", "hub_job_types", "hub_invoices", "hub_estimates"),
        _conversion_query,
        (("completed_jobs_last_30_days", "completed_jobs", 30),),
    ),
    Mart(
        "technician_performance",
        "Per day (job completion) and technician: completed jobs credited once to every technician assigned "
        "to them in full (no split weighting: a job of two technicians counts for both), opportunities, "
        "converted jobs and conversion rate (as in job_conversion), sales opportunities, closed, and the sold "
        "estimates' subtotal of their jobs (also in full for each).",
        (_c("tenant_id", I), _c("day", DAY), _c("technician_id", I), _c("completed_jobs", I),
         _c("opportunities", I), _c("converted", I), _c("conversion_rate", R), _c("sales_opportunities", I),
         _c("closed", I), _c("sold_on_jobs", M)),
        ("tenant_id", "day", "technician_id"),
        ("hub_jobs", "hub_job_types", "hub_invoices", "hub_estimates", "hub_appointment_assignments"),
        _technician_query,
    ),
    Mart(
        "membership_conversion",
        "Membership conversion per day (job completion). Opportunity: a completed job at a location with no "
        "membership in force that day. Two variants: sold the same day (ServiceTitan's: only memberships "
        f"sold \"for today\") and sold within {MEMBERSHIP_FOLLOW_UP_DAYS} days (a membership starting at the "
        "location from the job's day on, as sold on a later visit). A membership's sale day is its start "
        "(from); the counts are of jobs converted, so one membership converts every opportunity at its location "
        "in the window before it.",
        (_c("tenant_id", I), _c("day", DAY), _c("opportunities", I), _c("sold_same_day", I),
         _c("sold_within_30_days", I), _c("conversion_rate_same_day", R), _c("conversion_rate_30_days", R)),
        ("tenant_id", "day"),
        ("hub_jobs", "hub_memberships"),
        _membership_query,
    ),
    Mart(
        "call_booking",
        "Inbound calls per day (call creation): bookable calls (call type Booked or Unbooked; excused and "
        "abandoned calls are not), booked calls, and the booking rate booked / bookable.",
        (_c("tenant_id", I), _c("day", DAY), _c("inbound_calls", I), _c("bookable_calls", I),
         _c("booked_calls", I), _c("booking_rate", R)),
        ("tenant_id", "day"),
        ("hub_calls",),
        _calls_query,
        (("booked_calls_last_30_days", "booked_calls", 30),),
    ),
    Mart(
        "collections",
        "Collections per day (payment date): payments received and their total.",
        (_c("tenant_id", I), _c("day", DAY), _c("payments", I), _c("collected", M)),
        ("tenant_id", "day"),
        ("hub_payments",),
        _collections_query,
        (("collected_last_30_days", "collected", 30),),
    ),
    Mart(
        "accounts_receivable",
        "Accounts receivable on the build day: the invoices' current open balances (balance > 0) by age "
        "since the invoice date, in buckets 0-30, 31-60, 61-90 and 91+ days.",
        (_c("tenant_id", I), _c("as_of", DAY), _c("aging_bucket", T), _c("open_invoices", I), _c("open_balance", M)),
        ("tenant_id", "as_of", "aging_bucket"),
        ("hub_invoices",),
        _receivables_query,
        (("open_balance", "open_balance", 0),),
    ),
)

MARTS_BY_NAME = {mart.name: mart for mart in MARTS}
mart_metadata = sa.MetaData()


def mart_table(mart: Mart) -> sa.Table:
    """The SQLAlchemy table of a mart."""
    if mart.table_name in mart_metadata.tables:
        return mart_metadata.tables[mart.table_name]
    key = set(mart.key)
    return sa.Table(
        mart.table_name, mart_metadata,
        *(sa.Column(c.name, sql_type(c.type), primary_key=c.name in key, autoincrement=False) for c in mart.columns),
        sa.Column("built_at", UtcDateTime(), nullable=False),
    )


@dataclass
class MartBuild:
    """One mart rebuilt for one tenant."""

    table: str
    row_count: int
    headline: dict[str, float]


def build_mart(conn: sa.Connection, mart: Mart, tenant_id: int, *, as_of: date, built_at: object) -> MartBuild:
    """Replace the tenant's rows of a mart with a fresh computation (one statement each way)."""
    s = Sql(conn.dialect.name)
    table = mart_table(mart)
    names = [c.name for c in mart.columns]
    conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
    statement = f"INSERT INTO {mart.table_name} ({', '.join(names)}, built_at) SELECT q.*, :built_at FROM ({mart.query(s)}) q"
    params: dict[str, object] = {"tenant_id": tenant_id, "built_at": built_at}
    binds = [sa.bindparam("built_at", type_=UtcDateTime())]
    if ":as_of" in statement:
        params["as_of"] = as_of
        binds.append(sa.bindparam("as_of", type_=sa.Date()))
    conn.execute(sa.text(statement).bindparams(*binds), params)
    count = conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)).scalar_one()
    return MartBuild(mart.table_name, count, _headline(conn, mart, tenant_id))


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
    """Changes whenever the mart's columns or query change (then it is rebuilt for every tenant)."""
    import hashlib

    shape = repr(([(c.name, c.type.value) for c in mart.columns], mart.key, mart.query(Sql(dialect))))
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def ensure_mart_tables(engine: sa.Engine, marts: tuple[Mart, ...] = MARTS) -> None:
    """Create missing mart tables; recreate one whose columns no longer match its definition."""
    from st_pipeline.warehouse.access import secure_tables

    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        existing = set(inspector.get_table_names())
        created = False
        for mart in marts:
            table = mart_table(mart)
            if mart.table_name in existing:
                if [c["name"] for c in inspector.get_columns(mart.table_name)] == [c.name for c in table.columns]:
                    continue
                table.drop(conn)
            table.create(conn)
            created = True
        if created:
            secure_tables(conn)
