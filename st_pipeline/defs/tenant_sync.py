"""The tenant sync: one subsettable multi-asset holding ``servicetitan/tenant_sync`` and every raw asset.

Every raw asset is executable: "Materialize" on ``servicetitan/raw/crm/customers`` for a tenant (or a
backfill of it over tenants) syncs exactly that dataset, with its checks, through the same client,
lock, cursors and sync log as the scheduled run.

Why the scheduled run selects only ``servicetitan/tenant_sync``: Dagster writes events for every
asset and check a run *plans*, whether or not it changes. A run planning all 134 raw assets and
their 529 checks wrote about 1,400 events even when nothing was new, which cost more than the sync
itself (55 CPU-s). So the hourly run plans one asset, the summary; it syncs every enabled dataset of
the tenant and reports, as it goes, a materialization with full metadata and the check results of
each dataset that changed (rows written or flagged deleted, records quarantined, an error, a total
that disagrees), and once the first successful sync of a dataset that is empty. Unchanged datasets
write nothing; the summary's own materialization says, every run, that the tenant was checked,
what changed, and (its ``datasets`` table) where each dataset stands. A run that selects raw assets
plans and reports exactly those, changed or not.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from st_pipeline.defs.checks import (
    BLOCKING_CHECKS,
    DEFAULT_QUARANTINE_ERROR_RATIO,
    Judgement,
    Outcome,
    check_evaluation,
    check_result,
    judge,
    latest_outcomes,
    raw_check_specs,
)
from st_pipeline.defs.partitions import tenant_id_of, tenant_partitions
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, TENANT_SYNC_OP, raw_asset_key, raw_asset_specs
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource, process_cpu_s
from st_pipeline.defs.tenant_runs import holding_tenant_lock, run_flag
from st_pipeline.redaction import redact
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.counters import SyncCounters
from st_pipeline.servicetitan.errors import MissingScopeError, NotFoundError, ServiceTitanError
from st_pipeline.settings import SettingsError
from st_pipeline.sync.extract import ExtractResult, SyncOptions, sync_tenant
from st_pipeline.sync.observer import NO_OBSERVER, SyncObserver
from st_pipeline.sync.state import UNAVAILABLE, DatasetStatus, dataset_statuses, row_counts
from st_pipeline.tenants.crypto import SecretKeyError
from st_pipeline.tenants.registry import UnknownTenantError
from st_pipeline.warehouse.schema import ensure_raw_tables
from st_pipeline.warehouse.tables import raw_table_name

FULL_REFRESH_TAG = "st_pipeline/full_refresh"
# How many failures a run's error message names before "and N more".
FIRST_ERRORS = 5
# What became of each dataset in a run, as the summary's ``datasets`` table says it.
CHANGED, UNCHANGED, FIRST_SYNC, NOT_GRANTED, NOT_AVAILABLE, FAILED = (
    "changed",
    "unchanged",
    "first sync",
    "not granted",
    "not available",
    "failed",
)

TENANT_SYNC_SPEC = dg.AssetSpec(
    key=TENANT_SYNC_KEY,
    group_name="servicetitan",
    kinds={"servicetitan"},
    partitions_def=tenant_partitions,
    description=(
        "Syncs one ServiceTitan tenant (a partition): every enabled dataset, incrementally, into its raw "
        "table, with one token, one connection pool and one rate limiter. Each dataset that changed is "
        "reported as a materialization of its raw asset, with its checks; this asset's own materialization "
        "says when the tenant was checked and what changed, also when nothing did, and its `datasets` table "
        "where each dataset stands."
    ),
)


class TenantSyncConfig(dg.Config):
    """Run config of a tenant sync (all optional: an incremental sync of what the run selected)."""

    full_refresh: bool = Field(
        default=False,
        description="Read every selected dataset from the beginning (also: tag st_pipeline/full_refresh=true).",
    )
    reconcile_deletes: bool = Field(
        default=False, description="Lists without export feed: read fully and flag rows gone upstream (deleted_at)."
    )
    datasets: list[str] = Field(
        default_factory=list,
        description="When the run selects servicetitan/tenant_sync: only these datasets or modules (e.g. "
        "crm/customers, payroll); empty: all. Raw assets a run selects are synced as well.",
    )
    quarantine_error_ratio: float = Field(
        default=DEFAULT_QUARANTINE_ERROR_RATIO,
        ge=0,
        le=1,
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
        **result.metadata(),  # the counters (SyncCounters): records, rows_written, pages, requests, …
        "non_finite_numbers_nulled": len(result.warnings),
        "duration_s": round(result.duration_s, 3),
        "dagster/table_name": raw_table_name(result.dataset),
        "endpoint": result.endpoint_path,
        "warehouse": warehouse,
        "sync": "incremental" if result.cursor_before else "from the beginning",
    }
    if row_count is not None:
        metadata["dagster/row_count"] = row_count
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


@dataclass
class _SyncRun:
    """One run's view of the tenant sync: what it selected, and what it has seen so far."""

    context: dg.AssetExecutionContext
    config: TenantSyncConfig
    engine: sa.Engine
    warehouse_name: str
    full_refresh: bool
    before: dict[str, DatasetStatus]
    outcomes: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    unavailable: list[ExtractResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reported: int = 0

    @property
    def partition(self) -> str:
        return self.context.partition_key

    def planned(self, dataset: Dataset) -> bool:
        """Whether the run selected this raw asset (then it is reported whatever happened)."""
        return raw_asset_key(dataset) in self.context.selected_asset_keys

    def handle(self, result: ExtractResult) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Report one dataset's sync: results for a planned raw asset, events for a changed other one."""
        key = result.dataset.key
        if isinstance(result.error, MissingScopeError):
            self.skipped.append(key)
            self.outcomes[key] = NOT_GRANTED
            return
        if isinstance(result.error, NotFoundError):
            self.unavailable.append(result)
            self.outcomes[key] = NOT_AVAILABLE
            previous = self.before.get(key)
            if previous is None or previous.last_status != UNAVAILABLE:  # said once, not every hour
                self._observe_unavailable(result)
            return
        previous = self.before.get(key)
        first = result.error is None and (previous is None or previous.last_success_at is None)
        self.outcomes[key] = (
            FAILED if result.error else (CHANGED if result.changed else (FIRST_SYNC if first else UNCHANGED))
        )
        if self.planned(result.dataset):
            yield from self._results(result)
        elif result.changed or self.full_refresh or first:
            # A full refresh reports what it verified; an empty dataset is reported once, so that its
            # partition is not "missing" for ever.
            self._events(result)

    def _materialization_metadata(self, result: ExtractResult) -> dict[str, Any]:
        row_count = row_counts(self.engine, int(self.partition), [result.dataset.key]).get(result.dataset.key)
        return _raw_metadata(result, row_count, self.warehouse_name)

    def _verdicts(self, result: ExtractResult) -> list[Judgement]:
        if result.error is not None:
            self.context.log.error(redact(str(result.error)))
            self.failures.append(redact(f"{result.dataset.key}: {result.error.detail}"))
        return judge(result.dataset, Outcome.of(result), self.config.quarantine_error_ratio)

    def _fails_run(self, result: ExtractResult, verdict: Judgement, blocked_by_dagster: bool) -> None:
        if verdict.passed or verdict.severity != dg.AssetCheckSeverity.ERROR or result.error is not None:
            return  # an error is a failure already
        if not blocked_by_dagster:
            self.failures.append(f"{result.dataset.key}: check {verdict.check_name} failed ({verdict.description})")

    def _results(self, result: ExtractResult) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """A raw asset the run planned: its materialization (if it loaded) and its planned checks."""
        key = raw_asset_key(result.dataset)
        if result.error is None:
            self.reported += 1
            yield dg.MaterializeResult(asset_key=key, metadata=self._materialization_metadata(result))
        for verdict in self._verdicts(result):
            if dg.AssetCheckKey(key, verdict.check_name) in self.context.selected_asset_check_keys:
                yield check_result(result.dataset, verdict)
                # A failed blocking check fails the step through Dagster, which holds back what is
                # built from the asset.
                self._fails_run(result, verdict, blocked_by_dagster=verdict.check_name in BLOCKING_CHECKS)

    def _events(self, result: ExtractResult) -> None:
        """A dataset the run did not plan, that changed: its materialization and check results as events."""
        if result.error is None:
            self.reported += 1
            self.context.log_event(
                dg.AssetMaterialization(
                    asset_key=raw_asset_key(result.dataset),
                    partition=self.partition,
                    metadata=self._materialization_metadata(result),
                )
            )
        for verdict in self._verdicts(result):
            self.context.log_event(check_evaluation(result.dataset, verdict, self.partition))
            self._fails_run(result, verdict, blocked_by_dagster=False)

    def _observe_unavailable(self, result: ExtractResult) -> None:
        """A dataset the tenant does not have (404): an observation on its raw asset, once."""
        endpoint = result.dataset.extraction_endpoint
        self.context.log_event(
            dg.AssetObservation(
                asset_key=raw_asset_key(result.dataset),
                partition=self.partition,
                description=f"not available for this tenant: it does not have the {endpoint.module} module",
                metadata={
                    "available": False,
                    "module": endpoint.module,
                    "endpoint": endpoint.path,
                    "reason": redact(result.error.detail if result.error else ""),
                },
            )
        )


def datasets_table(outcomes: dict[str, str], statuses: dict[str, DatasetStatus]) -> dg.TableMetadataValue:
    """Each dataset the run checked: what became of it, its rows, when it last changed."""
    records = []
    for key, outcome in sorted(outcomes.items()):
        status = statuses.get(key)
        changed = status.last_changed_at if status is not None else None
        records.append(
            dg.TableRecord(
                {
                    "dataset": key,
                    "this_run": outcome,
                    "rows": status.row_count if status is not None else 0,
                    "last_changed": changed.strftime("%Y-%m-%d %H:%M UTC") if changed else "never",
                }
            )
        )
    return dg.MetadataValue.table(
        records,
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("dataset", "string", description="The ServiceTitan dataset (its raw asset's table)."),
                dg.TableColumn(
                    "this_run",
                    "string",
                    description="changed, unchanged (checked, nothing new), first sync, "
                    "not granted, not available or failed.",
                ),
                dg.TableColumn("rows", "int", description="The tenant's rows in the raw table."),
                dg.TableColumn("last_changed", "string", description="When a sync last changed the dataset's rows."),
            ]
        ),
    )


