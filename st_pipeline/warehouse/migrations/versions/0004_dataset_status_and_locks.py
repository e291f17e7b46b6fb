"""Cheap syncs: the latest state of each (tenant, dataset) with its row count, an honest sync log
(rows written, duplicates, reported total, duration per dataset; indexes for per-run reads and for
retention), and the holders of the per-tenant sync locks.

The status rows are filled from the log: latest status, last success, last change. Row counts
start unknown (-1) and are counted once, by the next sync of the pair.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("st_sync_log") as batch:
        batch.add_column(sa.Column("rows_written", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("duplicates", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("reported_total", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("duration_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("error_kind", sa.String(60), nullable=True))
    op.create_index("ix_st_sync_log_run", "st_sync_log", ["run_id"])
    op.create_index("ix_st_sync_log_started", "st_sync_log", ["started_at"])
    op.create_table(
        "st_dataset_status",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("dataset", sa.String(200), primary_key=True),
        sa.Column("row_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_run_id", sa.String(64), nullable=True),
        sa.Column("last_status", sa.String(20), nullable=True),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_table(
        "st_tenant_locks",
        sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The latest log row of each pair, and its last success; -1: the row count is not known yet.
    op.execute(
        "INSERT INTO st_dataset_status (tenant_id, dataset, row_count, last_run_id, last_status, last_started_at, "
        "last_ended_at, last_success_at, last_changed_at, last_error) "
        "SELECT l.tenant_id, l.dataset, -1, l.run_id, l.status, l.started_at, l.ended_at, "
        "(SELECT max(s.ended_at) FROM st_sync_log s WHERE s.tenant_id = l.tenant_id AND s.dataset = l.dataset "
        "AND s.status = 'succeeded'), "
        "(SELECT max(s.ended_at) FROM st_sync_log s WHERE s.tenant_id = l.tenant_id AND s.dataset = l.dataset "
        "AND s.status = 'succeeded' AND s.records > 0), l.error "
        "FROM st_sync_log l WHERE l.log_id IN (SELECT max(log_id) FROM st_sync_log GROUP BY tenant_id, dataset)"
    )


def downgrade() -> None:
    op.drop_table("st_tenant_locks")
    op.drop_table("st_dataset_status")
    op.drop_index("ix_st_sync_log_started", "st_sync_log")
    op.drop_index("ix_st_sync_log_run", "st_sync_log")
    with op.batch_alter_table("st_sync_log") as batch:
        for column in ("error_kind", "duration_s", "reported_total", "duplicates", "rows_written"):
            batch.drop_column(column)
