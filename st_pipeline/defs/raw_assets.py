"""Raw assets: one per ServiceTitan dataset, partitioned by tenant, synced by the tenant sync's step.

The specs here belong to the subsettable multi-asset of ``tenant_sync.py``, beside
``servicetitan/tenant_sync``: materializing one raw asset syncs that dataset for the tenant; the
scheduled run, which selects only ``servicetitan/tenant_sync``, syncs them all and reports a raw
asset when its dataset changed. See ``tenant_sync.py`` for why.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Sequence
from functools import cache

import dagster as dg

from st_pipeline.defs.columns import table_columns
from st_pipeline.defs.partitions import tenant_partitions
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.models import field_types
from st_pipeline.warehouse.tables import raw_table, raw_table_name

TENANT_SYNC_KEY = dg.AssetKey(["servicetitan", "tenant_sync"])


def is_pipeline_asset(key: dg.AssetKey) -> bool:
    """Whether an asset key is one of this project's (every key starts with ``servicetitan``)."""
    return key.path[:1] == TENANT_SYNC_KEY.path[:1]


# The op of the tenant sync's multi-asset, as run config addresses it (``ops.servicetitan__tenant_sync``).
TENANT_SYNC_OP = TENANT_SYNC_KEY.to_python_identifier()

# The asset graph shows only the last part of a key, cut in the middle beyond about 28 characters.
MAX_NAME_LENGTH = 28
# Shorter last parts for the resources whose slug is longer (their tables keep the full slug).
SHORT_NAMES = {
    "accounting/credit-memos/credit-memo-items": "credit_memo_items",
    "accounting/inventory-bills/custom-fields": "inventory_bill_custom_fields",
    "dispatch/arrival-windows/configuration": "arrival_windows_config",
    "equipmentsystems/installed-equipment/custom-field-types": "equipment_custom_field_types",
    "jpm/work-breakdown-structure/budget-codes": "work_breakdown_budget_codes",
    "jpm/work-breakdown-structure/segments": "work_breakdown_segments",
}

RAW_COLUMN_TYPES = {
    "modified_on": "timestamp (UTC)",
    "payload": "json (jsonb on PostgreSQL)",
    "extracted_at": "timestamp (UTC)",
    "deleted_at": "timestamp (UTC)",
}
RAW_COLUMN_DESCRIPTIONS = {
    "tenant_id": "The ServiceTitan tenant the record belongs to (the asset's partition).",
    "id": "The record's id in ServiceTitan (payload.id).",
    "modified_on": "The record's modifiedOn, when it has one: an older copy of a record never replaces a newer one.",
    "active": "The record's active flag, when it has one: inactive records are kept.",
    "payload": "The record exactly as ServiceTitan sent it; its fields follow, as payload.<field>.",
    "extracted_at": "When the sync last wrote the row: the hub builds read the rows changed since their last build.",
    "run_id": "The Dagster run that last wrote the row.",
    "deleted_at": "When a complete read of the dataset no longer returned the record (rows are never removed); "
    "NULL while ServiceTitan returns it.",
}
# For the few datasets whose records carry no id.
CONTENT_KEY_DESCRIPTION = "A hash of the record's content: these records have no id in ServiceTitan."
PAYLOAD_FIELD_DESCRIPTION = "A field of the record, inside payload."


def raw_asset_key(dataset: Dataset) -> dg.AssetKey:
    name = SHORT_NAMES.get(dataset.key, dataset.resource_slug)
    return dg.AssetKey(["servicetitan", "raw", dataset.module.replace("-", "_"), name])


def raw_group_name(dataset: Dataset) -> str:
    return "servicetitan_" + dataset.module.replace("-", "_")


@cache
def _raw_table_columns(keyless: bool) -> tuple[dg.TableColumn, ...]:
    """The columns every raw table has, read from one of them (defining all 134 at load costs time)."""
    descriptions = {**RAW_COLUMN_DESCRIPTIONS, **({"id": CONTENT_KEY_DESCRIPTION} if keyless else {})}
    sample = raw_table(load_catalogue().core_datasets()[0])
    return tuple(table_columns(sample, RAW_COLUMN_TYPES, descriptions))


def raw_column_schema(dataset: Dataset) -> dg.TableSchema:
    """The raw table's columns, then the fields of the record kept in its ``payload`` column."""
    fields = [
        dg.TableColumn(name=f"payload.{name}", type=kind, description=PAYLOAD_FIELD_DESCRIPTION)
        for name, kind in field_types(dataset.key).items()
    ]
    keyless = load_catalogue().key_field(dataset) is None
    return dg.TableSchema(columns=[*_raw_table_columns(keyless), *fields])


def raw_asset_spec(dataset: Dataset) -> dg.AssetSpec:
    endpoint = dataset.extraction_endpoint
    return dg.AssetSpec(
        key=raw_asset_key(dataset),
        deps=[TENANT_SYNC_KEY],
        group_name=raw_group_name(dataset),
        description=(
            f"ServiceTitan {dataset.key} records of one tenant as received, one row per record in table "
            f"{raw_table_name(dataset)}, from the {endpoint.kind} endpoint {endpoint.path}. Materialize it to sync "
            "this dataset for a tenant; the hourly sync of the whole tenant reports it when it changed, and lists "
            "when it was last checked in servicetitan/tenant_sync's `datasets` table."
        ),
        skippable=True,  # not granted, not available or disabled for a tenant: nothing to report
        kinds={"servicetitan", "table"},
        # Filters of the asset catalogue: `tag:layer=raw`, `tag:endpoint_kind=export`.
        tags={"layer": "raw", "endpoint_kind": endpoint.kind},
        partitions_def=tenant_partitions,
        metadata={
            "endpoint": endpoint.path,
            "endpoint_kind": endpoint.kind,
            "dagster/table_name": raw_table_name(dataset),
            "dagster/column_schema": raw_column_schema(dataset),
            "scopes": ", ".join(endpoint.scopes),
        },
    )


def raw_asset_specs(datasets: Sequence[Dataset]) -> list[dg.AssetSpec]:
    return [raw_asset_spec(dataset) for dataset in datasets]