def _requested(
    context: dg.AssetExecutionContext, config: TenantSyncConfig, by_key: dict[dg.AssetKey, Dataset]
) -> list[Dataset]:
    """The datasets a run syncs: the raw assets it selected, and (with the summary) the configured ones."""
    chosen = {by_key[key].key for key in context.selected_asset_keys if key in by_key}
    if TENANT_SYNC_KEY in context.selected_asset_keys:
        chosen |= {d.key for d in select_datasets(config.datasets)}
    return [d for d in by_key.values() if d.key in chosen]


def build_tenant_sync(datasets: Sequence[Dataset], observer: SyncObserver = NO_OBSERVER) -> dg.AssetsDefinition:
    """The multi-asset of the tenant sync and the raw assets of ``datasets``, with their checks.

    ``observer`` is told each point every sync reaches (``st_pipeline.sync.observer``).
    """
    by_key = {raw_asset_key(dataset): dataset for dataset in datasets}

    @dg.multi_asset(
        name=TENANT_SYNC_OP,
        specs=[TENANT_SYNC_SPEC, *raw_asset_specs(datasets)],
        check_specs=raw_check_specs(datasets),
        can_subset=True,
        partitions_def=tenant_partitions,
        description="Syncs a tenant's ServiceTitan datasets into their raw tables: the selected raw assets, or "
        "with servicetitan/tenant_sync every enabled one.",
    )
    def tenant_sync(
        context: dg.AssetExecutionContext,
        config: TenantSyncConfig,
        servicetitan: ServiceTitanResource,
        tenant_registry: TenantRegistryResource,
        warehouse: WarehouseResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        if not context.selected_asset_keys:  # checks alone: judge the tenant's latest syncs again
            yield from _judge_latest(context, config, warehouse, by_key)
            return
        yield from _sync(
            context, config, servicetitan, tenant_registry, warehouse, _requested(context, config, by_key), observer
        )

    return tenant_sync


def _judge_latest(
    context: dg.AssetExecutionContext,
    config: TenantSyncConfig,
    warehouse: WarehouseResource,
    by_key: dict[dg.AssetKey, Dataset],
) -> Iterator[dg.AssetCheckResult]:
    """The selected checks, judged on the tenant's latest sync of each dataset (from the sync log)."""
    tenant_id = tenant_id_of(context.partition_key)
    engine, _ = warehouse.current_engine()
    checked = {by_key[check.asset_key] for check in context.selected_asset_check_keys}
    latest = latest_outcomes(engine, tenant_id, [d.key for d in checked])
    for dataset in sorted(checked, key=lambda d: d.key):
        if dataset.key not in latest:
            context.log.info(f"tenant {tenant_id} has not synced {dataset.key} yet: nothing to judge")
            continue
        for verdict in judge(dataset, latest[dataset.key], config.quarantine_error_ratio):
            if dg.AssetCheckKey(raw_asset_key(dataset), verdict.check_name) in context.selected_asset_check_keys:
                yield check_result(dataset, verdict)


def _sync(
    context: dg.AssetExecutionContext,
    config: TenantSyncConfig,
    servicetitan: ServiceTitanResource,
    tenant_registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    requested: list[Dataset],
    observer: SyncObserver,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    began = time.perf_counter()
    tenant_id = tenant_id_of(context.partition_key)
    whole_tenant = TENANT_SYNC_KEY in context.selected_asset_keys
    engine, warehouse_name = warehouse.current_engine()
    try:
        credentials = tenant_registry.registry().credentials(tenant_id)
        client = servicetitan.client(credentials, tenant_registry.settings)  # URL rules checked here
    except (UnknownTenantError, SecretKeyError, SettingsError, ServiceTitanError) as exc:
        raise dg.Failure(
            redact(str(exc)), metadata={"error_type": type(exc).__name__, "tenant_id": tenant_id}
        ) from None
    decisions = tenant_registry.endpoint_selection().decide(requested, tenant_id)
    selected = [d for d in requested if decisions[d.key].enabled]
    disabled = [d.key for d in requested if not decisions[d.key].enabled]
    if disabled and not whole_tenant:
        context.log.warning(
            f"tenant {tenant_id}: not synced, turned off: "
            + "; ".join(f"{key} ({decisions[key].why})" for key in disabled)
        )
        if not selected:
            raise dg.Failure(
                f"every dataset this run selected is turned off for tenant {tenant_id}: {', '.join(disabled)}; "
                f"`st-pipeline endpoints --tenant {tenant_id}` shows why, "
                "`st-pipeline endpoints enable TARGET` turns one on"
            )
    full_refresh = config.full_refresh or run_flag(context, FULL_REFRESH_TAG)
    options = SyncOptions(full_refresh=full_refresh, reconcile_deletes=config.reconcile_deletes)
    received = SyncCounters()  # what the datasets received and wrote
    with client:
        ensure_raw_tables(engine, selected)
        run = _SyncRun(context, config, engine, warehouse_name, full_refresh, dataset_statuses(engine, tenant_id))
        try:
            with holding_tenant_lock(context, engine, tenant_id, config.lock_wait_s):
                for result in sync_tenant(
                    client,
                    engine,
                    selected,
                    run_id=context.run.run_id,
                    concurrency=servicetitan.concurrency,
                    options=options,
                    observer=observer,
                ):
                    received += result
                    yield from run.handle(result)
        except ServiceTitanError as exc:
            raise dg.Failure(
                redact(str(exc)), metadata={"error_type": type(exc).__name__, "tenant_id": tenant_id}
            ) from None
        finally:
            stats = client.stats
            token_requests = client.tokens.token_requests
    duration = time.perf_counter() - began
    unavailable, skipped = run.unavailable, run.skipped
    if unavailable and len(unavailable) == len(selected):
        raise dg.Failure(
            f"every one of the {len(selected)} datasets answered 404 for tenant {tenant_id}: the tenant id is "
            f"probably wrong — check it with `st-pipeline tenant test --tenant {tenant_id}`",
            metadata={"error_type": "NotFoundError", "tenant_id": tenant_id},
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
    changed = [key for key, outcome in run.outcomes.items() if outcome in (CHANGED, FAILED)]
    context.log.info(
        f"tenant {tenant_id}: {len(selected)} datasets checked in {duration:.1f} s, {len(changed)} changed, "
        f"{received.records} records received, {received.rows_written} rows written, {stats.requests} requests"
    )
    if run.failures:
        shown = "; ".join(run.failures[:FIRST_ERRORS])
        more = f" (and {len(run.failures) - FIRST_ERRORS} more)" if len(run.failures) > FIRST_ERRORS else ""
        raise dg.Failure(
            f"{len(run.failures)} of {len(selected)} datasets failed for tenant {tenant_id}: {shown}{more}",
            metadata={"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in run.failures))},
        )
    if not whole_tenant:
        return
    yield dg.MaterializeResult(
        asset_key=TENANT_SYNC_KEY,
        metadata={
            "datasets_checked": len(selected),
            "datasets_changed": len(changed),
            "datasets_unchanged": len(selected) - len(changed) - len(skipped) - len(unavailable),
            "datasets_not_granted": len(skipped),
            "datasets_not_available": len(unavailable),
            "datasets_disabled": len(disabled),
            "datasets_reported": run.reported,
            "records_received": received.records,
            "rows_written": received.rows_written,
            "requests": stats.requests,
            "retries": stats.retries,
            "throttled_429s": stats.throttled,
            "token_requests": token_requests,
            "duration_s": round(duration, 3),
            "process_cpu_s": round(process_cpu_s(), 2),
            "sync": "full refresh"
            if full_refresh
            else ("reconciliation" if config.reconcile_deletes else "incremental"),
            "changed": _listing(changed),
            "not_granted": _listing(skipped),
            "not_available": _listing([r.dataset.key for r in unavailable]),
            "datasets": datasets_table(run.outcomes, dataset_statuses(engine, tenant_id)),
            "warehouse": warehouse_name,
        },
    )


tenant_sync = build_tenant_sync(load_catalogue().extracted_datasets())
