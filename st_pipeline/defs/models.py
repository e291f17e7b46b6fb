"""Hub tables and KPI marts in Dagster: declared per table, built per tenant by one asset.

``servicetitan/tenant_models`` runs right after the tenant sync, in the same run (the sync job
selects both): a scheduled sync leaves the tenant's hub tables and marts current with no other
step, no sensor and no daemon-side evaluation. It is built the way the tenant sync is, and for
the same reason: a run plans one asset, and the hub and mart assets (declared beside it, each
with its column schema) get a materialization, with their checks, only when they changed. An
hourly run that changed nothing costs a count per hub table.

A raw dataset that was not synced for the tenant (scope not granted, disabled) leaves its hub
tables as they are; the build says which, and the marts build from what exists.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Iterator
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from st_pipeline.defs.checks import selected_checks
from st_pipeline.defs.columns import table_columns
from st_pipeline.defs.partitions import tenant_id_of, tenant_partitions
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, raw_asset_key
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource, process_cpu_s
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.transform.build import HubBuild, build_tenant, raw_table_name_for
from st_pipeline.transform.checks import ERROR_CHECKS, HUB_CHECKS, MART_CHECKS, Verdict, check_hub, check_mart, hub_checks_for
from st_pipeline.transform.hubs import HUB_TABLES
from st_pipeline.transform.marts import MARTS, Mart, MartBuild, mart_table
from st_pipeline.transform.spec import Column, HubTable
from st_pipeline.transform.tables import hub_table
from st_pipeline.transform.types import column_type_name
from st_pipeline.warehouse.locks import TenantBusyError, tenant_lock

TENANT_MODELS_KEY = dg.AssetKey(["servicetitan", "tenant_models"])
FULL_REBUILD_TAG = "st_pipeline/full_rebuild"
PREVIEW_ROWS = 5
# The columns every hub table has after its own (``transform.spec.BOOKKEEPING_COLUMNS``), described.
HUB_BOOKKEEPING = {
    "tenant_id": "The ServiceTitan tenant the row belongs to (the asset's partition).",
    "deleted_at": "The raw row's deleted_at: when the record was found gone from ServiceTitan.",
    "source_modified_on": "The raw row's modified_on.",
    "built_at": "When the tenant's build wrote the row.",
}


def hub_asset_key(spec: HubTable) -> dg.AssetKey:
    return dg.AssetKey(["servicetitan", "hub", spec.name])


def mart_asset_key(mart: Mart) -> dg.AssetKey:
    return dg.AssetKey(["servicetitan", "mart", mart.name])


def _hub_key_by_table() -> dict[str, dg.AssetKey]:
    return {spec.table_name: hub_asset_key(spec) for spec in HUB_TABLES}


def _column_source(spec: HubTable, column: Column) -> str:
    """Where a hub column is read in its raw table, as a column description."""
    if column.path == "#":
        return f"The element's position in the raw payload.{spec.explode}."
    path = ".".join(column.json_path)
    if spec.explode and not column.from_parent:
        path = f"{spec.explode}[].{path}"
    return f"From the raw payload.{path}."


def hub_asset_spec(spec: HubTable) -> dg.AssetSpec:
    catalogue = load_catalogue()
    types = {c.name: column_type_name(c.type) for c in spec.columns}
    types.update(tenant_id="bigint", deleted_at="timestamp (UTC)", source_modified_on="timestamp (UTC)",
                 built_at="timestamp (UTC)")
    sources = {c.name: c.description or _column_source(spec, c) for c in spec.columns}
    return dg.AssetSpec(
        key=hub_asset_key(spec),
        deps=[raw_asset_key(catalogue.dataset(spec.source))],
        group_name="hub",
        description=f"{spec.description} Table {spec.table_name}, key ({', '.join(spec.primary_key)}), built from "
        f"{spec.source}" + (f" (one row per element of its `{spec.explode}`)" if spec.explode else "")
        + " by servicetitan/tenant_models.",
        kinds={"table"},
        partitions_def=tenant_partitions,
        metadata={
            "dagster/table_name": spec.table_name,
            "dagster/column_schema": dg.TableSchema(
                columns=table_columns(hub_table(spec), types, {**HUB_BOOKKEEPING, **sources})
            ),
            "source_dataset": spec.source,
        },
    )


def mart_asset_spec(mart: Mart) -> dg.AssetSpec:
    hubs = _hub_key_by_table()
    types = {c.name: column_type_name(c.type) for c in mart.columns}
    types["built_at"] = "timestamp (UTC)"
    return dg.AssetSpec(
        key=mart_asset_key(mart),
        deps=[hubs[name] for name in mart.reads],
        group_name="marts",
        description=f"{mart.description} Table {mart.table_name}, key ({', '.join(mart.key)}).",
        kinds={"table"},
        partitions_def=tenant_partitions,
        metadata={
            "dagster/table_name": mart.table_name,
            "dagster/column_schema": dg.TableSchema(columns=table_columns(mart_table(mart), types)),
        },
    )


def _check_description(name: str, text: str) -> str:
    """A hub or mart check's description, saying what its failure does."""
    if name in ERROR_CHECKS:
        return f"{text} A failure is an ERROR: the tenant's build run fails."
    return f"{text} A failure is a WARN."


