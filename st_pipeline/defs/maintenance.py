"""Maintenance: sync-log and run retention, on its own schedule.

The sync log gains one row per dataset per tenant per sync (134 per tenant per hour); rows older
than ``ST_PIPELINE_SYNC_LOG_RETENTION_DAYS`` (default 90) are deleted daily. Nothing else reads
the history: freshness and alerts read ``st_dataset_status``.

Dagster keeps every run and its event log for ever (its own ``retention:`` setting covers only
schedule and sensor ticks): a fleet of tenants synced hourly adds 24 runs per tenant per day.
Finished runs older than ``ST_PIPELINE_RUN_RETENTION_DAYS`` (default 90) are deleted with their
event logs; runs still queued or in progress are never touched.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from datetime import datetime

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


# Runs deleted per call, and calls per maintenance run: the loop ends even on a huge backlog (the
# next day's run goes on with the rest).
_RUN_BATCH = 500
_MAX_BATCHES = 200
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def prune_runs(instance: dg.DagsterInstance, created_before: datetime, keep_run_id: str | None = None) -> int:
    """Delete finished runs created before ``created_before`` with their event logs; returns how many."""
    deleted = 0
    for _ in range(_MAX_BATCHES):
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=_FINISHED, created_before=created_before), limit=_RUN_BATCH
        )
        doomed = [r.dagster_run.run_id for r in records if r.dagster_run.run_id != keep_run_id]
        if not doomed:
            break
        for run_id in doomed:
            instance.delete_run(run_id)
        deleted += len(doomed)
    return deleted


@dg.op(description="Deletes finished Dagster runs (and their event logs) older than ST_PIPELINE_RUN_RETENTION_DAYS.")
def prune_dagster_runs(context: dg.OpExecutionContext) -> dg.Output[int]:
    retention = load_settings().run_retention
    cutoff = datetime.now().astimezone() - retention
    deleted = prune_runs(context.instance, cutoff, keep_run_id=context.run.run_id)
    context.log.info(f"{deleted} finished runs older than {retention.days} days deleted with their event logs")
    return dg.Output(deleted, metadata={"runs_deleted": deleted, "retention_days": retention.total_seconds() / 86400})


@dg.job(
    name=MAINTENANCE_JOB,
    description="Retention: deletes sync-log rows older than ST_PIPELINE_SYNC_LOG_RETENTION_DAYS, and finished "
    "Dagster runs with their event logs older than ST_PIPELINE_RUN_RETENTION_DAYS (never unfinished runs).",
)
def maintenance_job() -> None:
    prune_sync_log()
    prune_dagster_runs()


def build_maintenance_schedule(cron: str) -> dg.ScheduleDefinition:
    """The maintenance job on ``cron`` (``ST_PIPELINE_MAINTENANCE_CRON``)."""
    return dg.ScheduleDefinition(
        name="maintenance_schedule",
        job=maintenance_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Deletes sync-log rows older than ST_PIPELINE_SYNC_LOG_RETENTION_DAYS, and finished Dagster "
        "runs with their event logs older than ST_PIPELINE_RUN_RETENTION_DAYS, on ST_PIPELINE_MAINTENANCE_CRON.",
    )
