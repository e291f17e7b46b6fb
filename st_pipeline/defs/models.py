"""Hub tables and KPI marts in Dagster: one subsettable multi-asset, beside ``servicetitan/tenant_models``.

Every hub table and mart is executable: "Materialize" on ``servicetitan/mart/revenue_by_business_unit``
for a tenant brings the hub tables it reads up to date from the raw tables (incrementally, from the
raw rows changed since their last build), then builds it; a hub table builds from its raw table. A
build also takes along every mart that reads a hub table it builds (a hub table's changes are taken
up once, so a mart left out would never see them: ``transform.build.build_plan``), reported when
it changed. A hub table whose raw table was never synced for the tenant fails its materialization,
naming the raw asset to materialize first; a mart builds from the hub tables that exist and names
the missing ones.

``servicetitan/tenant_models`` runs right after the tenant sync, in the same run (the sync job selects
both): a scheduled sync leaves the tenant's hub tables and marts current with no other step, no
sensor and no daemon-side evaluation. It is built the way the tenant sync is, and for the same
reason: a run plans one asset, and the hub and mart assets get a materialization, with their
checks, only when they changed. An hourly run that changed nothing costs a count per hub table.

Every build holds the tenant's lock, so no sync writes the tenant's raw rows while its hub tables
read them.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Iterator
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from st_pipeline.defs.columns import table_columns
from st_pipeline.defs.partitions import tenant_check_spec, tenant_id_of, tenant_partitions
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, raw_asset_key
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource, process_cpu_s
from st_pipeline.defs.tenant_runs import holding_tenant_lock, run_flag
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.tenants.registry import UnknownTenantError
from st_pipeline.transform.build import HubBuild, TenantBuild, build_plan, build_tenant, raw_table_name_for
from st_pipeline.transform.checks import (
    ERROR_CHECKS,
    HUB_CHECKS,
    MART_CHECKS,
    Verdict,
    check_hub,
    check_mart,
    hub_checks_for,
)
from st_pipeline.transform.hubs import HUB_TABLES
from st_pipeline.transform.mart_build import MartBuild, current_mart, mart_table
from st_pipeline.transform.mart_parts import Mart
from st_pipeline.transform.marts import MARTS
from st_pipeline.transform.spec import Column, HubTable
from st_pipeline.transform.tables import hub_table
from st_pipeline.transform.types import column_type_name

TENANT_MODELS_KEY = dg.AssetKey(["servicetitan", "tenant_models"])
# The op of the models' multi-asset, as run config addresses it (``ops.servicetitan__tenant_models``).
TENANT_MODELS_OP = TENANT_MODELS_KEY.to_python_identifier()
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
    types.update(
        tenant_id="bigint",
        deleted_at="timestamp (UTC)",
        source_modified_on="timestamp (UTC)",
        built_at="timestamp (UTC)",
    )
    sources = {c.name: c.description or _column_source(spec, c) for c in spec.columns}
    return dg.AssetSpec(
        key=hub_asset_key(spec),
        deps=[raw_asset_key(catalogue.dataset(spec.source)), TENANT_MODELS_KEY],
        group_name="hub",
        description=f"{spec.description} Table {spec.table_name}, key ({', '.join(spec.primary_key)}), built from "
        f"{spec.source}"
        + (f" (one row per element of its `{spec.explode}`)" if spec.explode else "")
        + ". Materialize it to build it for a tenant from its raw table; servicetitan/tenant_models builds it "
        "after each sync and reports it when it changed.",
        skippable=True,
        kinds={"table"},
        tags={"layer": "hub"},
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
        description=f"{mart.description} Table {mart.table_name}, key ({', '.join(mart.key)}). Materialize it to "
        "build it for a tenant, with the hub tables it reads brought up to date first.",
        skippable=True,
        kinds={"table"},
        tags={"layer": "mart"},
        partitions_def=tenant_partitions,
        metadata={
            "dagster/table_name": mart.table_name,
            "dagster/column_schema": dg.TableSchema(columns=table_columns(mart_table(mart), types)),
        },
    )


def _check_description(name: str, text: str) -> str:
    """A hub or mart check's description, saying what its failure does."""
    if name in ERROR_CHECKS:
        return f"{text} A failure is an ERROR: the tenant's build fails."
    return f"{text} A failure is a WARN."


