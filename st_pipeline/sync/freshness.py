"""Freshness: how long ago each tenant's datasets last synced successfully, against an SLA.

The status table ``st_dataset_status`` (kept by every sync) is the source: a (tenant, dataset) is
fresh when its last ``succeeded`` sync ended within the SLA. A tenant that never synced is measured
from its registration, so a tenant added a minute ago is not stale yet. A dataset whose latest
sync was ``skipped`` (its scope is not granted for the tenant) is left out: no sync can make it
fresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

import sqlalchemy as sa

from st_pipeline.sync.state import NOT_LOADABLE
from st_pipeline.tenants.registry import Tenant
from st_pipeline.warehouse.tables import dataset_status_table


@dataclass(frozen=True)
class SyncHistory:
    """Per (tenant id, dataset key): when its last successful sync ended, and its latest status."""

    last_success: Mapping[tuple[int, str], datetime]
    latest_status: Mapping[tuple[int, str], str]

    @classmethod
    def read(cls, engine: sa.Engine) -> SyncHistory:
        """From ``st_dataset_status``: one row per (tenant, dataset), however long the log's history."""
        status = dataset_status_table.c
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(status.tenant_id, status.dataset, status.last_status, status.last_success_at)
            ).all()
        return cls(
            last_success={
                (row.tenant_id, row.dataset): _utc(row.last_success_at) for row in rows if row.last_success_at
            },
            latest_status={(row.tenant_id, row.dataset): row.last_status for row in rows if row.last_status},
        )

    def tenant_last_success(self, tenant_id: int) -> datetime | None:
        """The end of the tenant's most recent successful dataset sync, if any."""
        return self._tenant_last_success.get(tenant_id)

    @cached_property
    def _tenant_last_success(self) -> dict[int, datetime]:
        latest: dict[int, datetime] = {}
        for (tenant, _), ended in self.last_success.items():
            latest[tenant] = max(ended, latest.get(tenant, ended))
        return latest


@dataclass
class DatasetFreshness:
    """Freshness of one dataset across the tenants expected to sync it."""

    dataset: str
    checked: list[int] = field(default_factory=list)
    stale: dict[int, datetime | None] = field(default_factory=dict)  # tenant → last success (None: never)
    not_granted: list[int] = field(default_factory=list)
    oldest_success: datetime | None = None

    @property
    def fresh(self) -> bool:
        return not self.stale

    def summary(self, sla: timedelta) -> str:
        if not self.checked:
            return "no enabled tenant syncs this dataset"
        if self.fresh:
            return f"all {len(self.checked)} tenants synced within {_hours(sla)}"
        shown = [f"{t} ({_when(ended)})" for t, ended in sorted(self.stale.items())[:10]]
        more = f" and {len(self.stale) - 10} more" if len(self.stale) > 10 else ""
        return (
            f"{len(self.stale)} of {len(self.checked)} tenants not synced within {_hours(sla)}: "
            + ", ".join(shown)
            + more
        )


def assess_datasets(
    history: SyncHistory,
    expected: Mapping[str, Iterable[Tenant]],
    sla: timedelta,
    now: datetime | None = None,
) -> dict[str, DatasetFreshness]:
    """Freshness of each dataset over the tenants ``expected`` to sync it (enabled for them)."""
    now = now or datetime.now(UTC)
    results: dict[str, DatasetFreshness] = {}
    for dataset, tenants in expected.items():
        result = results[dataset] = DatasetFreshness(dataset)
        for tenant in tenants:
            pair = (tenant.tenant_id, dataset)
            if history.latest_status.get(pair) in NOT_LOADABLE:
                result.not_granted.append(tenant.tenant_id)
                continue
            result.checked.append(tenant.tenant_id)
            ended = history.last_success.get(pair)
            if ended is not None and (result.oldest_success is None or ended < result.oldest_success):
                result.oldest_success = ended
            if now - (ended or _utc(tenant.created_at)) > sla:
                result.stale[tenant.tenant_id] = ended
    return results


def tenant_is_stale(history: SyncHistory, tenant: Tenant, sla: timedelta, now: datetime | None = None) -> bool:
    """No dataset of the tenant synced successfully within the SLA (counting from registration)."""
    since = history.tenant_last_success(tenant.tenant_id) or _utc(tenant.created_at)
    return (now or datetime.now(UTC)) - since > sla


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _when(moment: datetime | None) -> str:
    return f"last success {moment:%Y-%m-%d %H:%M} UTC" if moment else "never synced"


def _hours(sla: timedelta) -> str:
    return f"the {sla.total_seconds() / 3600:g} h SLA"
