"""Sensors that keep the fleet moving: tenant onboarding, and runs whose process is gone.

- ``tenant_onboarding_sensor`` adds a partition for each new enabled tenant and requests its first,
  full sync. It never deletes a partition: removing a tenant is an explicit act
  (``st-pipeline tenant remove``). A registry that suddenly lists far fewer tenants than there are
  partitions (a wrong ``ST_PIPELINE_REGISTRY_URL``, an empty database) raises an alert and changes
  nothing.
- ``abandoned_run_sensor`` fails a sync run whose process died without anyone noticing (a run of
  ``dg launch`` killed with its terminal, a code server killed with its runs): its
  tenant's lock was released, but the run is still STARTED. Marked failed, the run-failure alert
  fires and the tenant's queue frees. (Dagster's own run monitoring, on in ``dagster.yaml``,
  handles runs stuck starting or cancelling, and a run worker killed under a living code server
  is failed by the code server at once.)
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from datetime import UTC, datetime, timedelta

import dagster as dg

from st_pipeline.alerts import REGISTRY_SHRANK, Alert
from st_pipeline.defs.alerting import PARTITION_TAG, AlertingResource
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, tenant_partitions
from st_pipeline.defs.raw_assets import is_pipeline_asset
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import RECONCILE_JOB, SYNC_JOB, TENANT_TAG, sync_job
from st_pipeline.defs.tenant_sync import FULL_REFRESH_TAG
from st_pipeline.warehouse.locks import forget_holder, lock_holder, lock_is_held

# Below this share of the partitions, the registry is assumed broken rather than emptied on purpose.
SHRINK_RATIO = 0.5
# A sync run that has not taken its tenant's lock this long after starting, and whose lock is free,
# is gone (a live run takes it within seconds, or waits while another run holds it).
ABANDONED_AFTER = timedelta(minutes=15)


@dg.sensor(
    job=sync_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registry → partitions: adds a partition for each new enabled tenant and requests its first, "
    "full sync. Never deletes a partition (`st-pipeline tenant remove` does, on purpose); a registry listing "
    f"fewer tenants than {SHRINK_RATIO:.0%} of the partitions opens a registry_shrank incident and changes nothing.",
)
def tenant_onboarding_sensor(
    context: dg.SensorEvaluationContext, tenant_registry: TenantRegistryResource, alerting: AlertingResource
) -> dg.SensorResult:
    """Registry → partitions: new enabled tenants get a partition and a first, full sync."""
    tenants = {str(t.tenant_id): t for t in tenant_registry.registry().list()}
    existing = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    new = sorted(key for key, tenant in tenants.items() if tenant.enabled and key not in existing)
    orphans = sorted(existing - set(tenants))
    manager = alerting.manager(tenant_registry)
    if len(existing) >= 2 and len(tenants) < SHRINK_RATIO * len(existing):
        manager.open(
            Alert(
                incident_key=REGISTRY_SHRANK,
                kind=REGISTRY_SHRANK,
                title=f"the tenant registry lists {len(tenants)} tenants for {len(existing)} tenant partitions",
                reason=(
                    "Nothing was changed: no partition is removed and no run is requested. Check that "
                    "ST_PIPELINE_REGISTRY_URL names the right database for every Dagster process. Tenants are "
                    "removed on purpose with `st-pipeline tenant remove`."
                ),
            )
        )
        return dg.SensorResult(skip_reason=dg.SkipReason("the registry lists far fewer tenants than partitions"))
    manager.resolve(REGISTRY_SHRANK, f"the registry lists {len(tenants)} tenants")
    if orphans:
        context.log.info(
            f"partitions without a registered tenant (kept; `st-pipeline tenant remove --tenant ID` removes "
            f"one): {', '.join(orphans[:20])}"
        )
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new tenant"))
    context.log.info(f"tenants added: {new}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"onboard:{key}", partition_key=key, tags={TENANT_TAG: key, FULL_REFRESH_TAG: "true"})
            for key in new
        ],
        dynamic_partitions_requests=[tenant_partitions.build_add_request(new)],
    )


def takes_tenant_lock(run: dg.DagsterRun) -> bool:
    """A run that holds its tenant's lock while it works: a sync or reconciliation, or a run of any of
    the tenant-partitioned assets (raw, hub and mart assets sync or build under the lock)."""
    return run.job_name in (SYNC_JOB, RECONCILE_JOB) or any(map(is_pipeline_asset, run.asset_selection or ()))


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A sync run still STARTED whose tenant lock is free (its process is gone) is marked failed, so "
    "that the failure alerts and the tenant's queue frees.",
)
def abandoned_run_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SkipReason | None:
    """A STARTED sync run whose tenant lock is free — the process holding it is gone — is marked failed."""
    records = context.instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    engine = warehouse.engine()
    now = datetime.now(UTC)
    failed = 0
    for record in records:
        run = record.dagster_run
        tenant = run.tags.get(PARTITION_TAG) or run.tags.get(TENANT_TAG)
        if not (takes_tenant_lock(run) and tenant and tenant.isdigit()):
            continue
        tenant_id = int(tenant)
        holder = lock_holder(engine, tenant_id)
        started = datetime.fromtimestamp(record.start_time, UTC) if record.start_time else now
        if holder is not None and holder[0] == run.run_id:
            gone = not lock_is_held(engine, tenant_id)
        else:
            gone = holder is None and now - started > ABANDONED_AFTER and not lock_is_held(engine, tenant_id)
        if not gone:
            continue
        context.instance.report_run_failed(
            run,
            f"the process of this run is gone: tenant {tenant_id}'s sync lock was released while the run was "
            "still marked started (killed, or its machine went away). Marked failed so that the tenant's next "
            "run can start; what it committed is kept and the next sync resumes from there.",
        )
        forget_holder(engine, tenant_id, run.run_id)
        failed += 1
    return None if failed else dg.SkipReason("no abandoned sync run")
