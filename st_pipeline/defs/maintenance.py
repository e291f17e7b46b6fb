"""Maintenance: sync-log retention, on its own schedule.

The sync log gains one row per dataset per tenant per sync (134 per tenant per hour); rows older
than ``ST_PIPELINE_SYNC_LOG_RETENTION_DAYS`` (default 90) are deleted daily. Nothing else reads
the history: freshness and alerts read ``st_dataset_status``.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

import dagster as dg

from st_pipeline.defs.resources import WarehouseResource
from st_pipeline.defs.schedules import MAINTENANCE_JOB
from st_pipeline.settings import load_settings
from st_pipeline.sync.state import prune_log


@dg.op(description="Deletes sync-log rows older than ST_PIPELINE_SYNC_LOG_RETENTION_DAYS.")
def prune_sync_log(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> dg.Output[int]:
    retention = load_settings().sync_log_retention
    deleted = prune_log(warehouse.engine(), retention)
    context.log.info(f"{deleted} sync-log rows older than {retention.days} days deleted")
    return dg.Output(deleted, metadata={"rows_deleted": deleted, "retention_days": retention.total_seconds() / 86400})


@dg.job(name=MAINTENANCE_JOB, description="Sync-log retention.")
def maintenance_job() -> None:
    prune_sync_log()


def build_maintenance_schedule(cron: str) -> dg.ScheduleDefinition:
    """The maintenance job on ``cron`` (``ST_PIPELINE_MAINTENANCE_CRON``)."""
    return dg.ScheduleDefinition(
        name="maintenance_schedule", job=maintenance_job, cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING, description="Sync-log retention, daily.",
    )
