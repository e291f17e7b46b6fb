"""Asset checks on the raw assets: what each sync of a dataset observed, judged, per tenant.

Per dataset:

- ``schema_conformance``: records quarantined by validation. None: pass. Some, but at most
  ``quarantine_error_ratio`` of the records: WARN. More: ERROR, and the tenant's sync run fails.
  It is a blocking check: a run that materializes the raw asset and fails it builds nothing
  downstream of it (the hub tables and marts).
- ``no_duplicate_ids``: records that arrived more than once in one sync — harmless for the data
  (upserts), a sign of a feed re-sending: WARN.
- ``count_matches_total`` (paged lists): records received versus the ``totalCount`` the list
  reported on its first page: WARN when they differ; ERROR when the list went on past its total
  (or the page ceiling) and was stopped as a loop.
- ``cursor_advances`` (export feeds): ERROR when the feed said it had more data but handed back a
  continuation token it had given before (or ran past the page ceiling).

The checks are partitioned by tenant, like their assets: each tenant's result is its own, so one
tenant passing never hides another's failure. They belong to the tenant sync's multi-asset: a run
that materializes a raw asset judges its checks; the whole-tenant sync reports results only for
the datasets where it saw something to judge (rows written, records quarantined, an error, a
total that disagrees). Executing a check alone judges again the tenant's latest sync of the
dataset, from the sync log.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa

from st_pipeline.defs.partitions import tenant_check_spec
from st_pipeline.defs.raw_assets import raw_asset_key
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
    "go to raw_quarantine (WARN), above the quarantine ratio the sync fails (ERROR) and, blocking, holds back "
    "the hub tables built from it.",
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


# Checks whose ERROR holds back what is built from the asset (Dagster's blocking checks).
BLOCKING_CHECKS = frozenset({SCHEMA_CHECK})


def raw_check_specs(datasets: Sequence[Dataset]) -> list[dg.AssetCheckSpec]:
    """The checks of each raw asset, partitioned by tenant."""
    return [
        tenant_check_spec(name, raw_asset_key(dataset), CHECK_DESCRIPTIONS[name], blocking=name in BLOCKING_CHECKS)
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
            records=result.records,
            quarantined=result.quarantined,
            duplicates=result.duplicates,
            reported_total=result.reported_total,
            status=result.status,
            error=str(result.error) if result.error else None,
            error_kind=type(result.error).__name__ if result.error else None,
            cursor=result.cursor,
        )

    @classmethod
    def from_log(cls, row: Any) -> "Outcome":
        return cls(
            records=row.records,
            quarantined=row.quarantined,
            duplicates=row.duplicates,
            reported_total=row.reported_total,
            status=row.status,
            error=row.error,
            error_kind=row.error_kind,
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
            return [
                Judgement(
                    name,
                    False,
                    dg.AssetCheckSeverity.ERROR,
                    outcome.error,
                    {"cursor": outcome.cursor or "", "records": outcome.records},
                )
            ]
    if outcome.error is not None or outcome.status in NOT_LOADABLE:
        return []  # nothing was observed that the checks could judge; the run failure says why
    ratio = outcome.quarantined / outcome.records if outcome.records else 0.0
    verdicts = [
        Judgement(
            SCHEMA_CHECK,
            outcome.quarantined == 0,
            dg.AssetCheckSeverity.ERROR if ratio > quarantine_error_ratio else dg.AssetCheckSeverity.WARN,
            "every record matched its model"
            if not outcome.quarantined
            else f"{outcome.quarantined} of {outcome.records} records quarantined (see raw_quarantine)",
            {
                "quarantined": outcome.quarantined,
                "records": outcome.records,
                "ratio": round(ratio, 6),
                "error_above_ratio": quarantine_error_ratio,
            },
        ),
        Judgement(
            DUPLICATES_CHECK,
            outcome.duplicates == 0,
            metadata={"duplicates": outcome.duplicates, "records": outcome.records},
        ),
    ]
    if TOTAL_CHECK in names:
        matches = outcome.reported_total is None or outcome.reported_total == outcome.records
        verdicts.append(
            Judgement(
                TOTAL_CHECK,
                matches,
                description=None
                if matches
                else f"received {outcome.records} records, the list reported {outcome.reported_total}",
                metadata={
                    "received": outcome.records,
                    "reported_total": outcome.reported_total if outcome.reported_total is not None else -1,
                },
            )
        )
    if CURSOR_CHECK in names:
        verdicts.append(Judgement(CURSOR_CHECK, True, metadata={"cursor": outcome.cursor or ""}))
    return verdicts


def check_evaluation(dataset: Dataset, verdict: Judgement, partition: str) -> dg.AssetCheckEvaluation:
    """A verdict as the event a whole-tenant sync reports for its partition (the check was not planned)."""
    return dg.AssetCheckEvaluation(
        asset_key=raw_asset_key(dataset),
        check_name=verdict.check_name,
        passed=verdict.passed,
        severity=verdict.severity,
        description=verdict.description,
        metadata=verdict.metadata,
        partition=partition,
    )


def check_result(dataset: Dataset, verdict: Judgement) -> dg.AssetCheckResult:
    """A verdict as the result of a check the run planned (its partition is the run's)."""
    return dg.AssetCheckResult(
        asset_key=raw_asset_key(dataset),
        check_name=verdict.check_name,
        passed=verdict.passed,
        severity=verdict.severity,
        description=verdict.description,
        metadata=verdict.metadata,
    )


def latest_outcomes(engine: sa.Engine, tenant_id: int, dataset_keys: list[str]) -> dict[str, Outcome]:
    """The tenant's latest sync of each dataset, as its sync-log row recorded it."""
    if not dataset_keys:
        return {}
    log, status = sync_log_table.c, dataset_status_table.c
    query = (
        sa.select(sync_log_table)
        .join(
            dataset_status_table,
            sa.and_(status.tenant_id == log.tenant_id, status.dataset == log.dataset, status.last_run_id == log.run_id),
        )
        .where(log.tenant_id == tenant_id, log.dataset.in_(dataset_keys))
    )
    with engine.connect() as conn:
        return {row.dataset: Outcome.from_log(row) for row in conn.execute(query)}