def model_check_specs() -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(name=name, asset=hub_asset_key(spec), description=_check_description(name, HUB_CHECKS[name]))
        for spec in HUB_TABLES for name in hub_checks_for(spec)
    ]
    specs += [
        dg.AssetCheckSpec(name=name, asset=mart_asset_key(mart), description=_check_description(name, description))
        for mart in MARTS for name, description in MART_CHECKS.items()
    ]
    return specs


class TenantModelsConfig(dg.Config):
    """Run config of a tenant's hub and mart build (all optional: incremental)."""

    full_rebuild: bool = Field(
        default=False, description="Rebuild every hub table and mart of the tenant from its raw tables "
        "(also: tag st_pipeline/full_rebuild=true). Gives the same tables as the incremental builds.",
    )
    lock_wait_s: float = Field(default=10.0, ge=0, le=3600, description="How long to wait for the tenant's lock.")


def _evaluation(key: dg.AssetKey, verdict: Verdict, partition: str) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=key, check_name=verdict.check_name, passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR if verdict.is_error else dg.AssetCheckSeverity.WARN,
        description=verdict.description, metadata=verdict.metadata, partition=partition,
    )


def _preview(conn: sa.Connection, table: sa.Table, tenant_id: int) -> str:
    """A markdown table of a few of the tenant's rows."""
    rows = conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id).limit(PREVIEW_ROWS)).fetchall()
    names = [c.name for c in table.columns if c.name not in ("tenant_id", "built_at", "source_modified_on")]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        lines.append("| " + " | ".join("" if row._mapping[n] is None else str(row._mapping[n]) for n in names) + " |")
    return "\n".join(lines)


def _hub_metadata(hub: HubBuild, warehouse: str, preview: str) -> dict[str, Any]:
    return {
        "dagster/row_count": hub.row_count,
        "build": hub.mode,
        "source_rows_reprocessed": hub.source_rows_changed,
        "source_rows_total": hub.source_rows_total,
        "share_reprocessed": round(hub.share_reprocessed, 6),
        "rows_deleted": hub.rows_deleted,
        "rows_inserted": hub.rows_inserted,
        "duration_s": round(hub.duration_s, 3),
        "warehouse": warehouse,
        "preview": dg.MetadataValue.md(preview),
    }


def _mart_metadata(built: MartBuild, warehouse: str, preview: str) -> dict[str, Any]:
    return {"dagster/row_count": built.row_count, **built.headline, "warehouse": warehouse,
            "preview": dg.MetadataValue.md(preview)}


