"""Asset checks on the raw assets: what each sync of a dataset observed, judged.

Per dataset:

- ``schema_conformance``: records quarantined by validation. None: pass. Some, but at most
  ``quarantine_error_ratio`` of the records: WARN. More: ERROR, and the tenant's sync run fails.
- ``no_duplicate_ids``: records that arrived more than once in one sync — harmless for the data
  (upserts), a sign of a feed re-sending: WARN.
- ``count_matches_total`` (paged lists): records received versus the ``totalCount`` the list
  reported on its first page: WARN when they differ; ERROR when the list went on past its total
  (or the page ceiling) and was stopped as a loop.
- ``cursor_advances`` (export feeds): ERROR when the feed said it had more data but handed back a
  continuation token it had given before (or ran past the page ceiling).

The tenant sync reports these results, for its tenant's partition, only for the datasets where
it saw something to judge (rows written, records quarantined, an error, a total that disagrees): a
sync that finds nothing new judges nothing. Executing the checks (from the UI) judges again the
latest sync of every enabled tenant, from the sync log.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa

from st_pipeline.defs.raw_assets import raw_asset_key
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.sync.extract import ExtractResult
from st_pipeline.sync.state import NOT_LOADABLE
from st_pipeline.warehouse.tables import dataset_status_table, sync_log_table

SCHEMA_CHECK = "schema_conformance"
DUPLICATES_CHECK = "no_duplicate_ids"
TOTAL_CHECK = "count_matches_total"
CURSOR_CHECK = "cursor_advances"
DEFAULT_QUARANTINE_ERROR_RATIO = 0.01
# The errors (by class name, as the sync log keeps them) of paging that would not have ended.
PAGING_ERRORS = ("StuckCursorError", "PagingLoopError")

CHECK_DESCRIPTIONS = {
    SCHEMA_CHECK: "Every record received matched the dataset's record model from the OpenAPI spec; bad records "
    "go to raw_quarantine (WARN), above the quarantine ratio the sync fails (ERROR).",
    DUPLICATES_CHECK: "No record arrived twice in one sync; WARN when one did (harmless for the table, a sign of a "
    "feed re-sending).",
    TOTAL_CHECK: "The records received equal the totalCount the paged list reported (ERROR when the list ran "
    "past its total and was stopped as an endless loop).",
    CURSOR_CHECK: "The export feed's continuation token moved to a new value whenever it said more data was "
    "waiting (ERROR when it repeated and the feed was stopped as an endless loop).",
}


def check_names(dataset: Dataset) -> list[str]:
    names = [SCHEMA_CHECK, DUPLICATES_CHECK]
    kind = dataset.extraction_endpoint.kind
    if kind == "list":
        names.append(TOTAL_CHECK)
    if kind == "export":
        names.append(CURSOR_CHECK)
    return names


def raw_check_specs(datasets: Sequence[Dataset]) -> list[dg.AssetCheckSpec]:
    """The checks of each raw asset."""
    return [
        dg.AssetCheckSpec(name=name, asset=raw_asset_key(dataset), description=CHECK_DESCRIPTIONS[name])
        for dataset in datasets
        for name in check_names(dataset)
    ]


@dataclass(frozen=True)
class Outcome:
    """What one sync of a dataset observed: from a finished ``ExtractResult`` or a sync-log row."""

    records: int
    quarantined: int = 0
    duplicates: int = 0
    reported_total: int | None = None
    status: str = ""
    error: str | None = None
    error_kind: str | None = None
    cursor: str | None = None

    @classmethod
    def of(cls, result: ExtractResult) -> "Outcome":
        return cls(
            records=result.records, quarantined=result.quarantined, duplicates=result.duplicates,
            reported_total=result.reported_total, status=result.status,
            error=str(result.error) if result.error else None,
            error_kind=type(result.error).__name__ if result.error else None, cursor=result.cursor,
        )

    @classmethod
    def from_log(cls, row: Any) -> "Outcome":
        return cls(
            records=row.records, quarantined=row.quarantined, duplicates=row.duplicates,
            reported_total=row.reported_total, status=row.status, error=row.error, error_kind=row.error_kind,
            cursor=row.cursor_after,
        )


@dataclass(frozen=True)
class Judgement:
    """One check's verdict on one outcome."""

    check_name: str
    passed: bool
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.WARN
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def judge(dataset: Dataset, outcome: Outcome, quarantine_error_ratio: float) -> list[Judgement]:
    """The verdicts an outcome supports: none for a sync that failed before observing anything."""
    names = check_names(dataset)
    if outcome.error_kind in PAGING_ERRORS:  # a feed or list that would have been read forever
        name = CURSOR_CHECK if CURSOR_CHECK in names else TOTAL_CHECK
        if name in names:
            return [Judgement(name, False, dg.AssetCheckSeverity.ERROR, outcome.error,
                              {"cursor": outcome.cursor or "", "records": outcome.records})]
    if outcome.error is not None or outcome.status in NOT_LOADABLE:
        return []  # nothing was observed that the checks could judge; the run failure says why
    ratio = outcome.quarantined / outcome.records if outcome.records else 0.0
    verdicts = [
        Judgement(
            SCHEMA_CHECK,
            outcome.quarantined == 0,
            dg.AssetCheckSeverity.ERROR if ratio > quarantine_error_ratio else dg.AssetCheckSeverity.WARN,
            "every record matched its model" if not outcome.quarantined
            else f"{outcome.quarantined} of {outcome.records} records quarantined (see raw_quarantine)",
            {"quarantined": outcome.quarantined, "records": outcome.records, "ratio": round(ratio, 6),
             "error_above_ratio": quarantine_error_ratio},
        ),
        Judgement(DUPLICATES_CHECK, outcome.duplicates == 0, metadata={"duplicates": outcome.duplicates,
                                                                         "records": outcome.records}),
    ]
    if TOTAL_CHECK in names:
        matches = outcome.reported_total is None or outcome.reported_total == outcome.records
        verdicts.append(Judgement(
            TOTAL_CHECK, matches,
            description=None if matches else f"received {outcome.records} records, the list reported {outcome.reported_total}",
            metadata={"received": outcome.records,
                      "reported_total": outcome.reported_total if outcome.reported_total is not None else -1},
        ))
    if CURSOR_CHECK in names:
        verdicts.append(Judgement(CURSOR_CHECK, True, metadata={"cursor": outcome.cursor or ""}))
    return verdicts


