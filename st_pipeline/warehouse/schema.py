"""Warehouse schema versions (Alembic, shipped in the package): upgrade and check.

``st-pipeline db upgrade`` brings a database to the head revision; a sync refuses to run against
a warehouse that is behind, with a message saying so. The check reads the version table with
plain SQL against ``HEAD_REVISION``, so that a sync does not load Alembic (a test keeps the
constant equal to the migrations' head).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.warehouse.access import secure_tables
from st_pipeline.warehouse.locks import schema_change_lock
from st_pipeline.warehouse.tables import metadata, raw_table, raw_table_name

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "st_pipeline_schema_version"
# The newest migration; bump it with every new one (test_schema checks it against Alembic's head).
HEAD_REVISION = "0005"


class SchemaOutOfDateError(RuntimeError):
    """The warehouse's schema revision is not the one this code needs."""


def _config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The head revision as Alembic computes it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at; None before any migration."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (idempotent); then secure every tenant table.

    On PostgreSQL, tables added since the last upgrade get the row-level security of
    ``st-pipeline access`` in the same transaction.
    """
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)
        if revision == "head":
            secure_tables(conn)


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
    """Raise ``SchemaOutOfDateError`` unless the warehouse is at the head revision."""
    current, head = current_revision(engine), HEAD_REVISION
    if current != head:
        state = "has no st_pipeline schema yet" if current is None else f"is at schema revision {current}"
        raise SchemaOutOfDateError(
            f"the warehouse {where} {state}; this version of st_pipeline needs revision {head}. "
            "Run `st-pipeline db upgrade` (with the same ST_PIPELINE_WAREHOUSE_URL), then retry."
        )
