"""ServiceTitan marketing reports in Dagster: the date-range datasets (``servicetitan.date_ranges``)
read per tenant and day.

One asset per dataset — ``servicetitan/marketing/campaign_cost_summary``,
``servicetitan/marketingads/performance`` and ``servicetitan/marketingads/attributed_leads`` — each
partitioned by tenant and day like the declared reports (``report_partitions``). Materializing a
partition reads that day of the tenant's calendar into the dataset's table (``raw_<slug>``),
replacing the day's previous rows in one transaction; a backfill over a range of days reads each
day. Each asset has the check ``rows_match_spec``: the day's answer matched the record model of the
specs, row by row (a malformed answer fails the check and the asset, and the stored rows stay as
they were). The daily schedule reads each enabled tenant's trailing window of days
(``ST_PIPELINE_MARKETING_REPORT_WINDOW_DAYS``), so figures that change after the day are picked up.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

import warnings
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, tenant_id_of
from st_pipeline.defs.reports import report_partition_key, report_partitions
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.date_ranges import (
    DATE_RANGE_DATASETS,
    DateRangeDataset,
    MalformedRowsError,
    row_problems,
)
from st_pipeline.servicetitan.models import field_types
from st_pipeline.sync.date_ranges import read_day, stored_day

ROWS_MATCH_SPEC = "rows_match_spec"
GROUP = "servicetitan_marketing_reports"


def marketing_report_key(dataset: DateRangeDataset) -> dg.AssetKey:
    return dg.AssetKey(["servicetitan", dataset.module, dataset.name])


def _check_spec(dataset: DateRangeDataset) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            ROWS_MATCH_SPEC,
            asset=marketing_report_key(dataset),
            description="Every row ServiceTitan served for the day matches the endpoint's record model from the "
            "specs (required fields present, each of its type, numbers finite), and so does every row stored; a "
            "failure names the rows and fields, and the day's previous rows are kept.",
            partitions_def=report_partitions,
        )


def _check_result(passed: bool, metadata: dict[str, Any]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=ROWS_MATCH_SPEC, passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )


def build_marketing_report_asset(dataset: DateRangeDataset) -> dg.AssetsDefinition:
    """The asset of one date-range dataset, partitioned by tenant and day, with its check."""
    key = marketing_report_key(dataset)
    types = field_types(dataset.key)

    @dg.asset(
        key=key,
        partitions_def=report_partitions,
        group_name=GROUP,
        kinds={"servicetitan", "table"},
        tags={"layer": "raw"},
        check_specs=[_check_spec(dataset)],
        description=f"{dataset.description} Read from {dataset.endpoint.path} for one day of the tenant's "
        f"calendar ({dataset.from_param}/{dataset.to_param}: the day's midnights "
        f"{'in UTC' if dataset.utc else 'in local time'}) into raw_{dataset.dataset.slug}, one row per row "
        "served (JSON payload); re-reading a day replaces that day's rows.",
        metadata={"fields": dg.MetadataValue.json(types)},
    )
    def marketing_report(
        context: dg.AssetExecutionContext,
        servicetitan: ServiceTitanResource,
        tenant_registry: TenantRegistryResource,
        warehouse: WarehouseResource,
    ) -> Iterator[Any]:
        keys = report_partitions.get_partition_key_from_str(context.partition_key).keys_by_dimension
        tenant_id = tenant_id_of(keys["tenant"])
        day = date.fromisoformat(keys["day"])
        registry = tenant_registry.registry()
        zone = registry.get(tenant_id).time_zone
        engine, warehouse_name = warehouse.current_engine()
        with servicetitan.client(registry.credentials(tenant_id), tenant_registry.settings) as client:
            try:
                read = read_day(client, engine, dataset, day=day, zone=zone, run_id=context.run.run_id)
            except MalformedRowsError as exc:
                yield _check_result(False, {"problem": exc.detail})
                raise dg.Failure(
                    f"{dataset.key} of tenant {tenant_id} for {day}: {exc.detail}; the day's stored rows were kept",
                ) from None
        context.log.info(
            f"{dataset.key} for {day} ({read.range_start:%Y-%m-%d %H:%M} .. {read.range_end:%Y-%m-%d %H:%M} UTC): "
            f"{read.rows} rows ({read.replaced} replaced), {read.pages} pages"
        )
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": read.rows,
                "rows_replaced": read.replaced,
                "pages": read.pages,
                "table": read.table,
                "warehouse": warehouse_name,
                "range_start_utc": read.range_start.isoformat(),
                "range_end_utc": read.range_end.isoformat(),
            }
        )
        stored = stored_day(engine, dataset, tenant_id, day)
        problems = row_problems(dataset, stored)
        metadata: dict[str, Any] = {"rows_checked": len(stored), "rows_not_matching": len(problems)}
        if problems:
            metadata["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:50]))
        yield _check_result(not problems and len(stored) == read.rows, metadata)

    return marketing_report


marketing_report_assets = [build_marketing_report_asset(dataset) for dataset in DATE_RANGE_DATASETS]
MARKETING_REPORT_KEYS = [marketing_report_key(dataset) for dataset in DATE_RANGE_DATASETS]

marketing_reports_job = dg.define_asset_job(
    "servicetitan_marketing_reports",
    selection=dg.AssetSelection.assets(*MARKETING_REPORT_KEYS),
    description="Reads the marketing reports (campaign cost summary, Marketing Ads performance and attributed "
    "leads) of one tenant for one day (backfill it over a range of days).",
)


def build_marketing_reports_schedule(window_days: int, cron: str = "45 6 * * *") -> dg.ScheduleDefinition:
    """Each enabled tenant's marketing reports for its last ``window_days`` days, up to yesterday in its
    time zone (only tenants with a partition)."""

    @dg.schedule(
        name="servicetitan_marketing_reports_daily",
        cron_schedule=cron,
        job=marketing_reports_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Reads every enabled tenant's marketing reports for its last {window_days} days, up to "
        "yesterday in the tenant's time zone (ST_PIPELINE_MARKETING_REPORT_WINDOW_DAYS).",
    )
    def marketing_reports_schedule(
        context: dg.ScheduleEvaluationContext, tenant_registry: TenantRegistryResource
    ) -> list[dg.RunRequest]:
        known = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
        now = context.scheduled_execution_time or datetime.now(ZoneInfo("UTC"))
        requests = []
        for tenant in tenant_registry.registry().list(enabled_only=True):
            if str(tenant.tenant_id) not in known:
                continue
            today = now.astimezone(ZoneInfo(tenant.time_zone or "UTC")).date()
            for back in range(1, window_days + 1):
                key = report_partition_key(tenant.tenant_id, today - timedelta(days=back))
                requests.append(dg.RunRequest(run_key=f"marketing:{key}@{today}", partition_key=key))
        return requests

    return marketing_reports_schedule
