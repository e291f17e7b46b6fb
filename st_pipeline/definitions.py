"""The Dagster code location: ``dg dev -w workspace.yaml`` (or ``dg dev`` in the project, see pyproject.toml).

The deployment's configuration is read and validated once, when the code location loads: a wrong
or missing variable stops it with a message naming the variable.
"""

from collections.abc import Callable, Sequence

import dagster as dg

from st_pipeline.defs.alerting import (
    AlertingResource,
    check_failure_alert_sensor,
    run_failure_alert_sensor,
    run_recovery_sensor,
    stale_tenant_sensor,
)
from st_pipeline.defs.freshness import build_freshness_schedule, freshness_checks, freshness_job
from st_pipeline.defs.maintenance import build_maintenance_schedule, maintenance_job
from st_pipeline.defs.marketing_reports import (
    build_marketing_reports_schedule,
    marketing_report_assets,
    marketing_reports_job,
)
from st_pipeline.defs.models import TENANT_MODELS_KEY, tenant_models
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY
from st_pipeline.defs.reports import build_report_assets, build_reports_schedule, declared_reports, reports_job
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import build_reconcile_schedule, build_sync_schedule, reconcile_job, sync_job
from st_pipeline.defs.sensors import abandoned_run_sensor, tenant_onboarding_sensor
from st_pipeline.defs.tenant_sync import build_tenant_sync, tenant_sync
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import Settings, SettingsError, load_settings
from st_pipeline.sync.observer import SyncObserver
from st_pipeline.tenants.reports import ReportDeclaration


def _on_cron(build: Callable[[str], dg.ScheduleDefinition], variable: str, cron: str) -> dg.ScheduleDefinition:
    """The schedule ``build`` makes for ``cron``; a cron Dagster refuses is the variable's fault, and said so."""
    try:
        return build(cron)
    except dg.DagsterInvalidDefinitionError:
        raise SettingsError(f"{variable} is not a cron expression (e.g. '0 * * * *' for hourly)") from None


# The summary assets are owned with the layer they write.
_SUMMARY_LAYERS = {TENANT_SYNC_KEY: "raw", TENANT_MODELS_KEY: "hub"}


def _owned(owners: dict[str, tuple[str, ...]]) -> Callable[[dg.AssetSpec], dg.AssetSpec]:
    """An asset spec with the owners of its layer (its ``layer`` tag) added."""

    def owned(spec: dg.AssetSpec) -> dg.AssetSpec:
        layer = spec.tags.get("layer") or _SUMMARY_LAYERS.get(spec.key)
        added = owners.get(layer, ()) if layer else ()
        return spec.merge_attributes(owners=list(added)) if added else spec

    return owned


def build_definitions(
    settings: Settings,
    *,
    sync_observer: SyncObserver | None = None,
    reports: Sequence[ReportDeclaration] | None = None,
) -> dg.Definitions:
    """Assets, checks, jobs, schedules (on the configured crons), sensors and resources.

    ``sync_observer`` is told each point every tenant sync reaches (``st_pipeline.sync.observer``);
    the crash tests' code location kills the process there. ``reports``: the declarations to make
    report assets of (default: those in the registry now).
    """
    sync = (
        tenant_sync
        if sync_observer is None
        else build_tenant_sync(load_catalogue().extracted_datasets(), sync_observer)
    )
    report_assets = build_report_assets(declared_reports(settings) if reports is None else reports)
    assets = [sync, tenant_models, *report_assets, *marketing_report_assets]
    if any(settings.asset_owners.values()):  # for the catalogue's owner filter (ST_PIPELINE_*_OWNERS)
        assets = list(dg.map_asset_specs(_owned(settings.asset_owners), assets))
    return dg.Definitions(
        # A run is two steps (the tenant sync, then its models): a step subprocess would only add a
        # second interpreter start and import.
        executor=dg.in_process_executor,
        # The raw, hub and mart assets, with their checks, are the specs of these two multi-assets.
        assets=assets,
        asset_checks=[freshness_checks],
        jobs=[sync_job, reconcile_job, freshness_job, maintenance_job, reports_job, marketing_reports_job],
        schedules=[
            _on_cron(build_sync_schedule, "ST_PIPELINE_SYNC_CRON", settings.sync_cron),
            _on_cron(build_reconcile_schedule, "ST_PIPELINE_RECONCILE_CRON", settings.reconcile_cron),
            _on_cron(build_freshness_schedule, "ST_PIPELINE_FRESHNESS_CRON", settings.freshness_cron),
            _on_cron(build_maintenance_schedule, "ST_PIPELINE_MAINTENANCE_CRON", settings.maintenance_cron),
            build_reports_schedule(asset.key.path[-1] for asset in report_assets),
            build_marketing_reports_schedule(settings.marketing_report_window_days),
        ],
        sensors=[
            tenant_onboarding_sensor,
            abandoned_run_sensor,
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


defs = build_definitions(load_settings())
