"""Schedules: an incremental sync of every enabled tenant, and a nightly reconciliation.

``ST_PIPELINE_SYNC_CRON`` (default hourly) and ``ST_PIPELINE_RECONCILE_CRON`` (default 02:30 UTC)
set when they run (``build_sync_schedule``, ``build_reconcile_schedule``, both made by
``tenant_schedule``). Each tick requests one run per tenant partition, with a run key per tick, so
a tick is never launched twice; disabled tenants and tenants whose credentials were rejected are
skipped (with the reason in the tick's log).
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Iterator

import dagster as dg

from st_pipeline.defs.models import TENANT_MODELS_KEY
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, TENANT_SYNC_OP
from st_pipeline.defs.resources import TenantRegistryResource
from st_pipeline.servicetitan.catalogue import load_catalogue

TENANT_TAG = "st_pipeline/tenant"
SYNC_JOB, RECONCILE_JOB, FRESHNESS_JOB, MAINTENANCE_JOB = (
    "servicetitan_sync",
    "servicetitan_reconcile",
    "servicetitan_freshness",
    "servicetitan_maintenance",
)
# The jobs of this code location (alert sensors watch their runs, however they were launched).
OUR_JOBS = frozenset({SYNC_JOB, RECONCILE_JOB, FRESHNESS_JOB, MAINTENANCE_JOB})

# A sync run also brings the tenant's hub tables and marts up to date (see ``models.py``).
sync_job = dg.define_asset_job(
    SYNC_JOB,
    selection=dg.AssetSelection.assets(TENANT_SYNC_KEY, TENANT_MODELS_KEY),
    description="Incremental sync of every enabled dataset of one tenant (a partition), then its hub tables "
    "and marts. Tag st_pipeline/full_rebuild=true to rebuild the hub tables and marts in full.",
)

# Lists without an export feed cannot show deletes incrementally: read them in full, flag gone rows.
_RECONCILED = [d.key for d in load_catalogue().extracted_datasets() if d.extraction_endpoint.kind != "export"]
reconcile_job = dg.define_asset_job(
    RECONCILE_JOB,
    selection=dg.AssetSelection.assets(TENANT_SYNC_KEY, TENANT_MODELS_KEY),
    config={"ops": {TENANT_SYNC_OP: {"config": {"reconcile_deletes": True, "datasets": _RECONCILED}}}},
    description="Full read of the datasets without export feed; rows gone upstream get deleted_at (and leave "
    "the hub tables and marts the same way).",
)


def tenant_run_requests(
    context: dg.ScheduleEvaluationContext, registry: TenantRegistryResource, purpose: str
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    """One run request per enabled tenant that has a partition and working credentials."""
    partitions = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    tenant_registry = registry.registry()
    rejected = tenant_registry.needing_credentials()
    tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
    requested = 0
    for tenant in tenant_registry.list():
        key = str(tenant.tenant_id)
        if not tenant.enabled:
            context.log.info(f"tenant {key} is disabled: skipped")
        elif tenant.tenant_id in rejected:
            context.log.warning(f"tenant {key} needs new credentials ({rejected[tenant.tenant_id]}): skipped")
        elif key not in partitions:
            context.log.info(f"tenant {key} has no partition yet (the onboarding sensor adds it): skipped")
        else:
            requested += 1
            yield dg.RunRequest(run_key=f"{purpose}:{key}:{tick}", partition_key=key, tags={TENANT_TAG: key})
    if not requested:
        yield dg.SkipReason("no enabled tenant with a partition and working credentials")


def tenant_schedule(name: str, job: str, cron: str, purpose: str, description: str) -> dg.ScheduleDefinition:
    """A schedule of the job named ``job`` on ``cron``, requesting one run per tenant (``tenant_run_requests``)."""

    @dg.schedule(
        name=name,
        job_name=job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def tenant_runs(
        context: dg.ScheduleEvaluationContext, tenant_registry: TenantRegistryResource
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        yield from tenant_run_requests(context, tenant_registry, purpose)

    return tenant_runs


def build_sync_schedule(cron: str) -> dg.ScheduleDefinition:
    """Incremental sync of every enabled tenant on ``cron`` (``ST_PIPELINE_SYNC_CRON``)."""
    return tenant_schedule(
        "tenant_sync_schedule",
        SYNC_JOB,
        cron,
        "sync",
        "Incremental sync of every enabled tenant, on ST_PIPELINE_SYNC_CRON: one run request per tenant partition, "
        "with a run key per tick; disabled tenants and tenants whose credentials were rejected are skipped.",
    )


def build_reconcile_schedule(cron: str) -> dg.ScheduleDefinition:
    """Full read of the datasets without export feed on ``cron`` (``ST_PIPELINE_RECONCILE_CRON``)."""
    return tenant_schedule(
        "tenant_reconcile_schedule",
        RECONCILE_JOB,
        cron,
        "reconcile",
        "Nightly full read of every enabled tenant's datasets without export feed, on ST_PIPELINE_RECONCILE_CRON; "
        "rows gone upstream get deleted_at.",
    )
