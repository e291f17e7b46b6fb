"""Helpers shared by the tests: register tenants, materialize a tenant, compare with the simulator."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.raw_assets import raw_asset_key, raw_assets
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.timestamps import parse_timestamp
from st_pipeline.simulator import SimulatedTenant, Simulator
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline.warehouse.loader import content_key
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import raw_table


def register_tenants(registry_url: str, *tenants: SimulatedTenant) -> None:
    registry = TenantRegistry.from_url(registry_url)
    for t in tenants:
        registry.save(t.tenant_id, f"tenant {t.tenant_id}", t.client_id, SecretStr(t.client_secret))


def materialize_tenant(
    instance: dg.DagsterInstance,
    tenant_id: int,
    registry_url: str,
    warehouse_url: str,
    *,
    run_config: dict | None = None,
    raise_on_error: bool = True,
    datasets: list[str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Upgrade the warehouse schema, add the partition, materialize every raw asset of the tenant."""
    engine = sa.create_engine(warehouse_url)
    upgrade(engine)
    engine.dispose()
    add_tenant_partition(instance, tenant_id)
    return dg.materialize(
        [raw_assets],
        selection=[raw_asset_key(load_catalogue().dataset(key)) for key in datasets] if datasets else None,
        partition_key=str(tenant_id),
        instance=instance,
        resources={
            "servicetitan": ServiceTitanResource(),
            "tenant_registry": TenantRegistryResource(url=registry_url),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def assert_warehouse_equals_ground_truth(
    warehouse_url: str, sim: Simulator, tenant_id: int, datasets: list[Dataset] | None = None
) -> int:
    """Every row's key, modified_on, active and payload equal the simulator's records; returns rows.

    ``datasets`` defaults to every extracted dataset.
    """
    catalogue = load_catalogue()
    engine = sa.create_engine(warehouse_url)
    total = 0
    with engine.connect() as conn:
        for dataset in datasets or catalogue.extracted_datasets():
            table = raw_table(dataset)
            rows = {r.id: r for r in conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id))}
            key_field = catalogue.key_field(dataset)
            seen: Counter[int] = Counter()
            truth = {}
            for record in sim.ground_truth(tenant_id, dataset.key):
                if key_field is None:
                    first = content_key(record)
                    truth[content_key(record, seen[first])] = record
                    seen[first] += 1
                else:
                    truth[record[key_field]] = record
            assert truth, f"simulator has no {dataset.key} for tenant {tenant_id}"
            assert sorted(rows) == sorted(truth), dataset.key
            for key, record in truth.items():
                row = rows[key]
                assert row.payload == record, (dataset.key, record["id"])
                assert row.modified_on == parse_timestamp(record.get("modifiedOn"))
                assert row.active == record.get("active")
            total += len(rows)
    engine.dispose()
    return total


def prepared_warehouse(url: str, datasets: list[Dataset]) -> sa.Engine:
    """A warehouse engine at the current schema revision, with the raw tables of ``datasets``."""
    from st_pipeline.warehouse.engine import create_warehouse_engine
    from st_pipeline.warehouse.tables import ensure_raw_tables

    engine = create_warehouse_engine(url)
    upgrade(engine)
    ensure_raw_tables(engine, datasets)
    return engine
