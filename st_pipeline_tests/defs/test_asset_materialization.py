"""Every raw, hub and mart asset materializes on its own, per tenant, as the Dagster UI's
"Materialize" button runs it: one raw asset syncs exactly that dataset with its checks; a hub table
builds from its raw table (and fails, naming the raw asset, when that was never synced); a mart
brings the hub tables it reads up to date first; every build holds the tenant's lock. Check status
is per tenant. The scheduled job, beside it, reports only what changed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from st_pipeline.defs.checks import SCHEMA_CHECK, check_names
from st_pipeline.defs.models import (
    TENANT_MODELS_KEY,
    TENANT_MODELS_OP,
    hub_asset_key,
    mart_asset_key,
    tenant_models,
)
from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, TENANT_SYNC_OP, raw_asset_key
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import SYNC_JOB, sync_job
from st_pipeline.defs.tenant_sync import tenant_sync
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import load_settings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.transform.hubs import hub
from st_pipeline.transform.marts import MARTS
from st_pipeline.warehouse.locks import tenant_lock
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import sync_log_table
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.support import (
    assert_warehouse_equals_ground_truth,
    check_evaluations,
    materializations,
    metadata_value,
    register_tenants,
    step_failure_error,
)

CATALOGUE = load_catalogue()
TAMPERED = SimulatedTenant(tenant_id=9701, client_id="cid.tampered", client_secret="cs1.tampered-secret")
CLEAN = SimulatedTenant(tenant_id=9702, client_id="cid.clean", client_secret="cs1.clean-secret")
CUSTOMERS, INVOICES, JOBS, ZONES = (
    CATALOGUE.dataset(k) for k in ("crm/customers", "accounting/invoices", "jpm/jobs", "dispatch/zones")
)
SERVED = (CUSTOMERS.key, INVOICES.key, JOBS.key, ZONES.key)
REVENUE = next(m for m in MARTS if m.name == "revenue_by_business_unit")


@pytest.fixture()
def sim(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """Two tenants, four datasets; the registry holds both, the warehouse is at the current revision."""
    config = SimulatorConfig(tenants=[TAMPERED, CLEAN], seed=19, scale=0.05, export_batch_size=25, datasets=SERVED)
    with Simulator(config) as simulator:
        point_at_simulator(monkeypatch, simulator)
        register_tenants(None, TAMPERED, CLEAN)
        engine = sa.create_engine(load_settings().warehouse_database_url)
        upgrade(engine)
        engine.dispose()
        yield simulator


def _definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[tenant_sync, tenant_models],
        jobs=[sync_job],
        resources={
            "servicetitan": ServiceTitanResource(),
            "tenant_registry": TenantRegistryResource(),
            "warehouse": WarehouseResource(),
        },
    )


def _materialize(
    instance: dg.DagsterInstance,
    tenant: SimulatedTenant,
    selection: list[dg.AssetKey],
    models_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """What "Materialize" on the selected assets runs for one tenant's partition."""
    add_tenant_partition(instance, tenant.tenant_id)
    job = _definitions().resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(selection))
    run_config = {"ops": {TENANT_MODELS_OP: {"config": models_config}}} if models_config else {}
    return job.execute_in_process(
        instance=instance, partition_key=str(tenant.tenant_id), run_config=run_config, raise_on_error=False
    )


def _scheduled(instance: dg.DagsterInstance, tenant: SimulatedTenant) -> dg.ExecuteInProcessResult:
    """The hourly job's run of one tenant (of the served datasets)."""
    add_tenant_partition(instance, tenant.tenant_id)
    result = (
        _definitions()
        .resolve_job_def(SYNC_JOB)
        .execute_in_process(
            instance=instance,
            partition_key=str(tenant.tenant_id),
            run_config={"ops": {TENANT_SYNC_OP: {"config": {"datasets": list(SERVED)}}}},
        )
    )
    assert result.success
    return result


def _reported(instance: dg.DagsterInstance, run_id: str) -> dict[dg.AssetKey, Mapping[str, dg.MetadataValue]]:
    return {m.asset_key: m.metadata for m in materializations(instance, run_id)}


