"""Asset checks on the raw assets, evaluated on every sync from what the sync observed.

Per dataset (and tenant partition):

- ``schema_conformance`` (blocking): records quarantined by validation. None: pass. Some, but
  at most ``quarantine_error_ratio`` of the page stream: WARN. More: ERROR, which blocks
  downstream assets of that run.
- ``no_duplicate_ids``: records that arrived more than once in one sync (or older than the stored
  version) — harmless for the data (upserts), a sign of a feed re-sending: WARN.
- ``count_matches_total`` (paged lists): records received versus the ``totalCount`` the list
  reported on its first page: WARN when they differ.
- ``cursor_advances`` (export feeds): ERROR when the feed said it had more data but its
  continuation token did not move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import dagster as dg

from st_pipeline.defs.partitions import tenant_partitions
from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.servicetitan.errors import StuckCursorError
from st_pipeline.sync.extract import ExtractResult

SCHEMA_CHECK = "schema_conformance"
DUPLICATES_CHECK = "no_duplicate_ids"
TOTAL_CHECK = "count_matches_total"
CURSOR_CHECK = "cursor_advances"
DEFAULT_QUARANTINE_ERROR_RATIO = 0.01


def check_names(dataset: Dataset) -> list[str]:
    names = [SCHEMA_CHECK, DUPLICATES_CHECK]
    kind = dataset.extraction_endpoint.kind
    if kind == "list":
        names.append(TOTAL_CHECK)
    if kind == "export":
        names.append(CURSOR_CHECK)
    return names


def raw_check_specs(
    datasets: Sequence[Dataset], asset_key_of: Callable[[Dataset], dg.AssetKey]
) -> list[dg.AssetCheckSpec]:
    """The checks of each raw asset, partitioned by tenant like the asset."""
    return [
        dg.AssetCheckSpec(
            name=name, asset=asset_key_of(dataset), blocking=name == SCHEMA_CHECK, partitions_def=tenant_partitions
        )
        for dataset in datasets
        for name in check_names(dataset)
    ]


def evaluate(
    result: ExtractResult, asset_key: dg.AssetKey, quarantine_error_ratio: float
) -> Iterator[dg.AssetCheckResult]:
    """The check results a finished (or failed) dataset sync supports."""
    names = check_names(result.dataset)
    if isinstance(result.error, StuckCursorError) and CURSOR_CHECK in names:
        yield dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=CURSOR_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=str(result.error),
            metadata={"cursor": result.cursor or ""},
        )
        return
    if result.error is not None:
        return  # nothing was observed that the checks could judge; the run failure says why
    ratio = result.quarantined / result.records if result.records else 0.0
    severity = dg.AssetCheckSeverity.ERROR if ratio > quarantine_error_ratio else dg.AssetCheckSeverity.WARN
    yield dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=SCHEMA_CHECK,
        passed=result.quarantined == 0,
        severity=severity,
        description=(
            "every record matched its model"
            if not result.quarantined
            else f"{result.quarantined} of {result.records} records quarantined (see raw_quarantine)"
        ),
        metadata={"quarantined": result.quarantined, "records": result.records, "ratio": round(ratio, 6),
                  "error_above_ratio": quarantine_error_ratio},
    )
    yield dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=DUPLICATES_CHECK,
        passed=result.duplicates == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"duplicates": result.duplicates, "records": result.records},
    )
    if TOTAL_CHECK in names:
        matches = result.reported_total is None or result.reported_total == result.records
        yield dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=TOTAL_CHECK,
            passed=matches,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if matches else f"received {result.records} records, the list reported {result.reported_total}",
            metadata={"received": result.records, "reported_total": result.reported_total if result.reported_total is not None else -1},
        )
    if CURSOR_CHECK in names:
        yield dg.AssetCheckResult(asset_key=asset_key, check_name=CURSOR_CHECK, passed=True,
                                  metadata={"cursor": result.cursor or ""})
