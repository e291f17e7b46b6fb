"""The fleet at a glance: per registered tenant, its state, time zone, freshness, failing datasets, open incidents.

Read-only: nothing is created or changed. A warehouse without ``st_dataset_status`` (no sync yet)
means every tenant never synced; a registry without the incident table means no incidents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from st_pipeline.alerts.incidents import Incident, incidents_table
from st_pipeline.sync.freshness import SyncHistory, tenant_is_stale
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline.warehouse.tables import dataset_status_table

FAILED = "failed"


@dataclass(frozen=True)
class TenantStatus:
    """One row of the fleet view."""

    tenant_id: int
    name: str
    enabled: bool
    needs_credentials: bool
    last_success: datetime | None  # None: never synced
    stale: bool
    failing_datasets: list[str]  # sorted dataset keys whose latest status is "failed"
    open_incidents: list[str]  # incident keys, oldest first
    time_zone: str | None = None  # IANA name; None: not set, the tenant's days are UTC

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "name": self.name,
            "enabled": self.enabled,
            "time_zone": self.time_zone,
            "needs_credentials": self.needs_credentials,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "stale": self.stale,
            "failing_datasets": len(self.failing_datasets),
            "failing_dataset_keys": list(self.failing_datasets),
            "open_incidents": len(self.open_incidents),
            "open_incident_keys": list(self.open_incidents),
        }


def fleet_status(
    registry: TenantRegistry, warehouse: sa.Engine, sla: timedelta, now: datetime | None = None
) -> list[TenantStatus]:
    """The status of every registered tenant, by tenant id."""
    now = now or datetime.now(UTC)
    tenants = registry.list()
    rejected = registry.needing_credentials()
    history = _history(warehouse)
    incidents = _open_incidents(registry.engine)
    failing: dict[int, list[str]] = {}
    for (tenant_id, dataset), status in history.latest_status.items():
        if status == FAILED:
            failing.setdefault(tenant_id, []).append(dataset)
    return [
        TenantStatus(
            tenant_id=t.tenant_id,
            name=t.name,
            enabled=t.enabled,
            needs_credentials=t.tenant_id in rejected,
            last_success=history.tenant_last_success(t.tenant_id),
            stale=tenant_is_stale(history, t, sla, now),
            failing_datasets=sorted(failing.get(t.tenant_id, [])),
            open_incidents=[i.incident_key for i in incidents if i.tenant_id == t.tenant_id],
            time_zone=t.time_zone,
        )
        for t in tenants
    ]


def _history(engine: sa.Engine) -> SyncHistory:
    if not sa.inspect(engine).has_table(dataset_status_table.name):
        return SyncHistory(last_success={}, latest_status={})
    return SyncHistory.read(engine)


def _open_incidents(engine: sa.Engine) -> list[Incident]:
    if not sa.inspect(engine).has_table(incidents_table.name):
        return []
    query = (
        incidents_table.select()
        .where(incidents_table.c.resolved_at.is_(None))
        .order_by(incidents_table.c.opened_at, incidents_table.c.incident_key)
    )
    with engine.connect() as conn:
        return [Incident.from_row(row) for row in conn.execute(query)]
