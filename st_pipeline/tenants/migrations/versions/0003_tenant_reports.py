"""The ServiceTitan reports an operator declares per tenant (``st-pipeline report add``).

One row per tenant and report name: the report's category and id, its fixed parameters (a JSON
object; the period comes from each run), how many trailing days a scheduled run re-reads, and
whether it is enabled. A registry upgraded to 0003 has no declared reports.

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
        "st_tenant_reports",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("report_id", sa.BigInteger, nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("window_days", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        # What st_pipeline.sqltypes.UtcDateTime stores: the code reads it back in UTC.
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["st_tenants.tenant_id"],
            name="fk_st_tenant_reports_tenant",
            ondelete="CASCADE",
        ),
    )
