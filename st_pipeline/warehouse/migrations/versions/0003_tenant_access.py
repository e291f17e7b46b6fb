"""Per-tenant read access for BI roles: ``st_tenant_access`` (row-level security is applied by
``st-pipeline db upgrade`` and ``st-pipeline access grant``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "st_tenant_access",
        sa.Column("role_name", sa.String(63), primary_key=True),
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("st_tenant_access")
