"""Warehouse schema versions (Alembic, shipped in the package): create, check, upgrade.

The rules are those of ``st_pipeline.schema_versions``: an empty warehouse is created at the head
revision by its first run (``ensure_schema``); one that is behind is refused until
``st-pipeline db upgrade``, one ahead of this code is refused. ``check_schema`` reads the version
table with plain SQL against ``HEAD_REVISION``, so that a sync does not load Alembic (a test keeps
``REVISIONS`` equal to the migrations).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from st_pipeline.schema_versions import SchemaOutOfDateError, Upgrade, VersionedSchema, schema_change_lock
from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.warehouse.access import secure_tables
from st_pipeline.warehouse.tables import CONTROL_TABLES, is_warehouse_table, metadata, raw_table, raw_table_name

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS",
    "REVISIONS",
    "VERSION_TABLE",
    "WAREHOUSE_SCHEMA",
    "SchemaOutOfDateError",
    "check_schema",
    "current_revision",
    "ensure_raw_tables",
    "ensure_schema",
    "head_revision",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "st_pipeline_schema_version"
# Every migration, oldest first: append each new one (test_schema checks this against Alembic).
REVISIONS = ("0001", "0002", "0003", "0004", "0005")
HEAD_REVISION = REVISIONS[-1]

_CONTROL_NAMES = frozenset(table.name for table in CONTROL_TABLES)


def _is_ours(name: str) -> bool:
    return is_warehouse_table(name) or name in _CONTROL_NAMES


WAREHOUSE_SCHEMA = VersionedSchema(
    label="warehouse",
    variable="ST_PIPELINE_WAREHOUSE_URL",
    migrations=MIGRATIONS,
    version_table=VERSION_TABLE,
    revisions=REVISIONS,
    owns_table=_is_ours,
    # On PostgreSQL, tables added since the last upgrade get the row-level security of
    # ``st-pipeline access`` in the same transaction.
    after_upgrade=secure_tables,
)


def head_revision() -> str:
    """The head revision as Alembic computes it from the migration scripts."""
    return WAREHOUSE_SCHEMA.alembic_revisions()[-1]


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at; None before any migration."""
    return WAREHOUSE_SCHEMA.current_revision(engine)


def upgrade(engine: sa.Engine, revision: str = "head") -> Upgrade:
    """Apply every migration up to ``revision`` (idempotent); then secure every tenant table.

    Takes the schema-change lock; refuses a warehouse ahead of this code.
    """
    return WAREHOUSE_SCHEMA.upgrade(engine, revision)


def ensure_raw_tables(engine: sa.Engine, datasets: list[Dataset]) -> None:
    """Create the raw tables of ``datasets`` that do not exist yet, secured like every tenant table."""
    existing = set(sa.inspect(engine).get_table_names())
    if all(raw_table_name(d) in existing for d in datasets):
        return
    # Another tenant's first run may be creating them right now.
    with schema_change_lock(engine), engine.begin() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        missing = [raw_table(d) for d in datasets if raw_table_name(d) not in existing]
        if missing:
            metadata.create_all(conn, tables=missing)
            secure_tables(conn)


def check_schema(engine: sa.Engine, where: str) -> None:
    """Raise ``SchemaOutOfDateError`` unless the warehouse is at the head revision (never changes it)."""
    WAREHOUSE_SCHEMA.check(engine, where)


def ensure_schema(engine: sa.Engine, where: str) -> bool:
    """What a run calls first: create an empty warehouse's schema (True if this call did), else check it.

    A warehouse that is behind or ahead raises ``SchemaOutOfDateError`` and is left as it is.
    """
    return WAREHOUSE_SCHEMA.ensure(engine, where)
