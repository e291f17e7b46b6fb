"""The Dagster code location: ``dagster dev -m st_pipeline.definitions`` (see workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from st_pipeline.defs.raw_assets import raw_assets
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource

defs = dg.Definitions(
    assets=[raw_assets],
    resources={
        "servicetitan": ServiceTitanResource(),
        "tenant_registry": TenantRegistryResource(),
        "warehouse": WarehouseResource(),
    },
)
