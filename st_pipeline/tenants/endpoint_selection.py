"""Which datasets are extracted, globally and per tenant (feature flags).

Sources, most specific first: a flag for (tenant, dataset), for (tenant, module), for every
tenant and the dataset, for every tenant and the module — stored in the registry database and
set with ``st-pipeline endpoints enable|disable`` — then ``ST_PIPELINE_DISABLED_ENDPOINTS``
(comma-separated modules or datasets, e.g. ``payroll,crm/leads``), then enabled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.database import describe_url, upsert_state
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.tenants import validation
from st_pipeline.tenants.registry import Change, write_audit
from st_pipeline.tenants.schema import ensure_registry_schema
from st_pipeline.tenants.tables import EVERY_TENANT, flags_table


class UnknownTargetError(ValueError):
    """The name is neither a module nor a dataset of the catalogue."""


@dataclass(frozen=True)
class Decision:
    enabled: bool
    why: str


def check_target(target: str) -> str:
    """A module (``payroll``) or dataset key (``crm/leads``) of the catalogue; else a clear error."""
    catalogue = load_catalogue()
    modules = {d.module for d in catalogue.datasets.values()}
    if target in modules or target in catalogue.datasets:
        return target
    raise UnknownTargetError(
        f"{target!r} is neither a module nor a dataset; `st-pipeline endpoints` lists them "
        f"(modules: {', '.join(sorted(modules))})"
    )


class EndpointSelection:
    """Reads and writes the flags; decides per dataset and tenant."""

    def __init__(self, engine: sa.Engine, config_disabled: Iterable[str] = ()) -> None:
        """``engine``: the registry database; ``config_disabled``: ``ST_PIPELINE_DISABLED_ENDPOINTS``."""
        self.engine = engine
        ensure_registry_schema(engine, describe_url(engine))
        self.config_disabled = set(config_disabled)
        for target in self.config_disabled:
            check_target(target)

    def set(
        self, target: str, *, enabled: bool, change: Change, tenant_id: int | None = None, reason: str | None = None
    ) -> None:
        """Flag ``target`` for one tenant (or, with ``tenant_id`` None, for every tenant); audited."""
        check_target(target)
        scope = EVERY_TENANT if tenant_id is None else validation.tenant_id(tenant_id)
        values = {"enabled": enabled, "reason": reason, "updated_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            upsert_state(conn, flags_table, {"tenant_id": scope, "target": target}, values)
            note = f": {reason}" if reason else ""
            write_audit(
                conn,
                change,
                tenant_id,
                f"{target} {'enabled' if enabled else 'disabled'}"
                f" for {'every tenant' if tenant_id is None else 'this tenant'}{note}",
            )

    def flags(self) -> list[sa.Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(flags_table.select().order_by(flags_table.c.tenant_id, flags_table.c.target)))

    def decide(self, datasets: Iterable[Dataset], tenant_id: int | None) -> dict[str, Decision]:
        """Enabled or not, and why, for each dataset (``tenant_id`` None: the global view)."""
        flags = {(row.tenant_id, row.target): row for row in self.flags()}
        tenant = tenant_id if tenant_id is not None else EVERY_TENANT
        decisions: dict[str, Decision] = {}
        for dataset in datasets:
            if dataset.excluded_reason:
                decisions[dataset.key] = Decision(False, f"not extracted: {dataset.excluded_reason}")
                continue
            for scope in (tenant, EVERY_TENANT):
                for target in (dataset.key, dataset.module):
                    row = flags.get((scope, target))
                    if row is not None:
                        who = "every tenant" if scope == EVERY_TENANT else f"tenant {scope}"
                        state = "enabled" if row.enabled else "disabled"
                        note = f": {row.reason}" if row.reason else ""
                        decisions[dataset.key] = Decision(row.enabled, f"{state} for {who} ({target}){note}")
                        break
                if dataset.key in decisions:
                    break
            else:
                hit = next((t for t in (dataset.key, dataset.module) if t in self.config_disabled), None)
                decisions[dataset.key] = (
                    Decision(False, f"disabled by ST_PIPELINE_DISABLED_ENDPOINTS ({hit})")
                    if hit
                    else Decision(True, "enabled")
                )
        return decisions
