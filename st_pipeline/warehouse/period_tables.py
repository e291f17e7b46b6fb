"""Period tables: rows read for one tenant and one period (a day or a range of days), replaced a
period at a time.

A period table's primary key is ``(tenant_id, period_start, period_end, row_number)``: the
tenant, the period's first and last day (the tenant's calendar) and the row's place in what was
read for it. Besides these, each table has its own columns (a ``payload`` of the row as JSON, the
run that wrote it, ...). Writing a period deletes the tenant's rows of that period and inserts
the new ones in the caller's transaction, so re-reading a period is idempotent and a crash before
the commit leaves the previous rows. Declared reports (``report_tables``) and the date-range
datasets (``date_range_tables``) are period tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa

from st_pipeline.schema_versions import schema_change_lock
from st_pipeline.warehouse.access import secure_tables

Period = tuple[date, date]


def period_key_columns() -> list[sa.Column[Any]]:
    """New copies of the four key columns every period table starts with."""
    return [
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("period_start", sa.Date, primary_key=True),
        sa.Column("period_end", sa.Date, primary_key=True),
        sa.Column("row_number", sa.Integer, primary_key=True, autoincrement=False),
    ]


def ensure_period_table(engine: sa.Engine, table: sa.Table) -> sa.Table:
    """Create ``table`` if it does not exist yet (secured like every tenant table); returns it."""
    if sa.inspect(engine).has_table(table.name):
        return table
    # Another tenant's first run may be creating it right now.
    with schema_change_lock(engine), engine.begin() as conn:
        if not sa.inspect(conn).has_table(table.name):
            table.create(conn)
            secure_tables(conn)
    return table


def _of_period(table: sa.Table, tenant_id: int, period: Period) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.tenant_id == tenant_id, table.c.period_start == period[0], table.c.period_end == period[1])


def replace_period_rows(
    conn: sa.Connection,
    table: sa.Table,
    *,
    tenant_id: int,
    period: Period,
    rows: Sequence[Mapping[str, Any]],
) -> int:
    """Replace the tenant's rows of ``period`` with ``rows`` (each its non-key columns), numbered from 1
    in order; returns how many rows were deleted. Runs in the caller's transaction."""
    deleted = conn.execute(sa.delete(table).where(_of_period(table, tenant_id, period))).rowcount
    if rows:
        start, end = period
        conn.execute(
            sa.insert(table),
            [
                {**row, "tenant_id": tenant_id, "period_start": start, "period_end": end, "row_number": number}
                for number, row in enumerate(rows, start=1)
            ],
        )
    return int(deleted or 0)


def period_payloads(conn: sa.Connection, table: sa.Table, tenant_id: int, period: Period) -> list[dict[str, Any]]:
    """The ``payload`` of each stored row of one period, in row order."""
    query = sa.select(table.c.payload).where(_of_period(table, tenant_id, period)).order_by(table.c.row_number)
    return [dict(row[0]) for row in conn.execute(query)]
