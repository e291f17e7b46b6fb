"""Sensors: tenant onboarding, and alerts for run failures, failed checks, rejected credentials and
stale tenants (one alert per incident, a recovery message when it clears; see ``st_pipeline.alerts``).

Dagster does not alert on a failed asset check by itself (it does not fail the run unless the
check is blocking and ERROR), hence ``check_failure_alert_sensor``.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from st_pipeline.alerts import (
    AUTH_FAILURE,
    CHECK_FAILURE,
    RUN_FAILURE,
    STALE_TENANT,
    Alert,
    AlertManager,
    channels_from_settings,
    dagster_run_link,
)
from st_pipeline.defs.freshness import FRESHNESS_CHECK
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, tenant_partitions
from st_pipeline.defs.raw_assets import FULL_REFRESH_TAG
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import TENANT_TAG, sync_job
from st_pipeline.settings import Settings, load_settings
from st_pipeline.sync.freshness import SyncHistory, tenant_is_stale
from st_pipeline.tenants.registry import Change
from st_pipeline.warehouse.tables import sync_log_table

PARTITION_TAG = "dagster/partition"
CREDENTIAL_ERRORS = {"InvalidClientError", "AuthenticationError"}


# Who the audit trail names for changes the sensors make.
SENSOR_ACTOR = "dagster sensor"


class AlertingResource(dg.ConfigurableResource):
    """Where alerts go: the channels of the ``ST_PIPELINE_ALERT_*`` variables, run links under
    ``ST_PIPELINE_UI_URL`` (deployment configuration, like every destination); incidents are kept
    in the tenant registry database."""

    _settings: Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = load_settings()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError("AlertingResource is used outside a run or sensor tick")
        return self._settings

    def manager(self, registry: TenantRegistryResource) -> AlertManager:
        return AlertManager(
            registry.registry().engine, channels_from_settings(self.settings), ui_base_url=self.settings.ui_url
        )

    def run_link(self, run_id: str) -> str:
        return dagster_run_link(run_id, self.settings.ui_url)


@dg.sensor(job=sync_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def tenant_onboarding_sensor(
    context: dg.SensorEvaluationContext, tenant_registry: TenantRegistryResource
) -> dg.SensorResult:
    """Registry → partitions: add new tenants (and request their first, full sync), remove deleted ones."""
    tenants = {str(t.tenant_id): t for t in tenant_registry.registry().list()}
    existing = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    new = sorted(key for key, tenant in tenants.items() if tenant.enabled and key not in existing)
    gone = sorted(existing - set(tenants))
    requests: list[dg.DynamicPartitionsRequest] = []
    if new:
        requests.append(tenant_partitions.build_add_request(new))
    if gone:
        requests.append(tenant_partitions.build_delete_request(gone))
    runs = [
        dg.RunRequest(run_key=f"onboard:{key}", partition_key=key, tags={TENANT_TAG: key, FULL_REFRESH_TAG: "true"})
        for key in new
    ]
    if new or gone:
        context.log.info(f"tenants added: {new or 'none'}; removed: {gone or 'none'}")
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=False)
def run_failure_alert_sensor(
    context: dg.RunFailureSensorContext, tenant_registry: TenantRegistryResource, alerting: AlertingResource
) -> None:
    """A failed run → one alert per (tenant, job); rejected credentials also flag the tenant."""
    run = context.dagster_run
    tenant = run.tags.get(PARTITION_TAG) or run.tags.get(TENANT_TAG)
    manager = alerting.manager(tenant_registry)
    reasons, error_types = [], set()
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        if data.error is not None:
            reasons.append(data.error.message.strip().splitlines()[0][:500])
        if data.user_failure_data is not None:
            error_type = data.user_failure_data.metadata.get("error_type")
            if error_type is not None:
                error_types.add(str(error_type.value))
    reason = "\n".join(reasons) or context.failure_event.message or "the run failed"
    link = alerting.run_link(run.run_id)
    if tenant and error_types & CREDENTIAL_ERRORS:
        tenant_registry.registry().flag_needs_credentials(
            int(tenant), reason[:500], change=Change("run_failure_alert_sensor", actor=SENSOR_ACTOR)
        )
        manager.open(Alert(
            incident_key=f"{AUTH_FAILURE}:tenant={tenant}", kind=AUTH_FAILURE,
            title=f"tenant {tenant}: ServiceTitan rejected its credentials; syncs paused",
            reason=reason + f"\nStore new credentials with `st-pipeline tenant update-credentials --tenant {tenant}`; "
            "schedules resume then.",
            tenant_id=int(tenant), run_id=run.run_id, link=link,
        ))
    manager.open(Alert(
        incident_key=f"{RUN_FAILURE}:tenant={tenant}:job={run.job_name}", kind=RUN_FAILURE,
        title=f"{run.job_name} failed for tenant {tenant}" if tenant else f"{run.job_name} failed",
        reason=reason, tenant_id=int(tenant) if tenant else None, run_id=run.run_id, link=link,
    ))


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, default_status=dg.DefaultSensorStatus.RUNNING)
def run_recovery_sensor(
    context: dg.RunStatusSensorContext, tenant_registry: TenantRegistryResource, alerting: AlertingResource
) -> None:
    """A successful run of a tenant resolves its open run-failure and credential incidents."""
    run = context.dagster_run
    tenant = run.tags.get(PARTITION_TAG) or run.tags.get(TENANT_TAG)
    manager = alerting.manager(tenant_registry)
    note = f"run {run.run_id} succeeded"
    manager.resolve(f"{RUN_FAILURE}:tenant={tenant}:job={run.job_name}", note)
    if tenant:
        manager.resolve(f"{AUTH_FAILURE}:tenant={tenant}", note)


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def check_failure_alert_sensor(
    context: dg.SensorEvaluationContext, tenant_registry: TenantRegistryResource, alerting: AlertingResource
) -> dg.SkipReason | None:
    """Each failed asset-check evaluation opens an incident; the next passing one resolves it.

    Reads the check evaluations of runs that finished since the cursor (the last processed run's
    update time), which works on every event-log storage, sharded SQLite included.
    """
    after = datetime.fromisoformat(context.cursor) if context.cursor else None
    finished = context.instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE], updated_after=after),
        order_by="update_timestamp",
        ascending=True,
        limit=50,
    )
    if not finished:
        return dg.SkipReason("no newly finished runs")
    manager = alerting.manager(tenant_registry)
    for run_record in finished:
        run_id = run_record.dagster_run.run_id
        for entry in context.instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            if evaluation.check_name == FRESHNESS_CHECK:
                continue  # stale tenants alert once per tenant (stale_tenant_sensor), not once per asset
            asset = evaluation.asset_key.to_user_string()
            tenant = evaluation.partition or run_record.dagster_run.tags.get(PARTITION_TAG)
            key = f"{CHECK_FAILURE}:{asset}:{evaluation.check_name}:tenant={tenant}"
            if evaluation.passed:
                manager.resolve(key, f"check passed in run {run_id}")
                continue
            manager.open(Alert(
                incident_key=key, kind=CHECK_FAILURE,
                title=f"{evaluation.severity.value}: check {evaluation.check_name} failed on {asset} (tenant {tenant})",
                reason=evaluation.description or "the check did not pass",
                tenant_id=int(tenant) if tenant and tenant.isdigit() else None, asset=asset,
                run_id=run_id, link=alerting.run_link(run_id),
            ))
        context.update_cursor(run_record.update_timestamp.isoformat())
    return None


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING)
def stale_tenant_sensor(
    context: dg.SensorEvaluationContext,
    tenant_registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    alerting: AlertingResource,
) -> dg.SkipReason | None:
    """A tenant whose last successful sync is older than ``ST_PIPELINE_FRESHNESS_SLA_HOURS`` → alert."""
    engine = warehouse.engine()
    if not sa.inspect(engine).has_table(sync_log_table.name):
        return dg.SkipReason("the warehouse has no sync log yet (run `st-pipeline db upgrade`)")
    history = SyncHistory.read(engine)
    sla, now = tenant_registry.settings.freshness_sla, datetime.now(UTC)
    manager = alerting.manager(tenant_registry)
    for tenant in tenant_registry.registry().list(enabled_only=True):
        synced = history.tenant_last_success(tenant.tenant_id)
        key = f"{STALE_TENANT}:tenant={tenant.tenant_id}"
        if tenant_is_stale(history, tenant, sla, now):
            what = f"last successful sync {synced:%Y-%m-%d %H:%M} UTC" if synced else "never synced successfully"
            manager.open(Alert(
                incident_key=key, kind=STALE_TENANT,
                title=f"tenant {tenant.tenant_id} ({tenant.name}) is stale",
                reason=f"{what}; the freshness SLA is {sla}", tenant_id=tenant.tenant_id,
            ))
        else:
            manager.resolve(key, f"synced at {synced:%Y-%m-%d %H:%M} UTC" if synced else None)
    return None
