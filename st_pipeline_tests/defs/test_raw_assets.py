"""Materializing tenant partitions through Dagster into SQLite and PostgreSQL, row for row."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, add_tenant_partition
from st_pipeline.defs.raw_assets import raw_asset_key, raw_assets
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.servicetitan.timestamps import parse_timestamp
from st_pipeline.simulator import SimulatedTenant, Simulator
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline.warehouse.tables import raw_table
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A, TENANT_B

REPO_ROOT = Path(__file__).resolve().parents[2]


def _register(registry_url: str, *tenants: SimulatedTenant) -> None:
    registry = TenantRegistry.from_url(registry_url)
    for t in tenants:
        registry.save(t.tenant_id, f"tenant {t.tenant_id}", t.client_id, SecretStr(t.client_secret))


def _materialize(
    instance: dg.DagsterInstance, tenant_id: int, registry_url: str, warehouse_url: str
) -> dg.ExecuteInProcessResult:
    add_tenant_partition(instance, tenant_id)
    return dg.materialize(
        [raw_assets],
        partition_key=str(tenant_id),
        instance=instance,
        resources={
            "servicetitan": ServiceTitanResource(),
            "tenant_registry": TenantRegistryResource(url=registry_url),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
    )


def assert_warehouse_equals_ground_truth(warehouse_url: str, sim: Simulator, tenant_id: int) -> int:
    """Every row's id, modified_on, active and payload equal the simulator's records; returns rows."""
    engine = sa.create_engine(warehouse_url)
    total = 0
    with engine.connect() as conn:
        for dataset in load_catalogue().core_datasets():
            table = raw_table(dataset)
            rows = {r.id: r for r in conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id))}
            truth = sim.ground_truth(tenant_id, dataset.key)
            assert truth, f"simulator has no {dataset.key} for tenant {tenant_id}"
            assert sorted(rows) == [r["id"] for r in truth], dataset.key
            for record in truth:
                row = rows[record["id"]]
                assert row.payload == record, (dataset.key, record["id"])
                assert row.modified_on == parse_timestamp(record.get("modifiedOn"))
                assert row.active == record.get("active")
            total += len(rows)
    engine.dispose()
    return total


def _event_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(repr(event) for event in instance.all_logs(run_id))


def test_materialize_tenant_into_sqlite(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    _register(registry_url, TENANT_A)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, TENANT_A.tenant_id, registry_url, warehouse_url)
        assert result.success
        events = _event_text(instance, result.run_id)
    rows = assert_warehouse_equals_ground_truth(warehouse_url, api_env, TENANT_A.tenant_id)
    materializations = result.asset_materializations_for_node("servicetitan_raw")
    assert {m.asset_key for m in materializations} == {raw_asset_key(d) for d in load_catalogue().core_datasets()}
    metadata = {m.asset_key: m.metadata for m in materializations}
    customers = metadata[raw_asset_key(load_catalogue().dataset("crm/customers"))]
    truth = api_env.ground_truth(TENANT_A.tenant_id, "crm/customers")
    assert customers["records"].value == len(truth) == customers["rows_in_table"].value
    assert customers["pages"].value >= 2 and customers["requests"].value == customers["pages"].value
    assert customers["duration_s"].value >= 0
    assert sum(m.metadata["records"].value for m in materializations) == rows
    # The canary secret never reaches Dagster's event log or the warehouse.
    assert CANARY_SECRET not in events
    assert CANARY_SECRET.encode() not in (local_env / "warehouse.db").read_bytes()


def test_two_tenants_never_mix(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    _register(registry_url, TENANT_A, TENANT_B)
    with dg.instance_for_test() as instance:
        assert _materialize(instance, TENANT_B.tenant_id, registry_url, warehouse_url).success
        assert _materialize(instance, TENANT_A.tenant_id, registry_url, warehouse_url).success
        assert instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME) == [str(TENANT_B.tenant_id), str(TENANT_A.tenant_id)]
    rows_a = assert_warehouse_equals_ground_truth(warehouse_url, api_env, TENANT_A.tenant_id)
    rows_b = assert_warehouse_equals_ground_truth(warehouse_url, api_env, TENANT_B.tenant_id)
    assert rows_a != rows_b  # different volumes: a mix-up could not go unnoticed
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        table = raw_table(load_catalogue().dataset("crm/customers"))
        tenants = set(conn.execute(sa.select(table.c.tenant_id).distinct()).scalars())
    assert tenants == {TENANT_A.tenant_id, TENANT_B.tenant_id}


def test_materialize_into_postgres_with_the_production_instance(
    local_env: Path, api_env: Simulator, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster.yaml of the repository (PostgreSQL storage) plus a PostgreSQL warehouse."""
    url = sa.make_url(postgres_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    dagster_home = local_env / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    _register(registry_url, TENANT_A)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = _materialize(instance, TENANT_A.tenant_id, registry_url, postgres_url)
        assert result.success
        assert instance.get_run_by_id(result.run_id) is not None
        events = _event_text(instance, result.run_id)
    assert_warehouse_equals_ground_truth(postgres_url, api_env, TENANT_A.tenant_id)
    assert CANARY_SECRET not in events
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        table = raw_table(load_catalogue().dataset("crm/customers"))
        payload_type = conn.execute(
            sa.text("select data_type from information_schema.columns where table_name = :t and column_name = 'payload'"),
            {"t": table.name},
        ).scalar_one()
        leaked = conn.execute(
            sa.text(f"select count(*) from {table.name} where payload::text like :canary"), {"canary": f"%{CANARY_SECRET}%"}
        ).scalar_one()
    engine.dispose()
    assert payload_type == "jsonb" and leaked == 0


def test_unregistered_tenant_fails_with_a_clear_message(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    with dg.instance_for_test() as instance:
        add_tenant_partition(instance, 5555)
        result = dg.materialize(
            [raw_assets],
            partition_key="5555",
            instance=instance,
            resources={
                "servicetitan": ServiceTitanResource(),
                "tenant_registry": TenantRegistryResource(url=registry_url),
                "warehouse": WarehouseResource(url=f"sqlite:///{local_env / 'w.db'}"),
            },
            raise_on_error=False,
        )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "tenant 5555 is not registered" in failure.message and "st-pipeline tenant add" in failure.message
