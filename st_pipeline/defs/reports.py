"""ServiceTitan reports in Dagster: the reports each tenant declares, read per day, and checked
against the marts they should equal.

``servicetitan/reports`` is partitioned by tenant and day: materializing a partition reads every
report the tenant declares (``st-pipeline report add``) for that day, in the tenant's calendar,
into its table ``raw_report_<name>`` (a re-run replaces the day's rows), and its check
``reconciles_with_marts`` compares each report that has a mapping (``transform.reconciliation``)
with its mart for the same day. A backfill over a range of days reads a date range; the daily
schedule reads each tenant's trailing window of days (its declarations' ``window_days``).
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

import warnings
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, tenant_id_of, tenant_partitions
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.errors import ServiceTitanError
from st_pipeline.servicetitan.reports import shared_pacer
from st_pipeline.sync.reports import ReportRead, read_report
from st_pipeline.transform.reconciliation import MAPPINGS, Reconciliation, reconcile
from st_pipeline.warehouse.report_tables import period_rows, report_table

REPORTS_KEY = dg.AssetKey(["servicetitan", "reports"])
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


def report_partition_key(tenant_id: int, day: date) -> str:
    return str(dg.MultiPartitionKey({"tenant": str(tenant_id), "day": day.isoformat()}))


def _check_spec() -> dg.AssetCheckSpec:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            RECONCILES_CHECK,
            asset=REPORTS_KEY,
            description="Every declared report with a known mapping (BU Performance, Technician Performance, Call "
            "Booking, Collections) equals its mart for the same tenant and day, to the cent and count for count; a "
            "failure lists each differing cell (key, field, the report's value, the mart's).",
            partitions_def=report_partitions,
        )


def _reconciliations(
    warehouse: WarehouseResource, tenant_id: int, reads: list[ReportRead]
) -> list[tuple[str, Reconciliation]]:
    engine, _ = warehouse.current_engine()
    results = []
    with engine.connect() as conn:
        for read in reads:
            for mapping in MAPPINGS:
                if mapping.applies_to(read.definition.name, read.definition.field_names):
                    rows = period_rows(conn, report_table(read.name), tenant_id, read.period)
                    results.append((read.name, reconcile(conn, mapping, tenant_id, read.period, rows)))
    return results


def _check_result(results: list[tuple[str, Reconciliation]]) -> dg.AssetCheckResult:
    differences = [
        {"report": name, "mapping": result.mapping.name, **difference.as_json()}
        for name, result in results
        for difference in result.differences
    ]
    metadata: dict[str, Any] = {
        "mappings_checked": ", ".join(f"{name}: {result.mapping.name}" for name, result in results) or "none",
        "cells_compared": sum(result.cells for _, result in results),
        "cells_differing": len(differences),
    }
    if differences:
        metadata["differences"] = dg.MetadataValue.json(differences[:SHOWN_DIFFERENCES])
    return dg.AssetCheckResult(
        check_name=RECONCILES_CHECK,
        passed=not differences,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=None if results else "no declared report of this tenant has a mapping to a mart",
    )


@dg.asset(
    key=REPORTS_KEY,
    partitions_def=report_partitions,
    group_name="servicetitan_reports",
    kinds={"servicetitan", "table"},
    tags={"layer": "raw"},
    check_specs=[_check_spec()],
    description="The ServiceTitan reports one tenant declares (`st-pipeline report add`), read for one day of the "
    "tenant's calendar into their tables raw_report_<name>, one row per report row (its fields as the report's "
    "definition names them). Re-reading a day replaces that day's rows; a report whose definition changed fails "
    "with what changed. Data requests keep to ServiceTitan's limit per report and tenant.",
)
def servicetitan_reports(
    context: dg.AssetExecutionContext,
    servicetitan: ServiceTitanResource,
    tenant_registry: TenantRegistryResource,
    warehouse: WarehouseResource,
) -> Any:
    keys = report_partitions.get_partition_key_from_str(context.partition_key).keys_by_dimension
    tenant_id = tenant_id_of(keys["tenant"])
    day = date.fromisoformat(keys["day"])
    registry = tenant_registry.registry()
    declarations = registry.reports(tenant_id, enabled_only=True)
    engine, warehouse_name = warehouse.current_engine()
    reads: list[ReportRead] = []
    failures: list[str] = []
    if declarations:
        credentials = registry.credentials(tenant_id)
        with servicetitan.client(credentials, tenant_registry.settings) as client:
            for declaration in declarations:
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
                        name=declaration.name,
                        category=declaration.category,
                        report_id=declaration.report_id,
                        parameters=declaration.parameters,
                        period=(day, day),
                        run_id=context.run.run_id,
                        pacer=pacer,
                    )
                except ServiceTitanError as exc:  # one report's failure costs that report only
                    context.log.error(f"report {declaration.name}: {exc}")
                    failures.append(f"{declaration.name}: {exc}")
                    continue
                context.log.info(
                    f"report {read.name} for {day}: {read.rows} rows ({read.replaced} replaced), {read.requests} "
                    f"requests, {read.paced_s:.1f} s waiting for its turn"
                )
                reads.append(read)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(read.rows for read in reads),
            "warehouse": warehouse_name,
            "reports": dg.MetadataValue.md(
                "\n".join(
                    [
                        "| report | ServiceTitan report | table | rows | requests |",
                        "|---|---|---|---|---|",
                        *(
                            f"| {r.name} | {r.definition.name} ({r.definition.report_id}) | {r.table} | {r.rows} | "
                            f"{r.requests} |"
                            for r in reads
                        ),
                    ]
                )
                if reads
                else "no reports declared for this tenant (`st-pipeline report add`)"
            ),
            "failed_reports": len(failures),
        }
    )
    yield _check_result(_reconciliations(warehouse, tenant_id, reads))
    if failures:
        raise dg.Failure(
            f"{len(failures)} of {len(declarations)} reports of tenant {tenant_id} failed for {day}",
            metadata={"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))},
        )


reports_job = dg.define_asset_job(
    "servicetitan_reports",
    selection=dg.AssetSelection.assets(REPORTS_KEY),
    description="Reads the declared reports of one tenant for one day (backfill it over a range of days).",
)


def build_reports_schedule(cron: str = "30 6 * * *") -> dg.ScheduleDefinition:
    """Each tenant's declared reports for its trailing days (up to yesterday, the tenant's calendar)."""

    @dg.schedule(
        name="servicetitan_reports_daily",
        cron_schedule=cron,
        job=reports_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reads every tenant's declared reports for its trailing days (window_days, up to yesterday "
        "in the tenant's time zone).",
    )
    def reports_schedule(
        context: dg.ScheduleEvaluationContext, tenant_registry: TenantRegistryResource
    ) -> list[dg.RunRequest]:
        registry = tenant_registry.registry()
        known = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
        requests = []
        now = context.scheduled_execution_time or datetime.now(ZoneInfo("UTC"))
        for tenant in registry.list(enabled_only=True):
            declarations = registry.reports(tenant.tenant_id, enabled_only=True)
            if not declarations or str(tenant.tenant_id) not in known:
                continue
            today = now.astimezone(ZoneInfo(tenant.time_zone or "UTC")).date()
            for back in range(1, max(d.window_days for d in declarations) + 1):
                key = report_partition_key(tenant.tenant_id, today - timedelta(days=back))
                requests.append(dg.RunRequest(run_key=f"{key}@{today}", partition_key=key))
        return requests

    return reports_schedule
