"""Raw assets: one per ServiceTitan dataset, partitioned by tenant, filled by the tenant sync.

They are declared, not computed: ``servicetitan/tenant_sync`` extracts every dataset of a tenant in
one step (one token, one connection pool, one rate limiter) and reports a materialization of a raw
asset only when that dataset changed. See ``tenant_sync.py`` for why.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

from collections.abc import Sequence

import dagster as dg

from st_pipeline.defs.partitions import tenant_partitions
from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.warehouse.tables import raw_table_name

TENANT_SYNC_KEY = dg.AssetKey(["servicetitan", "tenant_sync"])


def raw_asset_key(dataset: Dataset) -> dg.AssetKey:
    return dg.AssetKey(["servicetitan", "raw", dataset.module.replace("-", "_"), dataset.resource_slug])


def raw_group_name(dataset: Dataset) -> str:
    return "servicetitan_" + dataset.module.replace("-", "_")


def raw_asset_spec(dataset: Dataset) -> dg.AssetSpec:
    endpoint = dataset.extraction_endpoint
    return dg.AssetSpec(
        key=raw_asset_key(dataset),
        deps=[TENANT_SYNC_KEY],
        group_name=raw_group_name(dataset),
        description=(
            f"ServiceTitan {dataset.key} records of one tenant as received, one row per record in table "
            f"{raw_table_name(dataset)}, from the {endpoint.kind} endpoint {endpoint.path}. Materialized by "
            "servicetitan/tenant_sync when the dataset changed."
        ),
        kinds={"servicetitan", "table"},
        partitions_def=tenant_partitions,
        metadata={
            "endpoint": endpoint.path,
            "endpoint_kind": endpoint.kind,
            "dagster/table_name": raw_table_name(dataset),
            "scopes": ", ".join(endpoint.scopes),
        },
    )


def raw_asset_specs(datasets: Sequence[Dataset]) -> list[dg.AssetSpec]:
    return [raw_asset_spec(dataset) for dataset in datasets]
