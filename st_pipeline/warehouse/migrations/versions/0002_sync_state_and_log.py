"""Incremental syncs: cursor per (tenant, dataset), the sync log, and ``deleted_at`` on raw tables.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "st_sync_state",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("dataset", sa.String(200), primary_key=True),
        sa.Column("cursor_kind", sa.String(40), nullable=False),
        sa.Column("cursor", sa.Text, nullable=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "st_sync_log",
        sa.Column("log_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.BigInteger, nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("records", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pages", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("retries", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("throttled", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("quarantined", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cursor_before", sa.Text, nullable=True),
        sa.Column("cursor_after", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_st_sync_log_tenant", "st_sync_log", ["tenant_id", "dataset", "started_at"])
    bind = op.get_bind()
    for table in sa.inspect(bind).get_table_names():
        if table.startswith("raw_") and table != "raw_quarantine":
            columns = {column["name"] for column in sa.inspect(bind).get_columns(table)}
            if "deleted_at" not in columns:
                op.add_column(table, sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
