"""Warehouse schema versions (Alembic, shipped in the package): upgrade and check.

``st-pipeline db upgrade`` brings a database to the head revision; a sync refuses to run against
a warehouse that is behind, with a message saying so.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.warehouse.access import secure_tables
from st_pipeline.warehouse.tables import metadata, raw_table, raw_table_name

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "st_pipeline_schema_version"


class SchemaOutOfDateError(RuntimeError):
    """The warehouse's schema revision is not the one this code needs."""


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (idempotent); then secure every tenant table.

    On PostgreSQL, tables added since the last upgrade get the row-level security of
    ``st-pipeline access`` in the same transaction.
    """
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)
        if revision == "head":
            secure_tables(conn)


def ensure_raw_tables(engine: sa.Engine, datasets: list[Dataset]) -> None:
    """Create the raw tables of ``datasets`` that do not exist yet, secured like every tenant table."""
    inspector = sa.inspect(engine)
    missing = [raw_table(d) for d in datasets if not inspector.has_table(raw_table_name(d))]
    if not missing:
        return
    with engine.begin() as conn:
        metadata.create_all(conn, tables=missing)
        secure_tables(conn)


def check_schema(engine: sa.Engine, where: str) -> None:
    """Raise ``SchemaOutOfDateError`` unless the warehouse is at the head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "has no st_pipeline schema yet" if current is None else f"is at schema revision {current}"
        raise SchemaOutOfDateError(
            f"the warehouse {where} {state}; this version of st_pipeline needs revision {head}. "
            "Run `st-pipeline db upgrade` (with the same ST_PIPELINE_WAREHOUSE_URL), then retry."
        )
