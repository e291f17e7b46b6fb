"""The ``freshness`` asset check of every raw asset, run by its own schedule.

Freshness cannot be judged inside a sync (that sync just made the data fresh), so it is a separate
check over all tenants, evaluated by the ``servicetitan_freshness`` job on
``ST_PIPELINE_FRESHNESS_CRON`` (default 15 minutes past every hour). Each raw asset's check
passes when every enabled tenant synced that dataset successfully within
``ST_PIPELINE_FRESHNESS_SLA_HOURS``; otherwise it WARNs and its metadata names the stale tenants.
The alert for a stale tenant comes once per tenant from ``stale_tenant_sensor``, not per asset.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Iterator, Sequence

import dagster as dg

from st_pipeline.defs.raw_assets import raw_asset_key
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import FRESHNESS_JOB
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.sync.freshness import SyncHistory, assess_datasets

FRESHNESS_CHECK = "freshness"
FRESHNESS_DESCRIPTION = (
    "Every enabled tenant that syncs this dataset did so successfully within ST_PIPELINE_FRESHNESS_SLA_HOURS; "
    "WARN otherwise, naming the stale tenants in its metadata. Judged over all tenants at once (not per "
    "partition) by freshness_check_schedule."
)


def build_freshness_checks(datasets: Sequence[Dataset]) -> dg.AssetChecksDefinition:
    """One ``freshness`` check per raw asset, all computed from one read of the sync log."""
    by_key = {raw_asset_key(dataset): dataset for dataset in datasets}

    @dg.multi_asset_check(
        name="servicetitan_raw_freshness",
        specs=[dg.AssetCheckSpec(FRESHNESS_CHECK, asset=key, description=FRESHNESS_DESCRIPTION) for key in by_key],
        can_subset=True,
        description="The freshness check of every raw asset, judged from one read of the sync status of all "
        "enabled tenants.",
    )
    def servicetitan_raw_freshness(
        context: dg.AssetCheckExecutionContext,
        tenant_registry: TenantRegistryResource,
        warehouse: WarehouseResource,
    ) -> Iterator[dg.AssetCheckResult]:
        sla = tenant_registry.settings.freshness_sla
        engine, _ = warehouse.current_engine()
        history = SyncHistory.read(engine)
        selected = [by_key[check_key.asset_key] for check_key in context.selected_asset_check_keys]
        tenants = tenant_registry.registry().list(enabled_only=True)
        selection = tenant_registry.endpoint_selection()
        expected: dict[str, list] = {dataset.key: [] for dataset in selected}
        for tenant in tenants:
            decisions = selection.decide(selected, tenant.tenant_id)
            for dataset in selected:
                if decisions[dataset.key].enabled:
                    expected[dataset.key].append(tenant)
        assessed = assess_datasets(history, expected, sla)
        for dataset in selected:
            result = assessed[dataset.key]
            yield dg.AssetCheckResult(
                asset_key=raw_asset_key(dataset),
                check_name=FRESHNESS_CHECK,
                passed=result.fresh,
                severity=dg.AssetCheckSeverity.WARN,
                description=result.summary(sla),
                metadata={
                    "sla_hours": sla.total_seconds() / 3600,
                    "tenants_checked": len(result.checked),
                    "stale_tenants": ", ".join(str(t) for t in sorted(result.stale)) or "none",
                    "not_granted_tenants": ", ".join(str(t) for t in sorted(result.not_granted)) or "none",
                    "oldest_last_success": (
                        dg.MetadataValue.timestamp(result.oldest_success) if result.oldest_success else "never"
                    ),
                },
            )

    return servicetitan_raw_freshness


freshness_checks = build_freshness_checks(load_catalogue().extracted_datasets())

freshness_job = dg.define_asset_job(
    FRESHNESS_JOB,
    selection=dg.AssetSelection.checks(freshness_checks),
    description="Evaluates the freshness check of every raw asset over all enabled tenants.",
)


def build_freshness_schedule(cron: str) -> dg.ScheduleDefinition:
    """The freshness checks on ``cron`` (``ST_PIPELINE_FRESHNESS_CRON``)."""
    return dg.ScheduleDefinition(
        name="freshness_check_schedule",
        job=freshness_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Evaluates the freshness check of every raw asset, on ST_PIPELINE_FRESHNESS_CRON, against "
        "ST_PIPELINE_FRESHNESS_SLA_HOURS.",
    )
