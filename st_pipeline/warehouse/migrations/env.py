"""Alembic environment of the warehouse: runs on the connection handed in by ``schema.upgrade``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from st_pipeline.warehouse.schema import VERSION_TABLE

config = context.config


def _run(connection: sa.Connection) -> None:
    # Our own version table: Dagster's PostgreSQL storage keeps its revision in alembic_version,
    # and the two may share a database.
    context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
