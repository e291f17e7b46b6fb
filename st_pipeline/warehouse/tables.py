"""Raw tables: one per ServiceTitan dataset, the current state of every record.

``raw_<module>_<resource>`` (e.g. ``raw_crm_customers``) with columns ``tenant_id``, ``id``,
``modified_on``, ``active``, ``payload`` (the record as received, JSON), ``extracted_at`` and
``run_id``, ``deleted_at``; primary key ``(tenant_id, id)``. Records that fail validation go to
``raw_quarantine``.
"""

from __future__ import annotations

import hashlib
import threading

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.sqltypes import UtcDateTime

metadata = sa.MetaData()

# JSONB on PostgreSQL (indexable, compact); JSON text elsewhere.
PayloadType = sa.JSON().with_variant(JSONB(), "postgresql")


def changed_index_name(table_name: str) -> str:
    """The name of a raw table's (tenant_id, extracted_at) index, within PostgreSQL's 63 characters."""
    digest = hashlib.sha256(table_name.encode()).hexdigest()[:8]
    return f"ix_{table_name[:40]}_{digest}_changed"


def raw_table_name(dataset: Dataset) -> str:
    return f"raw_{dataset.slug}"


_defining = threading.Lock()


def raw_table(dataset: Dataset) -> sa.Table:
    """The raw table of a dataset (defined once per process, whichever thread asks first)."""
    name = raw_table_name(dataset)
    with _defining:
        if name in metadata.tables:
            return metadata.tables[name]
        return _define_raw(name)


def _define_raw(name: str) -> sa.Table:
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
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        # What changed since a point in time (incremental transforms read by it).
        sa.Index(changed_index_name(name), "tenant_id", "extracted_at"),
    )


# Records that failed validation, kept with the reason; the rest of their page loads.
quarantine_table = sa.Table(
    "raw_quarantine",
    metadata,
    sa.Column(
        "quarantine_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("tenant_id", sa.BigInteger, nullable=False),
    sa.Column("dataset", sa.String(200), nullable=False),
    sa.Column("record_id", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload_text", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("quarantined_at", UtcDateTime(), nullable=False),
    sa.Index("ix_raw_quarantine_tenant_dataset", "tenant_id", "dataset"),
)


# Where each (tenant, dataset) sync stands: the export token or the list watermark, committed in
# the same transaction as the page it covers.
sync_state_table = sa.Table(
    "st_sync_state",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Column("cursor_kind", sa.String(40), nullable=False),
    sa.Column("cursor", sa.Text, nullable=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

# One row per (run, tenant, dataset): what the sync did, updated page by page.
sync_log_table = sa.Table(
    "st_sync_log",
    metadata,
    sa.Column("log_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("tenant_id", sa.BigInteger, nullable=False),
    sa.Column("dataset", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("records", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pages", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("retries", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("throttled", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("quarantined", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cursor_before", sa.Text, nullable=True),
    sa.Column("cursor_after", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("rows_written", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("duplicates", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reported_total", sa.BigInteger, nullable=True),
    sa.Column("duration_s", sa.Float, nullable=True),
    sa.Column("error_kind", sa.String(60), nullable=True),  # the error's class, e.g. StuckCursorError
    sa.Index("ix_st_sync_log_tenant", "tenant_id", "dataset", "started_at"),
    sa.Index("ix_st_sync_log_run", "run_id"),
    sa.Index("ix_st_sync_log_started", "started_at"),
)

# The latest state of each (tenant, dataset), kept by the sync as it goes: what freshness checks,
# alerts and `st-pipeline status` read instead of scanning the log, and the raw table's row count
# for the tenant (maintained by the write path, never counted).
dataset_status_table = sa.Table(
    "st_dataset_status",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Column("row_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_run_id", sa.String(64), nullable=True),
    sa.Column("last_status", sa.String(20), nullable=True),
    sa.Column("last_started_at", UtcDateTime(), nullable=True),
    sa.Column("last_ended_at", UtcDateTime(), nullable=True),
    sa.Column("last_success_at", UtcDateTime(), nullable=True),
    sa.Column("last_changed_at", UtcDateTime(), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
)

# Which run holds a tenant's sync lock (the lock itself: a PostgreSQL advisory lock, or a file
# lock beside a SQLite warehouse); read to say who is busy.
tenant_lock_table = sa.Table(
    "st_tenant_locks",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("acquired_at", UtcDateTime(), nullable=False),
)

# Where each (tenant, hub table) build stands: the raw rows changed since ``watermark`` are the
# next incremental build's work; a hub table whose spec ``fingerprint`` changed is rebuilt in full.
transform_state_table = sa.Table(
    "st_transform_state",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("table_name", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("watermark", UtcDateTime(), nullable=True),
    sa.Column("row_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("built_at", UtcDateTime(), nullable=False),
)

# Which database role may read which tenant's rows (PostgreSQL row-level security; ``access.py``).
tenant_access_table = sa.Table(
    "st_tenant_access",
    metadata,
    sa.Column("role_name", sa.String(63), primary_key=True),
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("granted_at", UtcDateTime(), nullable=False),
)

# Tables whose shape is managed by the migrations (``schema.py``); raw tables are created on
# demand, one per dataset, and altered by migrations when their shape changes.
CONTROL_TABLES = (
    quarantine_table,
    sync_state_table,
    sync_log_table,
    tenant_access_table,
    dataset_status_table,
    tenant_lock_table,
    transform_state_table,
)


# What belongs to the warehouse: raw, hub and mart tables and the sync state and log. Anything else
# in the same schema (a registry someone put there, another tool's tables) is never granted or purged.
WAREHOUSE_TABLE_PREFIXES = ("raw_", "hub_", "mart_")
WAREHOUSE_CONTROL_TABLES = frozenset(
    {
        sync_state_table.name,
        sync_log_table.name,
        quarantine_table.name,
        dataset_status_table.name,
        tenant_lock_table.name,
        transform_state_table.name,
    }
)


def is_warehouse_table(name: str) -> bool:
    return name.startswith(WAREHOUSE_TABLE_PREFIXES) or name in WAREHOUSE_CONTROL_TABLES


def tenant_table_names(conn: sa.Connection) -> list[str]:
    """Every warehouse table (of the default schema) with a ``tenant_id`` column, by name."""
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t "
            "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id' "
            "AND t.table_type = 'BASE TABLE' ORDER BY c.table_name"
        )
    else:
        query = (
            "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p "
            "WHERE m.type = 'table' AND p.name = 'tenant_id' ORDER BY m.name"
        )
    return [name for name in conn.execute(sa.text(query)).scalars() if is_warehouse_table(name)]


def purge_tenant(engine: sa.Engine, tenant_id: int) -> dict[str, int]:
    """Delete every row of ``tenant_id`` from every tenant table, in one transaction; rows per table."""
    with engine.begin() as conn:
        deleted = {}
        for name in tenant_table_names(conn):
            table = sa.table(name, sa.column("tenant_id"))
            count = conn.execute(table.delete().where(table.c.tenant_id == tenant_id)).rowcount
            if count:
                deleted[name] = count
    return deleted
