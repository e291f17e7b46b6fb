"""Alembic environment of the warehouse (see ``st_pipeline.schema_versions``)."""

from st_pipeline.schema_versions import run_migrations_in_alembic_environment

run_migrations_in_alembic_environment()
