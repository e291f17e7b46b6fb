"""Quarantine for records that fail validation (the schema of release 0.1: raw tables + quarantine).

Raw tables themselves are created on demand from the catalogue (``tables.ensure_raw_tables``);
migrations change the ones that already exist.

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


def upgrade() -> None:
    op.create_table(
        "raw_quarantine",
        sa.Column(
            "quarantine_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("tenant_id", sa.BigInteger, nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("record_id", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload_text", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_raw_quarantine_tenant_dataset", "raw_quarantine", ["tenant_id", "dataset"])
