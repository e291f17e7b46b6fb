"""The registry as it was before it had migrations: tenants, their status, endpoint flags, the audit trail.

A registry made by that code (the same four tables and index, no version table) is adopted by
``st-pipeline db upgrade``: its tables are compared with these and the registry is stamped at 0001.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamp() -> sa.DateTime:
    # What st_pipeline.sqltypes.UtcDateTime stores: the code reads it back in UTC.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "st_tenants",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("client_secret_encrypted", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
    )
    op.create_table(
        "st_tenant_status",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("needs_credentials", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=False),
    )
    op.create_table(
        "st_endpoint_flags",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=False),
    )
    op.create_table(
        "st_audit_log",
        sa.Column(
            "audit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("command", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.BigInteger, nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_st_audit_log_tenant", "st_audit_log", ["tenant_id", "at"])