def _synced(run_id: str) -> set[str]:
    """The datasets a run synced, from the warehouse's sync log."""
    engine = sa.create_engine(load_settings().warehouse_database_url)
    with engine.connect() as conn:
        synced = set(
            conn.execute(sa.select(sync_log_table.c.dataset).where(sync_log_table.c.run_id == run_id)).scalars()
        )
    engine.dispose()
    return synced


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(step_failure_error(e).message for e in result.get_step_failure_events())


def _check_status(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> dict[str | None, str]:
    """Per tenant partition, the status the UI shows for a check."""
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    return {info.partition_key: info.latest_execution_status.value for info in infos}


def test_raw_asset_alone_syncs_its_dataset_with_its_checks_and_check_status_is_per_tenant(sim: Simulator) -> None:
    customers = raw_asset_key(CUSTOMERS)
    schema_check = dg.AssetCheckKey(customers, SCHEMA_CHECK)
    ids = [r["id"] for r in sim.ground_truth(TAMPERED.tenant_id, CUSTOMERS.key)]
    # 10 of the tampered tenant's customers fail their model: far above the quarantine ratio, an ERROR.
    sim.tamper_records(TAMPERED.tenant_id, CUSTOMERS.key, {i: (lambda r: r.update(createdById="x")) for i in ids[:10]})
    with dg.instance_for_test() as instance:
        clean = _materialize(instance, CLEAN, [customers])
        assert clean.success, _failure(clean)
        clean_reported = _reported(instance, clean.run_id)
        clean_checks = check_evaluations(instance, clean.run_id)
        assert _check_status(instance, schema_check) == {str(CLEAN.tenant_id): "SUCCEEDED"}

        # The tampered tenant's raw customers with its hub table: the blocking schema check fails
        # the sync, and Dagster holds back the hub build.
        tampered = _materialize(instance, TAMPERED, [customers, hub_asset_key(hub("customers"))])
        tampered_reported = _reported(instance, tampered.run_id)
        started = [e.step_key for e in tampered.all_events if e.event_type == dg.DagsterEventType.STEP_START]
        [sync_failure] = tampered.get_step_failure_events()
        # The clean tenant passing again leaves the tampered tenant's check failed.
        again = _materialize(instance, CLEAN, [customers])
        assert again.success, _failure(again)
        again_reported = _reported(instance, again.run_id)
        statuses = _check_status(instance, schema_check)

    assert set(clean_reported) == {customers}  # not the tenant sync, not another raw asset
    assert _synced(clean.run_id) == {CUSTOMERS.key}
    assert_warehouse_equals_ground_truth(load_settings().warehouse_database_url, sim, CLEAN.tenant_id, [CUSTOMERS])
    assert clean_reported[customers]["dagster/row_count"].value == len(sim.ground_truth(CLEAN.tenant_id, CUSTOMERS.key))
    assert sorted(e.check_name for e in clean_checks) == sorted(check_names(CUSTOMERS))
    assert all(e.passed and e.partition == str(CLEAN.tenant_id) for e in clean_checks)

    assert not tampered.success and "schema_conformance" in _failure(tampered)
    assert hub_asset_key(hub("customers")) not in tampered_reported
    assert started == [TENANT_SYNC_OP]  # the hub build never ran
    assert step_failure_error(sync_failure).cls_name == "DagsterAssetCheckFailedError"  # held back by Dagster

    # Asked for, an unchanged dataset is reported: its asset says when it was last confirmed.
    assert set(again_reported) == {customers} and again_reported[customers]["rows_written"].value == 0
    assert statuses == {str(CLEAN.tenant_id): "SUCCEEDED", str(TAMPERED.tenant_id): "FAILED"}


def test_hub_and_mart_build_on_their_own_from_what_was_synced_under_the_tenant_lock(sim: Simulator) -> None:
    invoices_hub, customers_hub = hub_asset_key(hub("invoices")), hub_asset_key(hub("customers"))
    revenue = mart_asset_key(REVENUE)
    tenant = CLEAN
    engine = sa.create_engine(load_settings().warehouse_database_url)
    with dg.instance_for_test() as instance:
        # Nothing synced yet: the hub table says which raw asset to materialize first.
        missing = _materialize(instance, tenant, [invoices_hub])
        assert _materialize(instance, tenant, [raw_asset_key(CUSTOMERS)]).success
        customers = _materialize(instance, tenant, [customers_hub])
        assert customers.success, _failure(customers)
        customers_reported = _reported(instance, customers.run_id)
        # The mart's sources synced, the mart alone: its hub tables are built first, then it.
        assert _materialize(instance, tenant, [raw_asset_key(INVOICES), raw_asset_key(JOBS)]).success
        mart = _materialize(instance, tenant, [revenue])
        assert mart.success, _failure(mart)
        mart_reported = _reported(instance, mart.run_id)
        # Another run holds the tenant: the build is refused, it does not read rows being written.
        with tenant_lock(engine, tenant.tenant_id, "a-running-sync"):
            refused = _materialize(instance, tenant, [revenue], models_config={"lock_wait_s": 0})
    with engine.connect() as conn:
        hub_rows = conn.execute(
            sa.text("SELECT count(*) FROM hub_customers WHERE tenant_id = :t"), {"t": tenant.tenant_id}
        ).scalar_one()
        mart_rows = conn.execute(
            sa.text(f"SELECT count(*) FROM {REVENUE.table_name} WHERE tenant_id = :t"), {"t": tenant.tenant_id}
        ).scalar_one()
    engine.dispose()

    assert not missing.success
    assert "servicetitan/raw/accounting/invoices" in _failure(missing) and "first" in _failure(missing)
    assert set(customers_reported) == {customers_hub}
    assert (
        customers_reported[customers_hub]["dagster/row_count"].value
        == hub_rows
        == len(sim.ground_truth(tenant.tenant_id, CUSTOMERS.key))
    )
    # The mart and the hub tables it reads, which this run built for the first time.
    assert revenue in mart_reported and {
        invoices_hub,
        hub_asset_key(hub("invoice_items")),
        hub_asset_key(hub("jobs")),
    } <= set(mart_reported)
    assert mart_reported[revenue]["dagster/row_count"].value == mart_rows > 0
    assert not set(mart_reported) & {raw_asset_key(d) for d in (CUSTOMERS, INVOICES, JOBS)}
    assert not refused.success
    assert f"tenant {tenant.tenant_id} is being synced by run a-running-sync" in _failure(refused)


def test_the_scheduled_run_reports_what_changed_and_an_empty_dataset_once(sim: Simulator) -> None:
    tenant = CLEAN
    zones = sim.ground_truth(tenant.tenant_id, ZONES.key)
    sim.apply_changes(tenant.tenant_id, ZONES.key, deleted=len(zones))  # the tenant has no zones
    with dg.instance_for_test() as instance:
        first = _reported(instance, _scheduled(instance, tenant).run_id)
        quiet = _reported(instance, _scheduled(instance, tenant).run_id)
        sim.apply_changes(tenant.tenant_id, CUSTOMERS.key, updated=3)
        changed_run = _scheduled(instance, tenant)
        changed = _reported(instance, changed_run.run_id)
        changed_checks = check_evaluations(instance, changed_run.run_id)
    summaries = {TENANT_SYNC_KEY, TENANT_MODELS_KEY}
    assert {raw_asset_key(d) for d in (CUSTOMERS, INVOICES, JOBS, ZONES)} <= set(first)
    assert first[raw_asset_key(ZONES)]["dagster/row_count"].value == 0  # empty, reported: not "missing"
    datasets_table = {
        r.data["dataset"]: r.data["this_run"]
        for r in metadata_value(first[TENANT_SYNC_KEY], "datasets", dg.TableMetadataValue).records
    }
    assert datasets_table[ZONES.key] == "first sync" and datasets_table[CUSTOMERS.key] == "changed"

    assert set(quiet) == summaries  # nothing changed: no raw, hub or mart asset reported
    quiet_table = {
        r.data["dataset"]: r.data["this_run"]
        for r in metadata_value(quiet[TENANT_SYNC_KEY], "datasets", dg.TableMetadataValue).records
    }
    assert set(quiet_table.values()) == {"unchanged"} and set(quiet_table) == set(SERVED)

    # Three customers changed: their raw asset and the hub table built from it, and nothing else.
    assert set(changed) == summaries | {raw_asset_key(CUSTOMERS), hub_asset_key(hub("customers"))}
    assert {e.asset_key for e in changed_checks} == {raw_asset_key(CUSTOMERS), hub_asset_key(hub("customers"))}
