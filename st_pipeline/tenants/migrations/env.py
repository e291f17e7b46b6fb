"""Alembic environment of the tenant registry: runs on the connection handed in by ``tenants.schema``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from st_pipeline.tenants.schema import VERSION_TABLE

config = context.config


def _run(connection: sa.Connection) -> None:
    # A version table of its own: the registry may share a database with the warehouse (whose
    # revision is in st_pipeline_schema_version) or with Dagster's storage (alembic_version).
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