def model_check_specs() -> list[dg.AssetCheckSpec]:
    """The checks of every hub table and mart, partitioned by tenant."""
    specs = [
        tenant_check_spec(name, hub_asset_key(spec), _check_description(name, HUB_CHECKS[name]))
        for spec in HUB_TABLES
        for name in hub_checks_for(spec)
    ]
    specs += [
        tenant_check_spec(name, mart_asset_key(mart), _check_description(name, description))
        for mart in MARTS
        for name, description in MART_CHECKS.items()
    ]
    return specs


class TenantModelsConfig(dg.Config):
    """Run config of a tenant's hub and mart build (all optional: incremental)."""

    full_rebuild: bool = Field(
        default=False,
        description="Build the run's hub tables and marts in full from the raw tables (also: tag "
        "st_pipeline/full_rebuild=true). Gives the same tables as the incremental builds.",
    )
    lock_wait_s: float = Field(default=10.0, ge=0, le=3600, description="How long to wait for the tenant's lock.")


def _evaluation(key: dg.AssetKey, verdict: Verdict, partition: str) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=verdict.check_name,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR if verdict.is_error else dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata=verdict.metadata,
        partition=partition,
    )


def _result(key: dg.AssetKey, verdict: Verdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=verdict.check_name,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR if verdict.is_error else dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata=verdict.metadata,
    )


def _preview(conn: sa.Connection, table: sa.Table, tenant_id: int) -> dg.TableMetadataValue:
    """A few of the tenant's rows, as a table the UI renders (values it cannot type are shown as text)."""
    columns = [c for c in table.columns if c.name not in ("tenant_id", "built_at", "source_modified_on")]
    query = sa.select(*columns).where(table.c.tenant_id == tenant_id).limit(PREVIEW_ROWS)
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({c.name: _cell(value) for c, value in zip(columns, row, strict=True)})
            for row in conn.execute(query)
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn(c.name, str(c.type).lower()) for c in columns]),
    )


def _cell(value: object) -> str | int | float | bool | None:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def _hub_metadata(hub: HubBuild, warehouse: str, preview: dg.TableMetadataValue) -> dict[str, Any]:
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
        "preview": preview,
    }


def _mart_metadata(built: MartBuild, warehouse: str, preview: dg.TableMetadataValue) -> dict[str, Any]:
    return {
        "dagster/row_count": built.row_count,
        "build": built.mode,
        **built.headline,
        "warehouse": warehouse,
        "preview": preview,
    }


HUBS_BY_KEY = {hub_asset_key(spec): spec for spec in HUB_TABLES}
MARTS_BY_KEY = {mart_asset_key(mart): mart for mart in MARTS}
TENANT_MODELS_SPEC = dg.AssetSpec(
    key=TENANT_MODELS_KEY,
    deps=[TENANT_SYNC_KEY],
    group_name="servicetitan",
    kinds={"sql"},
    partitions_def=tenant_partitions,
    description=(
        "Builds one tenant's hub tables (typed rows from the raw JSON) and KPI marts inside the warehouse, "
        "right after its sync: incrementally, from the raw rows changed since the last build. Each hub table "
        "or mart that changed is reported as a materialization, with its checks and a preview."
    ),
)


