"""Alert sensors: failed runs, failing checks, stale tenants, scopes not granted and modules a tenant
does not have; one alert per
incident, a recovery message when it clears (see ``st_pipeline.alerts``).

- Every failed run of this code location alerts, however it was launched (schedule, UI,
  ``dg launch``): the run sensors watch every run of the instance and keep ours.
- Failing checks alert once per tenant, listing every failing check, however many assets fail.
- Dagster does not alert on a failed asset check by itself, hence ``check_failure_alert_sensor``.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from st_pipeline.alerts import (
    AUTH_FAILURE,
    CHECK_FAILURE,
    MODULE_MISSING,
    RUN_FAILURE,
    SCOPE_MISSING,
    STALE_TENANT,
    Alert,
    AlertManager,
    CheckVerdict,
    FailingChecks,
    channels_from_settings,
    dagster_run_link,
)
from st_pipeline.defs.freshness import FRESHNESS_CHECK
from st_pipeline.defs.raw_assets import is_pipeline_asset
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import OUR_JOBS, TENANT_TAG
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import Settings, load_settings
from st_pipeline.sync.freshness import SyncHistory, tenant_is_stale
from st_pipeline.sync.state import SKIPPED, UNAVAILABLE
from st_pipeline.tenants.registry import Change
from st_pipeline.warehouse.tables import dataset_status_table

PARTITION_TAG = "dagster/partition"
CREDENTIAL_ERRORS = {"InvalidClientError", "AuthenticationError"}
# Who the audit trail names for changes the sensors make.
SENSOR_ACTOR = "dagster sensor"
# How many failing checks or datasets an alert lists before "and N more".
LISTED = 20


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


def is_our_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """A run of this code location's jobs, or one that executed its assets (UI, CLI, tests)."""
    if run.job_name in OUR_JOBS or any(map(is_pipeline_asset, run.asset_selection or ())):
        return True
    if run.execution_plan_snapshot_id is None:
        return False
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return any(step.key.startswith("servicetitan") for step in plan.steps)


