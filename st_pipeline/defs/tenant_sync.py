"""The tenant sync: one asset per tenant partition that extracts every enabled dataset of the tenant.

Why one asset that reports the raw assets, rather than a multi-asset with one output per dataset:
Dagster writes events for every asset and check a run *plans*, whether or not it changes. With 134
raw assets and 529 checks, a run that found nothing new still wrote about 1,400 events (planned
materializations and checks, outputs, check results), which cost more than the sync itself. So a
run plans one asset, ``servicetitan/tenant_sync``; the raw assets are declared beside it, and it
reports, as it goes, a materialization with full metadata and the check results of each dataset
that changed (rows written or flagged deleted, records quarantined, an error, a total that
disagrees). Unchanged datasets write nothing. The tenant sync's own materialization is the record
that the tenant was checked, when, and what changed (numeric metadata the UI plots).
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

import time
from typing import Any

import dagster as dg
from pydantic import Field

from st_pipeline.defs.checks import DEFAULT_QUARANTINE_ERROR_RATIO, Outcome, check_evaluation, judge
from st_pipeline.defs.partitions import tenant_id_of, tenant_partitions
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, raw_asset_key
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource, process_cpu_s
from st_pipeline.redaction import redact
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.errors import MissingScopeError, NotFoundError, ServiceTitanError
from st_pipeline.settings import SettingsError
from st_pipeline.sync.extract import ExtractResult, SyncOptions, sync_tenant
from st_pipeline.sync.state import UNAVAILABLE, latest_statuses, row_counts
from st_pipeline.tenants.crypto import SecretKeyError
from st_pipeline.tenants.registry import UnknownTenantError
from st_pipeline.warehouse.locks import TenantBusyError, tenant_lock
from st_pipeline.warehouse.schema import ensure_raw_tables
from st_pipeline.warehouse.tables import raw_table_name

FULL_REFRESH_TAG = "st_pipeline/full_refresh"
# How many failures a run's error message names before "and N more".
FIRST_ERRORS = 5


class TenantSyncConfig(dg.Config):
    """Run config of a tenant sync (all optional: an incremental sync of every enabled dataset)."""

    full_refresh: bool = Field(
        default=False, description="Read every selected dataset from the beginning (also: tag st_pipeline/full_refresh=true)."
    )
    reconcile_deletes: bool = Field(
        default=False, description="Lists without export feed: read fully and flag rows gone upstream (deleted_at)."
    )
    datasets: list[str] = Field(
        default_factory=list, description="Only these datasets or modules (e.g. crm/customers, payroll); empty: all."
    )
    quarantine_error_ratio: float = Field(
        default=DEFAULT_QUARANTINE_ERROR_RATIO, ge=0, le=1,
        description="schema_conformance is an ERROR (and the run fails) above this share of quarantined records.",
    )
    lock_wait_s: float = Field(
        default=10.0, ge=0, le=3600, description="How long to wait for another run of the same tenant to end."
    )


def select_datasets(requested: list[str]) -> list[Dataset]:
    """The extracted datasets named (by key or module) in ``requested``; all of them if it is empty."""
    extracted = load_catalogue().extracted_datasets()
    if not requested:
        return extracted
    wanted = set(requested)
    unknown = wanted - {d.key for d in extracted} - {d.module for d in extracted}
    if unknown:
        raise dg.Failure(
            f"not extracted datasets or modules: {', '.join(sorted(unknown))}; `st-pipeline endpoints` lists them"
        )
    return [d for d in extracted if d.key in wanted or d.module in wanted]


def _raw_metadata(result: ExtractResult, row_count: int | None, warehouse: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "records": result.records,
        "rows_written": result.rows_written,
        "pages": result.pages,
        "requests": result.requests,
        "quarantined": result.quarantined,
        "non_finite_numbers_nulled": len(result.warnings),
        "retries": result.retries,
        "throttled_429s": result.throttled,
        "duration_s": round(result.duration_s, 3),
        "dagster/table_name": raw_table_name(result.dataset),
        "endpoint": result.endpoint_path,
        "warehouse": warehouse,
        "sync": "incremental" if result.cursor_before else "from the beginning",
    }
    if row_count is not None:
        metadata["dagster/row_count"] = row_count
    if result.rows_deleted:
        metadata["rows_flagged_deleted"] = result.rows_deleted
    if result.cursor_before:
        metadata["cursor_before"] = result.cursor_before
    if result.cursor:
        metadata["cursor"] = result.cursor
    if result.warnings:
        metadata["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in result.warnings[:20]))
    return metadata


def _listing(keys: list[str], limit: int = 30) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


@dg.asset(
    key=TENANT_SYNC_KEY,
    partitions_def=tenant_partitions,
    group_name="servicetitan",
    kinds={"servicetitan"},
    description=(
        "Syncs one ServiceTitan tenant (a partition): every enabled dataset, incrementally, into its raw "
        "table, with one token, one connection pool and one rate limiter. Each dataset that changed is "
        "reported as a materialization of its raw asset, with its checks; this asset's own materialization "
        "says when the tenant was checked and what changed, also when nothing did."
    ),
)
def tenant_sync(
    context: dg.AssetExecutionContext,
    config: TenantSyncConfig,
    servicetitan: ServiceTitanResource,
    tenant_registry: TenantRegistryResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    began = time.perf_counter()
    partition = context.partition_key
    tenant_id = tenant_id_of(partition)
    engine, warehouse_name = warehouse.current_engine()
    try:
        credentials = tenant_registry.registry().credentials(tenant_id)
        client = servicetitan.client(credentials, tenant_registry.settings)  # URL rules checked here
    except (UnknownTenantError, SecretKeyError, SettingsError, ServiceTitanError) as exc:
        raise dg.Failure(
            redact(str(exc)), metadata={"error_type": type(exc).__name__, "tenant_id": tenant_id}, allow_retries=False
        ) from None
    requested = select_datasets(config.datasets)
    decisions = tenant_registry.endpoint_selection().decide(requested, tenant_id)
    selected = [d for d in requested if decisions[d.key].enabled]
    disabled = [d.key for d in requested if not decisions[d.key].enabled]
    full_refresh = config.full_refresh or context.run.tags.get(FULL_REFRESH_TAG, "").lower() == "true"
    options = SyncOptions(full_refresh=full_refresh, reconcile_deletes=config.reconcile_deletes)

    changed: list[str] = []
    skipped: list[str] = []
    unavailable: list[ExtractResult] = []
    failures: list[str] = []
    records = rows_written = 0
    with client:
        ensure_raw_tables(engine, selected)
        previous = latest_statuses(engine, tenant_id)
        try:
            with tenant_lock(engine, tenant_id, context.run_id, wait_s=config.lock_wait_s):
                for result in sync_tenant(
                    client, engine, selected, run_id=context.run_id, concurrency=servicetitan.concurrency,
                    options=options,
                ):
                    records += result.records
                    rows_written += result.rows_written
                    if isinstance(result.error, MissingScopeError):
                        skipped.append(result.dataset.key)
                        continue
                    if isinstance(result.error, NotFoundError):
                        unavailable.append(result)
                        if previous.get(result.dataset.key) != UNAVAILABLE:  # said once, not every hour
                            _observe_unavailable(context, result, partition)
                        continue
                    if not (result.changed or full_refresh):  # a full refresh reports what it verified
                        continue
                    changed.append(result.dataset.key)
                    _report(context, result, partition, warehouse_name, engine, config, failures)
        except TenantBusyError as exc:
            raise dg.Failure(str(exc), metadata={"error_type": "TenantBusyError", "tenant_id": tenant_id}) from None
        except ServiceTitanError as exc:
            raise dg.Failure(
                redact(str(exc)), metadata={"error_type": type(exc).__name__, "tenant_id": tenant_id},
                allow_retries=not exc.fatal_for_tenant,
            ) from None
        finally:
            stats = client.stats
            token_requests = client.tokens.token_requests
    duration = time.perf_counter() - began
    if unavailable and len(unavailable) == len(selected):
        raise dg.Failure(
            f"every one of the {len(selected)} datasets answered 404 for tenant {tenant_id}: the tenant id is "
            f"probably wrong — check it with `st-pipeline tenant test --tenant {tenant_id}`",
            metadata={"error_type": "NotFoundError", "tenant_id": tenant_id},
            allow_retries=False,
        )
    if unavailable:
        modules = sorted({r.dataset.extraction_endpoint.module for r in unavailable})
        context.log.warning(
            f"tenant {tenant_id}: {len(unavailable)} datasets skipped, the tenant does not have the modules "
            f"{', '.join(modules)} (404): {_listing([r.dataset.key for r in unavailable])}"
        )
    if skipped:
        context.log.warning(
            f"tenant {tenant_id}: {len(skipped)} datasets skipped, their scope is not granted: {_listing(skipped)} "
            "(`st-pipeline tenant test` lists the scopes)"
        )
    context.log.info(
        f"tenant {tenant_id}: {len(selected)} datasets checked in {duration:.1f} s, {len(changed)} changed, "
        f"{records} records received, {rows_written} rows written, {stats.requests} requests"
    )
    if failures:
        shown = "; ".join(failures[:FIRST_ERRORS])
        more = f" (and {len(failures) - FIRST_ERRORS} more)" if len(failures) > FIRST_ERRORS else ""
        raise dg.Failure(
            f"{len(failures)} of {len(selected)} datasets failed for tenant {tenant_id}: {shown}{more}",
            metadata={"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))},
        )
    return dg.MaterializeResult(
        metadata={
            "datasets_checked": len(selected),
            "datasets_changed": len(changed),
            "datasets_unchanged": len(selected) - len(changed) - len(skipped) - len(unavailable),
            "datasets_not_granted": len(skipped),
            "datasets_not_available": len(unavailable),
            "datasets_disabled": len(disabled),
            "records_received": records,
            "rows_written": rows_written,
            "requests": stats.requests,
            "retries": stats.retries,
            "throttled_429s": stats.throttled,
            "token_requests": token_requests,
            "duration_s": round(duration, 3),
            "process_cpu_s": round(process_cpu_s(), 2),
            "sync": "full refresh" if full_refresh else ("reconciliation" if config.reconcile_deletes else "incremental"),
            "changed": _listing(changed),
            "not_granted": _listing(skipped),
            "not_available": _listing([r.dataset.key for r in unavailable]),
            "warehouse": warehouse_name,
        }
    )


def _observe_unavailable(context: dg.AssetExecutionContext, result: ExtractResult, partition: str) -> None:
    """A dataset the tenant does not have (404): an observation on its raw asset, once."""
    endpoint = result.dataset.extraction_endpoint
    context.log_event(dg.AssetObservation(
        asset_key=raw_asset_key(result.dataset), partition=partition,
        description=f"not available for this tenant: it does not have the {endpoint.module} module",
        metadata={"available": False, "module": endpoint.module, "endpoint": endpoint.path,
                  "reason": redact(result.error.detail if result.error else "")},
    ))


def _report(
    context: dg.AssetExecutionContext, result: ExtractResult, partition: str, warehouse_name: str, engine: Any,
    config: TenantSyncConfig, failures: list[str],
) -> None:
    """A changed dataset: its raw asset's materialization (if it loaded) and its check results."""
    dataset = result.dataset
    if result.error is None:
        row_count = row_counts(engine, int(partition), [dataset.key]).get(dataset.key)
        context.log_event(dg.AssetMaterialization(
            asset_key=raw_asset_key(dataset), partition=partition,
            metadata=_raw_metadata(result, row_count, warehouse_name),
        ))
    else:
        context.log.error(redact(str(result.error)))
        failures.append(redact(f"{dataset.key}: {result.error.detail}"))
    for verdict in judge(dataset, Outcome.of(result), config.quarantine_error_ratio):
        context.log_event(check_evaluation(dataset, verdict, partition))
        if not verdict.passed and verdict.severity == dg.AssetCheckSeverity.ERROR and result.error is None:
            failures.append(f"{dataset.key}: check {verdict.check_name} failed ({verdict.description})")
