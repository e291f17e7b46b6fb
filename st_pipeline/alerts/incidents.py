"""The incident table: one row per incident key, open until resolved.

A resolved row is reused when the same key opens again (a new incident: new ``opened_at``,
``resolved_at`` cleared, ``notified`` reset).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime

INCIDENT_KEY_MAX_LENGTH = 512

metadata = sa.MetaData()

incidents_table = sa.Table(
    "st_alert_incidents",
    metadata,
    sa.Column("incident_key", sa.String(INCIDENT_KEY_MAX_LENGTH), primary_key=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("tenant_id", sa.BigInteger, nullable=True),
    sa.Column("asset", sa.String(500), nullable=True),
    sa.Column("run_id", sa.String(200), nullable=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("link", sa.Text, nullable=True),
    sa.Column("opened_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen_at", UtcDateTime(), nullable=False),
    sa.Column("resolved_at", UtcDateTime(), nullable=True),
    # Whether at least one channel received the opening message.
    sa.Column("notified", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_st_alert_incidents_open", "resolved_at", "kind"),
)


@dataclass(frozen=True)
class Incident:
    """A row of ``st_alert_incidents``."""

    incident_key: str
    kind: str
    tenant_id: int | None
    asset: str | None
    run_id: str | None
    title: str
    reason: str
    link: str | None
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    notified: bool

    @property
    def is_open(self) -> bool:
        """Whether the incident has not been resolved."""
        return self.resolved_at is None

    @classmethod
    def from_row(cls, row: sa.Row) -> Incident:
        """Build from a selected row of ``incidents_table``."""
        return cls(**{column.name: getattr(row, column.name) for column in incidents_table.columns})
