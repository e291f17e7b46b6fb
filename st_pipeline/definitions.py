"""The Dagster code location: ``dagster dev -m st_pipeline.definitions`` (see workspace.yaml)."""

import dagster as dg

from st_pipeline.defs.freshness import freshness_checks, freshness_job, freshness_schedule
from st_pipeline.defs.raw_assets import raw_assets
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import reconcile_job, sync_job, tenant_reconcile_schedule, tenant_sync_schedule
from st_pipeline.defs.sensors import (
    AlertingResource,
    check_failure_alert_sensor,
    run_failure_alert_sensor,
    run_recovery_sensor,
    stale_tenant_sensor,
    tenant_onboarding_sensor,
)

defs = dg.Definitions(
    assets=[raw_assets],
    asset_checks=[freshness_checks],
    jobs=[sync_job, reconcile_job, freshness_job],
    schedules=[tenant_sync_schedule, tenant_reconcile_schedule, freshness_schedule],
    sensors=[
        tenant_onboarding_sensor,
        run_failure_alert_sensor,
        run_recovery_sensor,
        check_failure_alert_sensor,
        stale_tenant_sensor,
    ],
    resources={
        "servicetitan": ServiceTitanResource(),
        "tenant_registry": TenantRegistryResource(),
        "warehouse": WarehouseResource(),
        "alerting": AlertingResource(),
    },
)
