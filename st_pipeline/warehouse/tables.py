"""Raw tables: one per ServiceTitan dataset, the current state of every record.

``raw_<module>_<resource>`` (e.g. ``raw_crm_customers``) with columns ``tenant_id``, ``id``,
``modified_on``, ``active``, ``payload`` (the record as received, JSON), ``extracted_at`` and
``run_id``; primary key ``(tenant_id, id)``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.sqltypes import UtcDateTime

metadata = sa.MetaData()

# JSONB on PostgreSQL (indexable, compact); JSON text elsewhere.
PayloadType = sa.JSON().with_variant(JSONB(), "postgresql")


def raw_table_name(dataset: Dataset) -> str:
    return f"raw_{dataset.slug}"


def raw_table(dataset: Dataset) -> sa.Table:
    """The raw table of a dataset (defined once per process)."""
    name = raw_table_name(dataset)
    if name in metadata.tables:
        return metadata.tables[name]
    return sa.Table(
        name,
        metadata,
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("modified_on", UtcDateTime(), nullable=True),
        sa.Column("active", sa.Boolean, nullable=True),
        sa.Column("payload", PayloadType, nullable=False),
        sa.Column("extracted_at", UtcDateTime(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
    )


def ensure_raw_tables(engine: sa.Engine, datasets: list[Dataset]) -> None:
    """Create the raw tables that do not exist yet."""
    tables = [raw_table(dataset) for dataset in datasets]
    metadata.create_all(engine, tables=tables)
