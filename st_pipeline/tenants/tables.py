"""The registry database's tables: tenants, their operational status, endpoint flags, the reports
declared per tenant, the audit trail.

Kept in its own database (``ST_PIPELINE_REGISTRY_URL``) so that no credential, even encrypted,
lands in the warehouse.
"""

from __future__ import annotations

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime

metadata = sa.MetaData()

MAX_NAME_LENGTH = 200
MAX_TIME_ZONE_LENGTH = 64  # the longest IANA name is 32 characters

tenants_table = sa.Table(
    "st_tenants",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("client_id", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("client_secret_encrypted", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # The IANA zone of the tenant's ServiceTitan calendar (its API does not say); NULL: not set, days are UTC.
    # Added by migration 0002, so it is the last column.
    sa.Column("time_zone", sa.String(MAX_TIME_ZONE_LENGTH), nullable=True),
)

# Operational state of a tenant, apart from its credentials: set when ServiceTitan rejects them.
tenant_status_table = sa.Table(
    "st_tenant_status",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("needs_credentials", sa.Boolean, nullable=False, default=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

EVERY_TENANT = 0  # tenant_id of an endpoint flag that applies to all tenants (real ids are positive)

flags_table = sa.Table(
    "st_endpoint_flags",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("target", sa.String(200), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

MAX_REPORT_NAME_LENGTH = 40  # it becomes part of a table name, raw_report_<name>
MAX_REPORT_CATEGORY_LENGTH = 64

# The ServiceTitan reports an operator declared for a tenant (``tenants.reports``). Added by migration
# 0003. The tenant's rows go with it: ``TenantRegistry.remove`` deletes them, and so does the
# foreign key wherever the database enforces it (PostgreSQL; SQLite only with its pragma on).
reports_table = sa.Table(
    "st_tenant_reports",
    metadata,
    sa.Column(
        "tenant_id",
        sa.BigInteger,
        sa.ForeignKey("st_tenants.tenant_id", ondelete="CASCADE", name="fk_st_tenant_reports_tenant"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("name", sa.String(MAX_REPORT_NAME_LENGTH), primary_key=True),
    sa.Column("category", sa.String(MAX_REPORT_CATEGORY_LENGTH), nullable=False),
    sa.Column("report_id", sa.BigInteger, nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),  # a JSON object of parameter name → text value
    sa.Column("window_days", sa.Integer, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

# Every credential, lifecycle and flag change: what, when, to which tenant, by whom. Never a secret.
audit_table = sa.Table(
    "st_audit_log",
    metadata,
    sa.Column("audit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("command", sa.String(100), nullable=False),
    sa.Column("tenant_id", sa.BigInteger, nullable=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Index("ix_st_audit_log_tenant", "tenant_id", "at"),
)
