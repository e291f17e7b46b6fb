"""Date-range tables: the rows of one date-range dataset (``servicetitan.date_ranges``), per tenant
and day.

``raw_<slug>`` (the dataset's slug: ``raw_marketing_campaign_cost_summary``,
``raw_marketingads_performance``, ``raw_marketingads_attributed_leads``) is a period table
(``period_tables``) whose period is one day (``period_start`` = ``period_end``, the tenant's
calendar), with ``range_start`` and ``range_end`` (the UTC instants of the day's two midnights,
the range asked for), ``payload`` (the row as served, JSON), ``extracted_at`` and ``run_id``;
primary key ``(tenant_id, period_start, period_end, row_number)``. Writing a day replaces that
day's rows in one transaction.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.warehouse.period_tables import period_key_columns
from st_pipeline.warehouse.tables import PayloadType

date_range_metadata = sa.MetaData()
_defining = threading.Lock()


def date_range_table_name(slug: str) -> str:
    return f"raw_{slug}"


def date_range_table(slug: str) -> sa.Table:
    """The table of the date-range dataset of ``slug`` (defined once per process)."""
    name = date_range_table_name(slug)
    with _defining:
        if name in date_range_metadata.tables:
            return date_range_metadata.tables[name]
        return sa.Table(
            name,
            date_range_metadata,
            *period_key_columns(),
            sa.Column("range_start", UtcDateTime(), nullable=False),
            sa.Column("range_end", UtcDateTime(), nullable=False),
            sa.Column("payload", PayloadType, nullable=False),
            sa.Column("extracted_at", UtcDateTime(), nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
        )
