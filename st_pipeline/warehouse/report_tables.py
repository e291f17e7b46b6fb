"""Report tables: the rows of one declared ServiceTitan report, per tenant and period.

``raw_report_<name>`` (``name`` as declared: a lowercase slug) has columns ``tenant_id``,
``report_id``, ``period_start`` and ``period_end`` (the report's From and To days, the tenant's
calendar), ``row_number`` (the row's place in the report's data), ``payload`` (the row as
{field name: value}, JSON), ``definition`` (the fingerprint of the report's fields the row was read
under), ``extracted_at`` and ``run_id``; primary key ``(tenant_id, period_start, period_end,
row_number)``. Writing a period replaces that period's rows in one transaction, so re-reading a
period is idempotent and a crash leaves the previous rows. Report tables are period tables
(``period_tables``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.warehouse.period_tables import (
    ensure_period_table,
    period_key_columns,
    period_payloads,
    replace_period_rows,
)
from st_pipeline.warehouse.tables import PayloadType

report_metadata = sa.MetaData()
_defining = threading.Lock()


def report_table_name(name: str) -> str:
    return f"raw_report_{name}"


def report_table(name: str) -> sa.Table:
    """The table of the declared report ``name`` (defined once per process)."""
    table_name = report_table_name(name)
    with _defining:
        if table_name in report_metadata.tables:
            return report_metadata.tables[table_name]
        return sa.Table(
            table_name,
            report_metadata,
            *period_key_columns(),
            sa.Column("report_id", sa.BigInteger, nullable=False),
            sa.Column("payload", PayloadType, nullable=False),
            sa.Column("definition", sa.String(64), nullable=False),
            sa.Column("extracted_at", UtcDateTime(), nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
        )


def ensure_report_table(engine: sa.Engine, name: str) -> sa.Table:
    return ensure_period_table(engine, report_table(name))


def stored_definitions(conn: sa.Connection, table: sa.Table, tenant_id: int) -> set[str]:
    """The fingerprints of the definitions the tenant's stored rows were read under."""
    rows = conn.execute(sa.select(sa.distinct(table.c.definition)).where(table.c.tenant_id == tenant_id))
    return {row[0] for row in rows}


def replace_period(
    conn: sa.Connection,
    table: sa.Table,
    *,
    tenant_id: int,
    report_id: int,
    period: tuple[date, date],
    rows: Sequence[dict[str, Any]],
    definition: str,
    extracted_at: datetime,
    run_id: str,
) -> int:
    """Replace the tenant's rows of ``period`` with ``rows``; returns the rows deleted."""
    return replace_period_rows(
        conn,
        table,
        tenant_id=tenant_id,
        period=period,
        rows=[
            {
                "report_id": report_id,
                "payload": row,
                "definition": definition,
                "extracted_at": extracted_at,
                "run_id": run_id,
            }
            for row in rows
        ],
    )


def period_rows(conn: sa.Connection, table: sa.Table, tenant_id: int, period: tuple[date, date]) -> list[dict]:
    """The stored rows of one period, in report order."""
    return period_payloads(conn, table, tenant_id, period)
