"""Raw assets: one asset per ServiceTitan dataset, partitioned by tenant.

All raw assets of a tenant are produced by one subsettable ``multi_asset`` so that a run shares
one token, one connection pool (and, later, one rate limiter) across every endpoint.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Iterator, Sequence

import dagster as dg

from st_pipeline.defs.checks import DEFAULT_QUARANTINE_ERROR_RATIO, evaluate, raw_check_specs
from st_pipeline.defs.partitions import tenant_id_of, tenant_partitions
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.redaction import redact
from st_pipeline.servicetitan.errors import MissingScopeError, ServiceTitanError
from st_pipeline.settings import SettingsError
from st_pipeline.sync.extract import ExtractResult, SyncOptions, sync_tenant
from st_pipeline.tenants.crypto import SecretKeyError
from st_pipeline.tenants.registry import UnknownTenantError
from st_pipeline.warehouse.engine import describe_url
from st_pipeline.warehouse.schema import SchemaOutOfDateError, check_schema, ensure_raw_tables
from st_pipeline.warehouse.tables import raw_table_name


FULL_REFRESH_TAG = "st_pipeline/full_refresh"


class RawSyncConfig(dg.Config):
    """Run config of the raw sync (all optional: an incremental sync by default)."""

    full_refresh: bool = False  # read every selected dataset from the beginning (also: tag st_pipeline/full_refresh=true)
    reconcile_deletes: bool = False  # lists without export feed: read fully and flag rows gone upstream (deleted_at)
    quarantine_error_ratio: float = DEFAULT_QUARANTINE_ERROR_RATIO  # schema check: ERROR above, WARN below


def raw_asset_key(dataset: Dataset) -> dg.AssetKey:
    return dg.AssetKey(["servicetitan", "raw", dataset.module.replace("-", "_"), dataset.resource_slug])


def _group_name(dataset: Dataset) -> str:
    return "servicetitan_" + dataset.module.replace("-", "_")


def _spec(dataset: Dataset) -> dg.AssetSpec:
    endpoint = dataset.extraction_endpoint
    return dg.AssetSpec(
        key=raw_asset_key(dataset),
        group_name=_group_name(dataset),
        description=f"Raw {dataset.key} records of one tenant, from the {endpoint.kind} endpoint {endpoint.path}.",
        kinds={"servicetitan"},
        skippable=True,  # a dataset disabled for the tenant, or denied by a 403, is not materialized
        metadata={
            "endpoint": endpoint.path,
            "endpoint_kind": endpoint.kind,
            "table": raw_table_name(dataset),
            "scopes": ", ".join(endpoint.scopes),
        },
    )


def _metadata(result: ExtractResult, warehouse: str) -> dict[str, dg.MetadataValue | str | int | float]:
    metadata: dict[str, dg.MetadataValue | str | int | float] = {
        "records": result.records,
        "pages": result.pages,
        "requests": result.requests,
        "quarantined": result.quarantined,
        "non_finite_numbers_nulled": len(result.warnings),
        "retries": result.retries,
        "throttled_429s": result.throttled,
        "duration_s": round(result.duration_s, 3),
        "rows_in_table": result.rows_in_table,
        "table": raw_table_name(result.dataset),
        "endpoint": result.endpoint_path,
        "warehouse": warehouse,
    }
    metadata["sync"] = "incremental" if result.cursor_before else "from the beginning"
    if result.cursor_before:
        metadata["cursor_before"] = result.cursor_before
    if result.cursor:
        metadata["cursor"] = result.cursor
    if result.warnings:
        metadata["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in result.warnings[:20]))
    return metadata


def build_raw_assets(datasets: Sequence[Dataset]) -> dg.AssetsDefinition:
    """The tenant-partitioned multi-asset extracting ``datasets``."""
    by_key = {raw_asset_key(dataset): dataset for dataset in datasets}

    @dg.multi_asset(
        name="servicetitan_raw",
        specs=[_spec(dataset) for dataset in datasets],
        check_specs=raw_check_specs(datasets, raw_asset_key),
        partitions_def=tenant_partitions,
        can_subset=True,
    )
    def servicetitan_raw(
        context: dg.AssetExecutionContext,
        config: RawSyncConfig,
        servicetitan: ServiceTitanResource,
        tenant_registry: TenantRegistryResource,
        warehouse: WarehouseResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        tenant_id = tenant_id_of(context.partition_key)
        engine = warehouse.engine()
        warehouse_name = describe_url(engine)
        try:
            check_schema(engine, warehouse_name)
        except SchemaOutOfDateError as exc:
            raise dg.Failure(str(exc)) from None
        try:
            credentials = tenant_registry.registry().credentials(tenant_id)
            client = servicetitan.client(credentials, tenant_registry.settings)  # URL rules checked here
        except (UnknownTenantError, SecretKeyError, SettingsError, ServiceTitanError) as exc:
            raise dg.Failure(
                redact(str(exc)), metadata={"error_type": type(exc).__name__, "tenant_id": tenant_id},
                allow_retries=False,
            ) from None
        requested = [by_key[key] for key in context.selected_asset_keys if key in by_key]
        decisions = tenant_registry.endpoint_selection().decide(requested, tenant_id)
        selected = [dataset for dataset in requested if decisions[dataset.key].enabled]
        for dataset in requested:
            if not decisions[dataset.key].enabled:
                context.log.info(f"tenant {tenant_id} {dataset.key} skipped: {decisions[dataset.key].why}")
        full_refresh = config.full_refresh or context.run.tags.get(FULL_REFRESH_TAG, "").lower() == "true"
        options = SyncOptions(full_refresh=full_refresh, reconcile_deletes=config.reconcile_deletes)
        if full_refresh:
            context.log.info(f"tenant {tenant_id}: full refresh, saved cursors ignored")
        failures: list[str] = []
        with client:
            ensure_raw_tables(engine, selected)
            try:
                for result in sync_tenant(
                    client, engine, selected, run_id=context.run_id, concurrency=servicetitan.concurrency,
                    options=options,
                ):
                    checks = [
                        check
                        for check in evaluate(result, raw_asset_key(result.dataset), config.quarantine_error_ratio)
                        if dg.AssetCheckKey(check.asset_key, check.check_name) in context.selected_asset_check_keys
                    ]
                    if isinstance(result.error, MissingScopeError):
                        # Not granted for this tenant: a warning, not a failure; the rest still syncs.
                        context.log.warning(redact(str(result.error)))
                        context.log_event(
                            dg.AssetObservation(
                                asset_key=raw_asset_key(result.dataset),
                                partition=context.partition_key,
                                metadata={"skipped": "403 missing scope", "explanation": redact(str(result.error))},
                            )
                        )
                        continue
                    if result.error is not None:
                        # The tenant's other datasets still load; the run fails at the end.
                        context.log.error(redact(str(result.error)))
                        failures.append(redact(f"{result.dataset.key}: {result.error}"))
                        yield from checks
                        continue
                    context.log.info(
                        f"tenant {tenant_id} {result.dataset.key}: {result.records} records in "
                        f"{result.pages} pages ({result.duration_s:.2f}s)"
                    )
                    yield dg.MaterializeResult(
                        asset_key=raw_asset_key(result.dataset), metadata=_metadata(result, warehouse_name)
                    )
                    yield from checks
            except ServiceTitanError as exc:
                raise dg.Failure(
                    redact(str(exc)),
                    metadata={"error_type": type(exc).__name__, "tenant_id": tenant_id},
                    allow_retries=not exc.fatal_for_tenant,
                ) from None
            finally:
                context.log.info(
                    f"tenant {tenant_id}: {client.stats.requests} API requests, {client.stats.retries} retries, "
                    f"{client.stats.throttled} throttled, {client.tokens.token_requests} token requests"
                )
        if failures:
            raise dg.Failure(
                f"{len(failures)} of {len(selected)} datasets failed for tenant {tenant_id}",
                metadata={"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))},
            )

    return servicetitan_raw


raw_assets = build_raw_assets(load_catalogue().extracted_datasets())
