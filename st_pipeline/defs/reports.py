"""ServiceTitan reports in Dagster: one asset per declared report, read per tenant and day, and
checked against the mart it should equal.

Each report name declared in the registry (``st-pipeline report add``) is an asset
``servicetitan/reports/<name>``, partitioned by tenant and day. Materializing a partition reads the
tenant's declaration of that report for that day, in the tenant's calendar, into its table
``raw_report_<name>`` (a re-run replaces the day's rows), and its check ``reconciles_with_marts``
compares the report, when a mapping (``transform.reconciliation``) knows it, with its mart for the
same day. The assets are made when the code location loads, from the declarations then in the
registry: after declaring a report under a new name, reload the code location. A backfill over a
range of days reads a date range; the daily schedule reads each tenant's trailing window of days
(each declaration's ``window_days``).
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

import warnings
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import sqlalchemy as sa

from st_pipeline.database import describe_url
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, tenant_id_of, tenant_partitions
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.errors import ServiceTitanError
from st_pipeline.servicetitan.reports import shared_pacer
from st_pipeline.settings import Settings, SettingsError
from st_pipeline.sync.reports import ReportRead, read_report
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline.tenants.reports import ReportDeclaration, UnknownReportError
from st_pipeline.transform.reconciliation import MAPPINGS, Reconciliation, reconcile
from st_pipeline.warehouse.report_tables import period_rows, report_table, report_table_name

REPORTS_GROUP = "servicetitan_reports"
RECONCILES_CHECK = "reconciles_with_marts"
# The first day a report can be read for (a backfill's range starts here or later).
REPORT_DAYS_START = "2020-01-01"
# Differences listed in a failed check's metadata (the count says how many there were).
SHOWN_DIFFERENCES = 50

report_partitions = dg.MultiPartitionsDefinition(
    {
        "tenant": tenant_partitions,
        "day": dg.DailyPartitionsDefinition(start_date=REPORT_DAYS_START, end_offset=0),
    }
)


def report_asset_key(name: str) -> dg.AssetKey:
    """The asset of the report declared as ``name``."""
    return dg.AssetKey(["servicetitan", "reports", name])


def report_partition_key(tenant_id: int, day: date) -> str:
    return str(dg.MultiPartitionKey({"tenant": str(tenant_id), "day": day.isoformat()}))


def declared_reports(settings: Settings) -> list[ReportDeclaration]:
    """Every tenant's report declarations, read from the registry when the code location loads.

    A registry that cannot be read stops the load with a message naming it (never its password);
    a registry behind this code's schema says to run ``st-pipeline db upgrade``.
    """
    try:
        registry = TenantRegistry.open(settings)
    except sa.exc.SQLAlchemyError as exc:
        raise _unreadable(settings, exc) from None
    try:
        return registry.reports()
    except sa.exc.SQLAlchemyError as exc:
        raise _unreadable(settings, exc) from None
    finally:
        registry.close()


def _unreadable(settings: Settings, exc: sa.exc.SQLAlchemyError) -> SettingsError:
    cause = type(getattr(exc, "orig", None) or exc).__name__
    return SettingsError(
        f"the tenant registry ({describe_url(settings.registry_database_url)}, ST_PIPELINE_REGISTRY_URL) could not be "
        f"read for its declared reports ({cause}); check that its database is up and reachable, then reload the code "
        "location"
    )


def _check_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            RECONCILES_CHECK,
            asset=key,
            description="The report equals its mart for the same tenant and day, to the cent and count for count, "
            "when a shipped mapping knows it (BU Performance, Technician Performance, Call Booking, Collections); "
            "a failure lists each differing cell (key, field, the report's value, the mart's).",
            partitions_def=report_partitions,
        )


def _reconciliations(warehouse: WarehouseResource, tenant_id: int, read: ReportRead) -> list[Reconciliation]:
    engine, _ = warehouse.current_engine()
    with engine.connect() as conn:
        rows = period_rows(conn, report_table(read.name), tenant_id, read.period)
        return [
            reconcile(conn, mapping, tenant_id, read.period, rows)
            for mapping in MAPPINGS
            if mapping.applies_to(read.definition.name, read.definition.field_names)
        ]


def _check_result(results: list[Reconciliation], tenant_id: int) -> dg.AssetCheckResult:
    differences = [
        {"mapping": result.mapping.name, **difference.as_json()}
        for result in results
        for difference in result.differences
    ]
    unbuilt = sorted({result.mapping.mart_table_name for result in results if not result.mart_built})
    metadata: dict[str, Any] = {
        "mappings_checked": ", ".join(result.mapping.name for result in results) or "none",
        "cells_compared": sum(result.cells for result in results),
        "cells_differing": len(differences),
    }
    if differences:
        metadata["differences"] = dg.MetadataValue.json(differences[:SHOWN_DIFFERENCES])
    description: str | None
    if unbuilt:  # nothing to hold the report against yet: a warning, not a disagreement
        metadata["marts_not_built"] = ", ".join(unbuilt)
        description = (
            f"tenant {tenant_id} has no build of {', '.join(unbuilt)} yet: materialize servicetitan/tenant_models "
            "for it (each sync does), then read the report again"
        )
    else:
        description = None if results else "no shipped mapping knows this report: nothing to reconcile"
    return dg.AssetCheckResult(
        check_name=RECONCILES_CHECK,
        passed=not differences and not unbuilt,
        severity=dg.AssetCheckSeverity.ERROR if differences else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )


def _describe(name: str, declarations: Sequence[ReportDeclaration]) -> str:
    declared = ", ".join(
        f"tenant {d.tenant_id}: {d.category}/{d.report_id}{'' if d.enabled else ' (disabled)'}" for d in declarations
    )
    return (
        f"The ServiceTitan report declared as {name} (`st-pipeline report add`), read for one day of the tenant's "
        f"calendar into {report_table_name(name)}, one row per report row (its fields as the report's definition "
        "names them). Re-reading a day replaces that day's rows; a report whose definition changed fails with what "
        "changed. Data requests keep to ServiceTitan's limit per report and tenant."
        + (f"\n\nDeclared for {declared}." if declared else "")
    )


def _declaration(registry: TenantRegistry, tenant_id: int, name: str) -> ReportDeclaration:
    try:
        declaration = registry.report(tenant_id, name)
    except UnknownReportError:
        raise dg.Failure(
            f"tenant {tenant_id} declares no report {name}: declare it (`st-pipeline report add --tenant {tenant_id} "
            f"--name {name} ...`) or materialize this asset only for the tenants that do"
        ) from None
    if not declaration.enabled:
        raise dg.Failure(
            f"report {name} of tenant {tenant_id} is disabled: `st-pipeline report enable --tenant {tenant_id} "
            f"--name {name}` to read it again"
        )
    return declaration


def build_report_asset(name: str, declarations: Sequence[ReportDeclaration] = ()) -> dg.AssetsDefinition:
    """The asset of the report declared as ``name`` (``declarations``: the tenants' declarations of it,
    for its description), with its reconciliation check."""
    key = report_asset_key(name)

    @dg.asset(
        key=key,
        partitions_def=report_partitions,
        group_name=REPORTS_GROUP,
        kinds={"servicetitan", "table"},
        tags={"layer": "raw"},
        check_specs=[_check_spec(key)],
        description=_describe(name, declarations),
        metadata={"dagster/table_name": report_table_name(name)},
    )
    def report_asset(
        context: dg.AssetExecutionContext,
        servicetitan: ServiceTitanResource,
        tenant_registry: TenantRegistryResource,
        warehouse: WarehouseResource,
    ) -> Any:
        keys = report_partitions.get_partition_key_from_str(context.partition_key).keys_by_dimension
        tenant_id = tenant_id_of(keys["tenant"])
        day = date.fromisoformat(keys["day"])
        registry = tenant_registry.registry()
        declaration = _declaration(registry, tenant_id, name)
        engine, warehouse_name = warehouse.current_engine()
        with servicetitan.client(registry.credentials(tenant_id), tenant_registry.settings) as client:
            pacer = shared_pacer(
                client,
                declaration.category,
                declaration.report_id,
                requests=servicetitan.report_requests_per_window,
                window_s=servicetitan.report_window_s,
            )
            try:
                read = read_report(
                    client,
                    engine,
                    name=name,
                    category=declaration.category,
                    report_id=declaration.report_id,
                    parameters=declaration.parameters,
                    period=(day, day),
                    run_id=context.run.run_id,
                    pacer=pacer,
                )
            except ServiceTitanError as exc:
                raise dg.Failure(f"report {name} of tenant {tenant_id} for {day}: {exc}") from None
        context.log.info(
            f"report {name} for {day}: {read.rows} rows ({read.replaced} replaced), {read.requests} requests, "
            f"{read.paced_s:.1f} s waiting for its turn"
        )
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": read.rows,
                "warehouse": warehouse_name,
                "report": f"{read.definition.name} ({declaration.category}/{declaration.report_id})",
                "fields": ", ".join(read.definition.field_names),
                "rows_replaced": read.replaced,
                "requests": read.requests,
                "seconds_paced": round(read.paced_s, 1),
            }
        )
        yield _check_result(_reconciliations(warehouse, tenant_id, read), tenant_id)

    return report_asset


def build_report_assets(declarations: Iterable[ReportDeclaration]) -> list[dg.AssetsDefinition]:
    """One asset per declared report name (sorted), whichever tenants declare it."""
    by_name: dict[str, list[ReportDeclaration]] = {}
    for declaration in declarations:
        by_name.setdefault(declaration.name, []).append(declaration)
    return [build_report_asset(name, by_name[name]) for name in sorted(by_name)]


reports_job = dg.define_asset_job(
    "servicetitan_reports",
    selection=dg.AssetSelection.groups(REPORTS_GROUP),
    description="Reads declared reports of one tenant for one day (backfill it over a range of days).",
)


def build_reports_schedule(names: Iterable[str], cron: str = "30 6 * * *") -> dg.ScheduleDefinition:
    """Each tenant's enabled declared reports for their trailing days (up to yesterday, the tenant's
    calendar); ``names``: the report names the code location has assets for."""
    loaded = frozenset(names)

    @dg.schedule(
        name="servicetitan_reports_daily",
        cron_schedule=cron,
        job=reports_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reads every tenant's declared reports for their trailing days (window_days, up to yesterday "
        "in the tenant's time zone).",
    )
    def reports_schedule(
        context: dg.ScheduleEvaluationContext, tenant_registry: TenantRegistryResource
    ) -> list[dg.RunRequest]:
        registry = tenant_registry.registry()
        known = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
        now = context.scheduled_execution_time or datetime.now(ZoneInfo("UTC"))
        requests = []
        for tenant in registry.list(enabled_only=True):
            if str(tenant.tenant_id) not in known:
                continue
            declarations = registry.reports(tenant.tenant_id, enabled_only=True)
            unloaded = sorted(d.name for d in declarations if d.name not in loaded)
            if unloaded:
                context.log.warning(
                    f"tenant {tenant.tenant_id} declares reports the code location has no asset for yet "
                    f"({', '.join(unloaded)}): reload the code location"
                )
            today = now.astimezone(ZoneInfo(tenant.time_zone or "UTC")).date()
            for back in range(1, max((d.window_days for d in declarations), default=0) + 1):
                day = today - timedelta(days=back)
                selected = sorted(d.name for d in declarations if d.name in loaded and back <= d.window_days)
                if not selected:
                    continue
                key = report_partition_key(tenant.tenant_id, day)
                requests.append(
                    dg.RunRequest(
                        run_key=f"{key}@{today}",
                        partition_key=key,
                        asset_selection=[report_asset_key(name) for name in selected],
                    )
                )
        return requests

    return reports_schedule
