"""Each tenant's time zone: the IANA name of the calendar its ServiceTitan reports in.

ServiceTitan's API does not expose it, so the operator sets it (``st-pipeline tenant
set-time-zone``). Existing tenants get NULL: not set, their days stay UTC until it is set.

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
    op.add_column("st_tenants", sa.Column("time_zone", sa.String(64), nullable=True))