def tenant_of(run: dg.DagsterRun) -> str | None:
    return run.tags.get(PARTITION_TAG) or run.tags.get(TENANT_TAG)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=True,
    description="Every failed run of this code location, however launched (schedule, UI, `dg launch`) → "
    "an alert naming the tenant, the job, the first errors and a link to the run; rejected "
    "credentials also flag the tenant as needing new ones (schedules skip it until `st-pipeline tenant "
    "update-credentials`) and alert.",
)
def run_failure_alert_sensor(
    context: dg.RunFailureSensorContext, tenant_registry: TenantRegistryResource, alerting: AlertingResource
) -> dg.SkipReason | None:
    """A failed run → one alert per (tenant, job) naming the first errors; rejected credentials also
    flag the tenant (schedules skip it until new ones are stored)."""
    run = context.dagster_run
    if not is_our_run(context.instance, run):
        return dg.SkipReason(f"run {run.run_id} is not a run of st_pipeline")
    tenant = tenant_of(run)
    manager = alerting.manager(tenant_registry)
    reasons, error_types = [], set()
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        if data.error is not None:
            reasons.append(data.error.message.strip().splitlines()[0][:1500])
        if data.user_failure_data is not None:
            error_type = data.user_failure_data.metadata.get("error_type")
            if error_type is not None:
                error_types.add(str(error_type.value))
    reason = "\n".join(reasons) or context.failure_event.message or "the run failed"
    link = alerting.run_link(run.run_id)
    if tenant and tenant.isdigit() and error_types & CREDENTIAL_ERRORS:
        tenant_registry.registry().flag_needs_credentials(
            int(tenant), reason[:500], change=Change("run_failure_alert_sensor", actor=SENSOR_ACTOR)
        )
        manager.open(
            Alert(
                incident_key=f"{AUTH_FAILURE}:tenant={tenant}",
                kind=AUTH_FAILURE,
                title=f"tenant {tenant}: ServiceTitan rejected its credentials; syncs paused",
                reason=reason
                + f"\nStore new credentials with `st-pipeline tenant update-credentials --tenant {tenant}`; "
                "schedules resume then.",
                tenant_id=int(tenant),
                run_id=run.run_id,
                link=link,
            )
        )
    manager.open(
        Alert(
            incident_key=f"{RUN_FAILURE}:tenant={tenant}:job={run.job_name}",
            kind=RUN_FAILURE,
            title=f"{run.job_name} failed for tenant {tenant}" if tenant else f"{run.job_name} failed",
            reason=reason,
            tenant_id=int(tenant) if tenant and tenant.isdigit() else None,
            run_id=run.run_id,
            link=link,
        )
    )
    return None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=True,
    description="A successful run of a tenant resolves its open run-failure and credential incidents, with a "
    "recovery message.",
)
def run_recovery_sensor(
    context: dg.RunStatusSensorContext, tenant_registry: TenantRegistryResource, alerting: AlertingResource
) -> dg.SkipReason | None:
    """A successful run of a tenant resolves its open run-failure and credential incidents."""
    run = context.dagster_run
    if not is_our_run(context.instance, run):
        return dg.SkipReason(f"run {run.run_id} is not a run of st_pipeline")
    tenant = tenant_of(run)
    manager = alerting.manager(tenant_registry)
    note = f"run {run.run_id} succeeded"
    manager.resolve(f"{RUN_FAILURE}:tenant={tenant}:job={run.job_name}", note)
    if tenant:
        manager.resolve(f"{AUTH_FAILURE}:tenant={tenant}", note)
    return None


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Failing checks → one incident per tenant listing every failing (asset, check), however many; "
    f"resolved when they all pass again. A failing `{FRESHNESS_CHECK}` check alerts through stale_tenant_sensor "
    "instead, once per tenant.",
)
def check_failure_alert_sensor(
    context: dg.SensorEvaluationContext, tenant_registry: TenantRegistryResource, alerting: AlertingResource
) -> dg.SkipReason | None:
    """Failing checks → one incident per tenant listing them; resolved when all pass again.

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
    registry = tenant_registry.registry()
    failing = FailingChecks(registry.engine)
    touched: dict[int, str] = {}  # tenant → the latest run that judged it
    for run_record in finished:
        run_id = run_record.dagster_run.run_id
        verdicts = []
        for entry in context.instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            # of_type above: every entry is an asset check evaluation.
            evaluation = entry.get_dagster_event().asset_check_evaluation_data
            tenant = evaluation.partition or run_record.dagster_run.tags.get(PARTITION_TAG)
            if evaluation.check_name == FRESHNESS_CHECK or not (tenant and tenant.isdigit()):
                continue  # freshness alerts once per tenant (stale_tenant_sensor); fleet-wide checks have no tenant
            verdicts.append(
                CheckVerdict(
                    tenant_id=int(tenant),
                    asset=evaluation.asset_key.to_user_string(),
                    check_name=evaluation.check_name,
                    passed=evaluation.passed,
                    severity=evaluation.severity.value,
                    description=evaluation.description,
                    run_id=run_id,
                )
            )
        for tenant_id in failing.record(verdicts):
            touched[tenant_id] = run_id
        context.update_cursor(run_record.update_timestamp.isoformat())
    manager = alerting.manager(tenant_registry)
    for tenant_id, run_id in sorted(touched.items()):
        key = f"{CHECK_FAILURE}:tenant={tenant_id}"
        checks = failing.failing(tenant_id)
        if not checks:
            manager.resolve(key, f"every check passed again (run {run_id})")
            continue
        errors = sum(check.severity == "ERROR" for check in checks)
        lines = [
            f"- {c.asset}: {c.check_name} ({c.severity}){': ' + c.description if c.description else ''}"
            for c in checks[:LISTED]
        ]
        if len(checks) > LISTED:
            lines.append(f"- and {len(checks) - LISTED} more")
        assets = len({check.asset for check in checks})
        manager.open(
            Alert(
                incident_key=key,
                kind=CHECK_FAILURE,
                title=f"tenant {tenant_id}: {len(checks)} checks failing on {assets} assets"
                + (f" ({errors} ERROR)" if errors else ""),
                reason="\n".join(lines),
                tenant_id=tenant_id,
                run_id=run_id,
                link=alerting.run_link(run_id),
            )
        )
    return None


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="An enabled tenant whose last successful sync is older than ST_PIPELINE_FRESHNESS_SLA_HOURS → "
    "an alert; its enabled datasets whose scope it does not grant (403) → one scope_missing alert listing them; "
    "its enabled datasets of modules it does not have (404) → one module_missing alert; each resolved once "
    "cleared.",
)
def stale_tenant_sensor(
    context: dg.SensorEvaluationContext,
    tenant_registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    alerting: AlertingResource,
) -> dg.SkipReason | None:
    """Per enabled tenant: its last successful sync older than ``ST_PIPELINE_FRESHNESS_SLA_HOURS`` →
    an alert; datasets skipped because their scope is not granted (403) or the tenant does not have
    their module (404) → one alert each, listing them."""
    engine = warehouse.engine()
    if not sa.inspect(engine).has_table(dataset_status_table.name):
        return dg.SkipReason(
            "the warehouse has no sync status yet: no sync has run (the first creates it), or its schema is "
            "behind (run `st-pipeline db upgrade`)"
        )
    history = SyncHistory.read(engine)
    sla, now = tenant_registry.settings.freshness_sla, datetime.now(UTC)
    manager = alerting.manager(tenant_registry)
    tenants = tenant_registry.registry().list(enabled_only=True)
    selection = tenant_registry.endpoint_selection()
    datasets = load_catalogue().extracted_datasets()
    for tenant in tenants:
        synced = history.tenant_last_success(tenant.tenant_id)
        key = f"{STALE_TENANT}:tenant={tenant.tenant_id}"
        if tenant_is_stale(history, tenant, sla, now):
            what = f"last successful sync {synced:%Y-%m-%d %H:%M} UTC" if synced else "never synced successfully"
            manager.open(
                Alert(
                    incident_key=key,
                    kind=STALE_TENANT,
                    title=f"tenant {tenant.tenant_id} ({tenant.name}) is stale",
                    reason=f"{what}; the freshness SLA is {sla}",
                    tenant_id=tenant.tenant_id,
                )
            )
        else:
            manager.resolve(key, f"synced at {synced:%Y-%m-%d %H:%M} UTC" if synced else None)
        enabled = selection.decide(datasets, tenant.tenant_id)
        _alert_unloadable(manager, history, tenant, enabled, SKIPPED)
        _alert_unloadable(manager, history, tenant, enabled, UNAVAILABLE)
    return None


def _alert_unloadable(manager: Any, history: SyncHistory, tenant: Any, enabled: dict[str, Any], status: str) -> None:
    """One incident per tenant for its enabled datasets whose latest sync had ``status``: not granted
    (403, ``scope_missing``) or not available (404, ``module_missing``); resolved when none is left."""
    datasets = sorted(
        dataset
        for (tenant_id, dataset), latest in history.latest_status.items()
        if tenant_id == tenant.tenant_id and latest == status and dataset in enabled and enabled[dataset].enabled
    )
    tid = tenant.tenant_id
    kind = SCOPE_MISSING if status == SKIPPED else MODULE_MISSING
    key = f"{kind}:tenant={tid}"
    if not datasets:
        manager.resolve(
            key, "every enabled dataset is granted" if status == SKIPPED else "every enabled dataset is available"
        )
        return
    shown = ", ".join(datasets[:LISTED]) + (f" and {len(datasets) - LISTED} more" if len(datasets) > LISTED else "")
    if status == SKIPPED:
        title = f"tenant {tid} ({tenant.name}): {len(datasets)} datasets not granted"
        reason = (
            f"ServiceTitan refuses these datasets (403, scope not granted): {shown}. Ask the tenant's admin to grant "
            f"the scopes (`st-pipeline tenant test --tenant {tid}` lists them), or turn the datasets off with "
            "`st-pipeline endpoints disable`."
        )
    else:
        modules = sorted({dataset.split("/")[0] for dataset in datasets})
        title = f"tenant {tid} ({tenant.name}) does not have the modules {', '.join(modules)}"
        reason = (
            f"ServiceTitan answers 404 for these datasets of the tenant: {shown}. The tenant does not have these "
            "modules; the datasets are skipped each run. Turn them off with `st-pipeline endpoints disable` if the "
            "tenant will not get them."
        )
    manager.open(Alert(incident_key=key, kind=kind, title=title, reason=reason, tenant_id=tid))
