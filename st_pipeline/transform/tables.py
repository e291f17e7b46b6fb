"""Hub table definitions, made from their specs, and their creation in a warehouse."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.transform.spec import HubTable
from st_pipeline.transform.types import sql_type
from st_pipeline.warehouse.access import secure_tables
from st_pipeline.warehouse.tables import transform_state_table

hub_metadata = sa.MetaData()


_defining = threading.Lock()


def hub_table(spec: HubTable) -> sa.Table:
    """The SQLAlchemy table of a hub spec: its columns, then ``tenant_id`` and the bookkeeping ones."""
    with _defining:  # defined once per process, whichever thread asks first
        if spec.table_name in hub_metadata.tables:
            return hub_metadata.tables[spec.table_name]
        return _define(spec)


def _define(spec: HubTable) -> sa.Table:
    key = set(spec.key)
    columns = [
        sa.Column(c.name, sql_type(c.type), primary_key=c.name in key, autoincrement=False, nullable=c.name not in key)
        for c in spec.columns
    ]
    # Every reference is indexed: marts join along them, and the referential check looks them up.
    indexes = [
        sa.Index(f"ix_{spec.table_name}_{ref.column}", "tenant_id", ref.column)
        for ref in spec.references
        if ref.column not in spec.key[:1]
    ]
    return sa.Table(
        spec.table_name,
        hub_metadata,
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        *columns,
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        sa.Column("source_modified_on", UtcDateTime(), nullable=True),
        sa.Column("built_at", UtcDateTime(), nullable=False),
        *indexes,
    )


def ensure_hub_tables(conn: sa.Connection, specs: tuple[HubTable, ...]) -> list[str]:
    """Create missing hub tables; recreate one whose columns no longer match its spec; add missing indexes.

    Runs in the caller's transaction, inside ``schema_change_lock``. Returns the names of the
    tables (re)created. A recreated table's spec fingerprint changed, so every tenant's next build of
    it is a full one.
    """
    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names())
    created = []
    for spec in specs:
        table = hub_table(spec)
        if spec.table_name in existing:
            have = [c["name"] for c in inspector.get_columns(spec.table_name)]
            if have == [c.name for c in table.columns]:
                indexed = {ix["name"] for ix in inspector.get_indexes(spec.table_name)}
                for index in table.indexes:
                    if index.name not in indexed:
                        index.create(conn)
                continue
            table.drop(conn)
            conn.execute(transform_state_table.delete().where(transform_state_table.c.table_name == spec.table_name))
        table.create(conn)
        created.append(spec.table_name)
    if created:
        secure_tables(conn)
    return created