def check_evaluation(dataset: Dataset, verdict: Judgement, partition: str) -> dg.AssetCheckEvaluation:
    """A verdict as the event a tenant sync reports for its partition."""
    return dg.AssetCheckEvaluation(
        asset_key=raw_asset_key(dataset), check_name=verdict.check_name, passed=verdict.passed,
        severity=verdict.severity, description=verdict.description, metadata=verdict.metadata, partition=partition,
    )


def selected_checks(context: dg.AssetCheckExecutionContext) -> dict[dg.AssetKey, set[str]]:
    """The checks a run of a multi-asset check was asked for, by asset."""
    selected: dict[dg.AssetKey, set[str]] = {}
    for check_key in context.selected_asset_check_keys:
        selected.setdefault(check_key.asset_key, set()).add(check_key.name)
    return selected


def build_raw_checks(datasets: Sequence[Dataset]) -> dg.AssetChecksDefinition:
    """The raw checks, executable on demand: the latest sync of every enabled tenant, judged again."""
    by_key = {raw_asset_key(dataset): dataset for dataset in datasets}

    @dg.multi_asset_check(
        name="servicetitan_raw_checks",
        specs=raw_check_specs(datasets),
        can_subset=True,
        description="Judges again the latest sync of each dataset for every enabled tenant (the tenant sync "
        "reports the same checks per tenant as it goes).",
    )
    def servicetitan_raw_checks(
        context: dg.AssetCheckExecutionContext, tenant_registry: TenantRegistryResource, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        selected = selected_checks(context)
        tenants = [t.tenant_id for t in tenant_registry.registry().list(enabled_only=True)]
        latest = _latest_outcomes(warehouse.engine(), tenants, [by_key[key].key for key in selected])
        for asset_key, names in selected.items():
            dataset = by_key[asset_key]
            failing: dict[str, list[int]] = {name: [] for name in names}
            worst: dict[str, dg.AssetCheckSeverity] = {name: dg.AssetCheckSeverity.WARN for name in names}
            judged = 0
            for tenant_id, outcome in latest.get(dataset.key, {}).items():
                judged += 1
                for verdict in judge(dataset, outcome, DEFAULT_QUARANTINE_ERROR_RATIO):
                    if verdict.check_name in names and not verdict.passed:
                        failing[verdict.check_name].append(tenant_id)
                        if verdict.severity == dg.AssetCheckSeverity.ERROR:
                            worst[verdict.check_name] = dg.AssetCheckSeverity.ERROR
            for name in sorted(names):
                tenants_failing = sorted(failing[name])
                yield dg.AssetCheckResult(
                    asset_key=asset_key, check_name=name, passed=not tenants_failing, severity=worst[name],
                    description=(f"latest syncs of {judged} tenants judged" if not tenants_failing
                                 else f"fails for tenants {', '.join(map(str, tenants_failing[:20]))}"),
                    metadata={"tenants_judged": judged, "failing_tenants": len(tenants_failing)},
                )

    return servicetitan_raw_checks


def _latest_outcomes(engine: sa.Engine, tenants: list[int], dataset_keys: list[str]) -> dict[str, dict[int, Outcome]]:
    """The latest sync-log row of each (tenant, dataset), through the status table's last run."""
    if not tenants or not dataset_keys:
        return {}
    log, status = sync_log_table.c, dataset_status_table.c
    query = sa.select(sync_log_table).join(
        dataset_status_table,
        sa.and_(status.tenant_id == log.tenant_id, status.dataset == log.dataset, status.last_run_id == log.run_id),
    ).where(log.tenant_id.in_(tenants), log.dataset.in_(dataset_keys))
    outcomes: dict[str, dict[int, Outcome]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            outcomes.setdefault(row.dataset, {})[row.tenant_id] = Outcome.from_log(row)
    return outcomes
