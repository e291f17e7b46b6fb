"""Materializing tenant partitions through Dagster into SQLite and PostgreSQL, row for row."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, add_tenant_partition
from st_pipeline.defs.raw_assets import raw_asset_key, raw_assets
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.crypto import generate_key
from st_pipeline.tenants.endpoint_selection import EndpointSelection
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import raw_table, sync_log_table
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A, TENANT_B, point_at_simulator
from st_pipeline_tests.support import (
    TEST_CHANGE,
    assert_warehouse_equals_ground_truth,
    deployment,
    materialize_tenant,
    open_registry,
    register_tenants,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _event_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(repr(event) for event in instance.all_logs(run_id))


def test_materialize_tenant_into_sqlite(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    register_tenants(registry_url, TENANT_A)
    with dg.instance_for_test() as instance:
        result = materialize_tenant(instance, TENANT_A.tenant_id, registry_url, warehouse_url)
        assert result.success
        events = _event_text(instance, result.run_id)
    rows = assert_warehouse_equals_ground_truth(warehouse_url, api_env, TENANT_A.tenant_id)
    materializations = result.asset_materializations_for_node("servicetitan_raw")
    assert {m.asset_key for m in materializations} == {raw_asset_key(d) for d in load_catalogue().extracted_datasets()}
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
    register_tenants(registry_url, TENANT_A, TENANT_B)
    with dg.instance_for_test() as instance:
        assert materialize_tenant(instance, TENANT_B.tenant_id, registry_url, warehouse_url).success
        assert materialize_tenant(instance, TENANT_A.tenant_id, registry_url, warehouse_url).success
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
    register_tenants(registry_url, TENANT_A)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().tag_concurrency_limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        result = materialize_tenant(instance, TENANT_A.tenant_id, registry_url, postgres_url)
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
        result = materialize_tenant(instance, 5555, registry_url, f"sqlite:///{local_env / 'w.db'}", raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "tenant 5555 is not registered" in failure.message and "st-pipeline tenant add" in failure.message


def test_missing_scope_skips_that_endpoint_with_a_warning_and_the_rest_syncs(
    local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = SimulatedTenant(tenant_id=8101, client_id="cid.noscope", client_secret="cs1.noscope-secret")
    config = SimulatorConfig(tenants=[tenant], seed=2, scale=0.02)
    catalogue = load_catalogue()
    payroll = [d for d in catalogue.extracted_datasets() if d.module == "payroll"]
    denied = {scope for d in payroll for scope in d.extraction_endpoint.scopes}
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    register_tenants(registry_url, tenant)
    with Simulator(config) as sim:
        sim.deny_scopes(tenant.tenant_id, denied)
        point_at_simulator(monkeypatch, sim)
        with dg.instance_for_test() as instance:
            result = materialize_tenant(instance, tenant.tenant_id, registry_url, warehouse_url)
            observations = [
                e.dagster_event.event_specific_data.asset_observation
                for e in instance.all_logs(result.run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "ASSET_OBSERVATION"
            ]
            warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 30]
        others = [d for d in catalogue.extracted_datasets() if d.module != "payroll"]
        assert_warehouse_equals_ground_truth(warehouse_url, sim, tenant.tenant_id, others)
    assert result.success
    materialized = {m.asset_key for m in result.asset_materializations_for_node("servicetitan_raw")}
    assert materialized == {raw_asset_key(d) for d in others}
    assert {o.asset_key for o in observations} == {raw_asset_key(d) for d in payroll}
    explanation = observations[0].metadata["explanation"].value
    assert "scope" in explanation and f"tenant {tenant.tenant_id}" in explanation
    assert len([w for w in warnings if "access denied" in w]) == len(payroll)
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(sync_log_table.c.dataset, sync_log_table.c.status)).all())
    engine.dispose()
    assert {statuses[d.key] for d in payroll} == {"skipped"}
    assert {statuses[d.key] for d in others} == {"succeeded"}


def test_disabled_endpoints_are_skipped(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    register_tenants(registry_url, TENANT_A)
    registry = open_registry(registry_url)
    selection = EndpointSelection(registry.engine)
    selection.set("payroll", enabled=False, tenant_id=TENANT_A.tenant_id, reason="scopes not granted", change=TEST_CHANGE)
    selection.set("crm/leads", enabled=False, change=TEST_CHANGE)
    registry.close()
    with dg.instance_for_test() as instance:
        result = materialize_tenant(instance, TENANT_A.tenant_id, registry_url, warehouse_url)
    assert result.success
    materialized = {m.asset_key for m in result.asset_materializations_for_node("servicetitan_raw")}
    expected = [d for d in load_catalogue().extracted_datasets() if d.module != "payroll" and d.key != "crm/leads"]
    assert materialized == {raw_asset_key(d) for d in expected}


def test_out_of_date_warehouse_is_refused_with_what_to_do(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    register_tenants(registry_url, TENANT_A)
    warehouse_url = f"sqlite:///{local_env / 'old.db'}"
    engine = sa.create_engine(warehouse_url)
    upgrade(engine, "0001")
    engine.dispose()
    with dg.instance_for_test() as instance, deployment(registry_url, warehouse_url):
        add_tenant_partition(instance, TENANT_A.tenant_id)
        result = dg.materialize(
            [raw_assets],
            partition_key=str(TENANT_A.tenant_id),
            instance=instance,
            resources={
                "servicetitan": ServiceTitanResource(),
                "tenant_registry": TenantRegistryResource(),
                "warehouse": WarehouseResource(),
            },
            raise_on_error=False,
        )
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "schema revision 0001" in message and "st-pipeline db upgrade" in message


def test_second_run_is_incremental_and_full_refresh_reads_everything(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    register_tenants(registry_url, TENANT_A)
    key = raw_asset_key(load_catalogue().dataset("crm/customers"))
    truth = len(api_env.ground_truth(TENANT_A.tenant_id, "crm/customers"))

    def customers(result: dg.ExecuteInProcessResult) -> dict:
        return next(m.metadata for m in result.asset_materializations_for_node("servicetitan_raw") if m.asset_key == key)

    with dg.instance_for_test() as instance:
        first = customers(materialize_tenant(instance, TENANT_A.tenant_id, registry_url, warehouse_url))
        second = customers(materialize_tenant(instance, TENANT_A.tenant_id, registry_url, warehouse_url))
        refresh = customers(materialize_tenant(
            instance, TENANT_A.tenant_id, registry_url, warehouse_url,
            run_config={"ops": {"servicetitan_raw": {"config": {"full_refresh": True}}}},
        ))
    assert first["records"].value == truth and first["sync"].value == "from the beginning"
    assert second["records"].value == 0 and second["sync"].value == "incremental"
    assert second["cursor_before"].value == first["cursor"].value
    assert refresh["records"].value == truth and refresh["rows_in_table"].value == truth


def test_a_run_without_the_right_key_fails_naming_the_tenant_and_the_variable(
    local_env: Path, api_env: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_tenants(None, TENANT_A)
    monkeypatch.setenv("ST_PIPELINE_SECRET_KEYS", generate_key())  # the old key dropped before rotating
    with dg.instance_for_test() as instance:
        result = materialize_tenant(instance, TENANT_A.tenant_id, raise_on_error=False, datasets=["crm/customers"])
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message
    assert f"tenant {TENANT_A.tenant_id}'s stored client secret cannot be decrypted" in message
    assert "ST_PIPELINE_SECRET_KEYS" in message and "keys rotate" not in message
    assert failure.step_failure_data.user_failure_data.metadata["error_type"].value == "SecretKeyError"
