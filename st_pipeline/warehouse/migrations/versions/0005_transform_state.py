"""Transforms: where each (tenant, hub table) build stands, and an index on every raw table for
"what changed since" (``tenant_id, extracted_at``), which incremental builds read by.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from st_pipeline.warehouse.tables import changed_index_name

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _raw_tables() -> list[str]:
    return [
        name
        for name in sa.inspect(op.get_bind()).get_table_names()
        if name.startswith("raw_") and name != "raw_quarantine"
    ]


def upgrade() -> None:
    op.create_table(
        "st_transform_state",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("table_name", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("row_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
    )
    for name in _raw_tables():
        op.create_index(changed_index_name(name), name, ["tenant_id", "extracted_at"])


def downgrade() -> None:
    for name in _raw_tables():
        op.drop_index(changed_index_name(name), name)
    op.drop_table("st_transform_state")