class _ModelsRun:
    """One run's build of a tenant's models: what it selected, and how it reports each table."""

    def __init__(
        self, context: dg.AssetExecutionContext, conn: sa.Connection, tenant_id: int, warehouse: str, full: bool
    ) -> None:
        self.context, self.conn, self.tenant_id, self.warehouse, self.full = context, conn, tenant_id, warehouse, full
        self.partition = context.partition_key
        self.failures: list[str] = []

    def _planned(self, key: dg.AssetKey) -> bool:
        return key in self.context.selected_asset_keys

    def _verdicts(self, key: dg.AssetKey, table: str, verdicts: list[Verdict]) -> Iterator[dg.AssetCheckResult]:
        """Planned checks as results, the others (of a table the run did not plan) as events."""
        planned = self._planned(key)
        for verdict in verdicts:
            if planned:
                if dg.AssetCheckKey(key, verdict.check_name) not in self.context.selected_asset_check_keys:
                    continue
                yield _result(key, verdict)
            else:
                self.context.log_event(_evaluation(key, verdict, self.partition))
            if not verdict.passed and verdict.is_error:
                self.failures.append(f"{table}: {verdict.check_name} ({verdict.description})")

    def hub(self, hub: HubBuild) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        spec = next(s for s in HUB_TABLES if s.table_name == hub.table)
        key = hub_asset_key(spec)
        if hub.mode == "missing_source":
            if self._planned(key):
                raw = raw_asset_key(load_catalogue().dataset(spec.source))
                self.failures.append(
                    f"{spec.table_name} is built from {raw.to_user_string()}, which has not been synced for tenant "
                    f"{self.tenant_id} (never synced, turned off, or its scope is not granted): materialize that raw "
                    "asset for this partition first (`st-pipeline tenant test` lists the granted scopes)"
                )
            return
        if not (self._planned(key) or hub.changed or (self.full and hub.mode == "full")):
            return
        metadata = _hub_metadata(hub, self.warehouse, _preview(self.conn, hub_table(spec), self.tenant_id))
        if self._planned(key):
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)
        else:
            self.context.log_event(dg.AssetMaterialization(asset_key=key, partition=self.partition, metadata=metadata))
        yield from self._verdicts(
            key, spec.table_name, check_hub(self.conn, spec, self.tenant_id, raw_table_name_for(spec))
        )

    def mart(self, mart: Mart, built: MartBuild) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        key = mart_asset_key(mart)
        metadata = _mart_metadata(built, self.warehouse, _preview(self.conn, mart_table(mart), self.tenant_id))
        if self._planned(key):
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)
        else:
            self.context.log_event(dg.AssetMaterialization(asset_key=key, partition=self.partition, metadata=metadata))
        yield from self._verdicts(key, mart.table_name, check_mart(self.conn, mart, self.tenant_id))

    def report(self, built: TenantBuild) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Every hub table and mart the build touched, and the planned ones it found current."""
        for hub in built.hubs:
            yield from self.hub(hub)
        rebuilt = {m.table for m in built.marts}
        for mart_built in built.marts:
            yield from self.mart(next(m for m in MARTS if m.table_name == mart_built.table), mart_built)
        for key in sorted(self.context.selected_asset_keys & set(MARTS_BY_KEY), key=lambda k: k.to_user_string()):
            mart = MARTS_BY_KEY[key]
            if mart.table_name not in rebuilt:  # nothing it reads changed: as it stands
                yield from self.mart(mart, current_mart(self.conn, mart, self.tenant_id))


def _time_zone(context: dg.AssetExecutionContext, registry: TenantRegistryResource, tenant_id: int) -> str | None:
    """The tenant's time zone from the registry (its marts' calendar); None (UTC) when it has none."""
    try:
        zone = registry.registry().get(tenant_id).time_zone
    except UnknownTenantError:
        context.log.warning(f"tenant {tenant_id} is not in the registry: its marts' days are UTC")
        return None
    if zone is None:
        context.log.warning(
            f"tenant {tenant_id} has no time zone: its marts' days are UTC "
            f"(set one with `st-pipeline tenant set-time-zone --tenant {tenant_id} ZONE`)"
        )
    return zone


@dg.multi_asset(
    name=TENANT_MODELS_OP,
    specs=[TENANT_MODELS_SPEC, *(hub_asset_spec(spec) for spec in HUB_TABLES), *(mart_asset_spec(m) for m in MARTS)],
    check_specs=model_check_specs(),
    can_subset=True,
    partitions_def=tenant_partitions,
    description="Builds a tenant's hub tables and marts in the warehouse: the selected ones (and what they need), "
    "or with servicetitan/tenant_models all of them.",
)
def tenant_models(
    context: dg.AssetExecutionContext,
    config: TenantModelsConfig,
    warehouse: WarehouseResource,
    tenant_registry: TenantRegistryResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    partition = context.partition_key
    tenant_id = tenant_id_of(partition)
    engine, warehouse_name = warehouse.current_engine()
    if not context.selected_asset_keys:  # checks alone: judge the tables as they stand
        yield from _check_current(context, engine, tenant_id)
        return
    whole_tenant = TENANT_MODELS_KEY in context.selected_asset_keys
    if whole_tenant:
        hubs, marts = HUB_TABLES, MARTS
    else:
        selected = context.selected_asset_keys
        hubs, marts = build_plan(
            [HUBS_BY_KEY[k] for k in selected if k in HUBS_BY_KEY],
            [MARTS_BY_KEY[k] for k in selected if k in MARTS_BY_KEY],
        )
    full = config.full_rebuild or run_flag(context, FULL_REBUILD_TAG)
    with holding_tenant_lock(context, engine, tenant_id, config.lock_wait_s):
        time_zone = _time_zone(context, tenant_registry, tenant_id)
        built = build_tenant(
            engine, tenant_id, context.run.run_id, full=full, hubs=hubs, marts=marts, time_zone=time_zone
        )
        with engine.connect() as conn:
            run = _ModelsRun(context, conn, tenant_id, warehouse_name, full)
            yield from run.report(built)
    missing = [h for h in built.hubs if h.mode == "missing_source"]
    if missing:
        context.log.warning(
            f"tenant {tenant_id}: {len(missing)} hub tables have no synced source and were left as they are: "
            + ", ".join(f"{h.table} ({h.note})" for h in missing)
        )
    if run.failures:
        raise dg.Failure(
            f"{len(run.failures)} hub or mart checks or builds failed for tenant {tenant_id}: "
            + "; ".join(run.failures[:5])
        )
    reprocessed = sum(h.source_rows_changed for h in built.hubs)
    total = sum(h.source_rows_total for h in built.hubs)
    context.log.info(
        f"tenant {tenant_id}: {len(built.changed_tables)} hub tables changed, {len(built.marts)} marts rebuilt, "
        f"{reprocessed} of {total} raw rows reprocessed in {built.duration_s:.2f} s"
    )
    if not whole_tenant:
        return
    yield dg.MaterializeResult(
        asset_key=TENANT_MODELS_KEY,
        metadata={
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
        },
    )


def _check_current(
    context: dg.AssetExecutionContext, engine: sa.Engine, tenant_id: int
) -> Iterator[dg.AssetCheckResult]:
    """The selected hub and mart checks, run on the tenant's tables as they stand."""
    existing = set(sa.inspect(engine).get_table_names())
    by_asset: dict[dg.AssetKey, set[str]] = {}
    for check in context.selected_asset_check_keys:
        by_asset.setdefault(check.asset_key, set()).add(check.name)
    with engine.connect() as conn:
        for key, names in sorted(by_asset.items(), key=lambda item: item[0].to_user_string()):
            if key in HUBS_BY_KEY:
                spec = HUBS_BY_KEY[key]
                raw = raw_table_name_for(spec)
                ready = spec.table_name in existing and raw in existing
                verdicts = check_hub(conn, spec, tenant_id, raw) if ready else []
            else:
                mart = MARTS_BY_KEY[key]
                ready = mart.table_name in existing
                verdicts = check_mart(conn, mart, tenant_id) if ready else []
            if not ready:
                context.log.info(f"{key.to_user_string()} has not been built yet: nothing to check")
            for verdict in verdicts:
                if verdict.check_name in names:
                    yield _result(key, verdict)