@dg.asset(
    key=TENANT_MODELS_KEY,
    deps=[TENANT_SYNC_KEY],
    partitions_def=tenant_partitions,
    group_name="servicetitan",
    kinds={"sql"},
    description=(
        "Builds one tenant's hub tables (typed rows from the raw JSON) and KPI marts inside the warehouse, "
        "right after its sync: incrementally, from the raw rows changed since the last build. Each hub table "
        "or mart that changed is reported as a materialization, with its checks and a preview."
    ),
)
def tenant_models(
    context: dg.AssetExecutionContext, config: TenantModelsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    partition = context.partition_key
    tenant_id = tenant_id_of(partition)
    engine, warehouse_name = warehouse.current_engine()
    full = config.full_rebuild or context.run.tags.get(FULL_REBUILD_TAG, "").lower() == "true"
    failures: list[str] = []
    try:
        with tenant_lock(engine, tenant_id, context.run_id, wait_s=config.lock_wait_s):
            built = build_tenant(engine, tenant_id, context.run_id, full=full)
            with engine.connect() as conn:
                for hub in built.hubs:
                    if not (hub.changed or (full and hub.mode == "full")):
                        continue
                    spec = next(s for s in HUB_TABLES if s.table_name == hub.table)
                    key = hub_asset_key(spec)
                    context.log_event(dg.AssetMaterialization(
                        asset_key=key, partition=partition,
                        metadata=_hub_metadata(hub, warehouse_name, _preview(conn, hub_table(spec), tenant_id)),
                    ))
                    for verdict in check_hub(conn, spec, tenant_id, raw_table_name_for(spec)):
                        context.log_event(_evaluation(key, verdict, partition))
                        if not verdict.passed and verdict.is_error:
                            failures.append(f"{spec.table_name}: {verdict.check_name} ({verdict.description})")
                for mart_built in built.marts:
                    mart = next(m for m in MARTS if m.table_name == mart_built.table)
                    key = mart_asset_key(mart)
                    context.log_event(dg.AssetMaterialization(
                        asset_key=key, partition=partition,
                        metadata=_mart_metadata(mart_built, warehouse_name, _preview(conn, mart_table(mart), tenant_id)),
                    ))
                    for verdict in check_mart(conn, mart, tenant_id):
                        context.log_event(_evaluation(key, verdict, partition))
                        if not verdict.passed and verdict.is_error:
                            failures.append(f"{mart.table_name}: {verdict.check_name} ({verdict.description})")
    except TenantBusyError as exc:
        raise dg.Failure(str(exc), metadata={"error_type": "TenantBusyError", "tenant_id": tenant_id}) from None
    missing = [h for h in built.hubs if h.mode == "missing_source"]
    if missing:
        context.log.warning(
            f"tenant {tenant_id}: {len(missing)} hub tables have no synced source and were left as they are: "
            + ", ".join(f"{h.table} ({h.note})" for h in missing)
        )
    if failures:
        raise dg.Failure(f"{len(failures)} checks failed for tenant {tenant_id}: " + "; ".join(failures[:5]))
    reprocessed = sum(h.source_rows_changed for h in built.hubs)
    total = sum(h.source_rows_total for h in built.hubs)
    context.log.info(
        f"tenant {tenant_id}: {len(built.changed_tables)} hub tables changed, {len(built.marts)} marts rebuilt, "
        f"{reprocessed} of {total} raw rows reprocessed in {built.duration_s:.2f} s"
    )
    return dg.MaterializeResult(metadata={
        "hubs_changed": len(built.changed_tables),
        "marts_rebuilt": len(built.marts),
        "source_rows_reprocessed": reprocessed,
        "source_rows_total": total,
        "share_reprocessed": round(reprocessed / total, 6) if total else 0.0,
        "rows_inserted": sum(h.rows_inserted for h in built.hubs),
        "rows_deleted": sum(h.rows_deleted for h in built.hubs),
        "build": "full" if full else "incremental",
        "duration_s": round(built.duration_s, 3),
        "missing_sources": ", ".join(h.table for h in missing) or "none",
        "warehouse": warehouse_name,
        "process_cpu_s": round(process_cpu_s(), 2),
    })


def build_model_checks() -> dg.AssetChecksDefinition:
    """The hub and mart checks, executable on demand: every enabled tenant, judged again."""
    hubs = {hub_asset_key(spec): spec for spec in HUB_TABLES}
    marts = {mart_asset_key(mart): mart for mart in MARTS}

    @dg.multi_asset_check(
        name="servicetitan_model_checks", specs=model_check_specs(), can_subset=True,
        description="Runs the hub and mart checks for every enabled tenant (the tenant build reports the same "
        "checks per tenant for the tables it changed).",
    )
    def servicetitan_model_checks(
        context: dg.AssetCheckExecutionContext, tenant_registry: TenantRegistryResource, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        selected = selected_checks(context)
        tenants = [t.tenant_id for t in tenant_registry.registry().list(enabled_only=True)]
        engine = warehouse.engine()
        existing = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            for key, names in selected.items():
                failing: dict[str, list[str]] = {name: [] for name in names}
                judged = 0
                for tenant_id in tenants:
                    if key in hubs:
                        spec = hubs[key]
                        raw = raw_table_name_for(spec)
                        if spec.table_name not in existing or raw not in existing:
                            continue
                        verdicts = check_hub(conn, spec, tenant_id, raw)
                    else:
                        if marts[key].table_name not in existing:
                            continue
                        verdicts = check_mart(conn, marts[key], tenant_id)
                    judged += 1
                    for verdict in verdicts:
                        if verdict.check_name in names and not verdict.passed:
                            failing[verdict.check_name].append(f"{tenant_id} ({verdict.description})")
                for name in sorted(names):
                    bad = failing[name]
                    yield dg.AssetCheckResult(
                        asset_key=key, check_name=name, passed=not bad,
                        severity=dg.AssetCheckSeverity.ERROR if name in ERROR_CHECKS else dg.AssetCheckSeverity.WARN,
                        description=f"{judged} tenants checked" if not bad else "fails for tenants " + "; ".join(bad[:20]),
                        metadata={"tenants_checked": judged, "failing_tenants": len(bad)},
                    )

    return servicetitan_model_checks


def model_asset_specs() -> list[dg.AssetSpec]:
    return [*(hub_asset_spec(spec) for spec in HUB_TABLES), *(mart_asset_spec(mart) for mart in MARTS)]
