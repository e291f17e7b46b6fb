"""The tenant sync through Dagster into SQLite and PostgreSQL, row for row; what a sync that finds
nothing new costs in events; skipped, disabled and failing datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from st_pipeline.defs.alerting import AlertingResource, run_failure_alert_sensor
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME, add_tenant_partition
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, raw_asset_key
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.defs.sensors import abandoned_run_sensor
from st_pipeline.defs.tenant_sync import tenant_sync
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.crypto import generate_key
from st_pipeline.tenants.endpoint_selection import EndpointSelection
from st_pipeline.warehouse.locks import tenant_lock
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import raw_table, sync_log_table
from st_pipeline_tests.alerts.conftest import HttpReceiver
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A, TENANT_B, point_at_simulator
from st_pipeline_tests.killing import KILL_AT_VARIABLE
from st_pipeline_tests.support import (
    REPO_ROOT,
    TEST_CHANGE,
    assert_warehouse_equals_ground_truth,
    check_evaluations,
    deployment,
    materialize_tenant,
    metadata_value,
    observations,
    open_registry,
    prepared_warehouse,
    raw_materializations,
    register_tenants,
    run_events,
    step_failure_error,
    stored_run,
    tenant_sync_metadata,
)


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
        metadata = raw_materializations(instance, result.run_id)
        summary = tenant_sync_metadata(instance, result.run_id)
    rows = assert_warehouse_equals_ground_truth(warehouse_url, api_env, TENANT_A.tenant_id)
    extracted = load_catalogue().extracted_datasets()
    assert set(metadata) == {raw_asset_key(d) for d in extracted}
    customers = metadata[raw_asset_key(load_catalogue().dataset("crm/customers"))]
    truth = api_env.ground_truth(TENANT_A.tenant_id, "crm/customers")
    assert customers["records"].value == len(truth) == customers["dagster/row_count"].value
    assert customers["rows_written"].value == len(truth)
    assert customers["dagster/table_name"].value == "raw_crm_customers"
    assert metadata_value(customers, "pages", int) >= 2 and customers["requests"].value == customers["pages"].value
    assert metadata_value(customers, "duration_s", float) >= 0
    assert sum(metadata_value(m, "records", int) for m in metadata.values()) == rows
    assert (summary["datasets_checked"].value, summary["datasets_changed"].value) == (len(extracted), len(extracted))
    assert summary["records_received"].value == rows
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
        assert instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME) == [
            str(TENANT_B.tenant_id),
            str(TENANT_A.tenant_id),
        ]
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
    assert url.database is not None, postgres_url
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
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 21600
        queue = instance.get_concurrency_config().run_queue_config  # what the daemon's run queue reads
        assert queue is not None
        assert queue.tag_concurrency_limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert queue.max_concurrent_runs == 8
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure  # only crashed run workers
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
            sa.text(
                "select data_type from information_schema.columns where table_name = :t and column_name = 'payload'"
            ),
            {"t": table.name},
        ).scalar_one()
        leaked = conn.execute(
            sa.text(f"select count(*) from {table.name} where payload::text like :canary"),
            {"canary": f"%{CANARY_SECRET}%"},
        ).scalar_one()
    engine.dispose()
    assert payload_type == "jsonb" and leaked == 0


def test_unregistered_tenant_fails_with_a_clear_message(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    with dg.instance_for_test() as instance:
        result = materialize_tenant(
            instance, 5555, registry_url, f"sqlite:///{local_env / 'w.db'}", raise_on_error=False
        )
    assert not result.success
    failure = step_failure_error(result.get_step_failure_events()[0])
    assert "tenant 5555 is not registered" in failure.message and "st-pipeline tenant add" in failure.message


def test_missing_scope_and_missing_module_skip_those_datasets_and_the_rest_syncs(
    local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """403 (scope not granted) and 404 (a module the tenant does not have): skipped, said once, run succeeds."""
    tenant = SimulatedTenant(tenant_id=8101, client_id="cid.noscope", client_secret="cs1.noscope-secret")
    config = SimulatorConfig(tenants=[tenant], seed=2, scale=0.02)
    catalogue = load_catalogue()
    payroll = [d for d in catalogue.extracted_datasets() if d.module == "payroll"]
    forms = [d for d in catalogue.extracted_datasets() if d.module == "forms"]
    denied = {scope for d in payroll for scope in d.extraction_endpoint.scopes}
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    register_tenants(registry_url, tenant)
    with Simulator(config) as sim:
        sim.deny_scopes(tenant.tenant_id, denied)
        sim.hide_modules(tenant.tenant_id, {"forms"})
        point_at_simulator(monkeypatch, sim)
        with dg.instance_for_test() as instance:
            result = materialize_tenant(instance, tenant.tenant_id, registry_url, warehouse_url)
            materialized = set(raw_materializations(instance, result.run_id))
            summary = tenant_sync_metadata(instance, result.run_id)
            warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 30]
            observed = _observations(instance, result.run_id)
            again = materialize_tenant(instance, tenant.tenant_id, registry_url, warehouse_url)
            observed_again = _observations(instance, again.run_id)
        others = [d for d in catalogue.extracted_datasets() if d.module not in ("payroll", "forms")]
        assert_warehouse_equals_ground_truth(warehouse_url, sim, tenant.tenant_id, others)
    assert result.success and again.success
    assert materialized == {raw_asset_key(d) for d in others}
    assert summary["datasets_not_granted"].value == len(payroll)
    assert all(d.key in metadata_value(summary, "not_granted", str) for d in payroll)
    assert summary["datasets_not_available"].value == len(forms)
    assert all(d.key in metadata_value(summary, "not_available", str) for d in forms)
    scope_warning, module_warning = sorted(warnings, key=lambda w: "404" in w)  # one line each per run
    assert f"{len(payroll)} datasets skipped" in scope_warning and "tenant test" in scope_warning
    assert f"{len(forms)} datasets skipped" in module_warning and "forms" in module_warning
    assert observed == {raw_asset_key(d): False for d in forms}  # said once ...
    assert observed_again == {}  # ... not every hour
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                sa.select(sync_log_table.c.dataset, sync_log_table.c.status).where(
                    sync_log_table.c.run_id == result.run_id
                )
            )
            .tuples()
            .all()
        )
    engine.dispose()
    assert {statuses[d.key] for d in payroll} == {"skipped"}
    assert {statuses[d.key] for d in forms} == {"unavailable"}
    assert {statuses[d.key] for d in others} == {"succeeded"}


def _observations(instance: dg.DagsterInstance, run_id: str) -> dict[dg.AssetKey, object]:
    """The raw assets a run observed, with their ``available`` metadata."""
    return {o.asset_key: o.metadata["available"].value for o in observations(instance, run_id)}


def test_disabled_endpoints_are_skipped(local_env: Path, api_env: Simulator) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    register_tenants(registry_url, TENANT_A)
    registry = open_registry(registry_url)
    selection = EndpointSelection(registry.engine)
    selection.set(
        "payroll", enabled=False, tenant_id=TENANT_A.tenant_id, reason="scopes not granted", change=TEST_CHANGE
    )
    selection.set("crm/leads", enabled=False, change=TEST_CHANGE)
    registry.close()
    with dg.instance_for_test() as instance:
        result = materialize_tenant(instance, TENANT_A.tenant_id, registry_url, warehouse_url)
        materialized = set(raw_materializations(instance, result.run_id))
        summary = tenant_sync_metadata(instance, result.run_id)
    assert result.success
    expected = [d for d in load_catalogue().extracted_datasets() if d.module != "payroll" and d.key != "crm/leads"]
    assert materialized == {raw_asset_key(d) for d in expected}
    assert summary["datasets_disabled"].value == len(load_catalogue().extracted_datasets()) - len(expected)


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
            [tenant_sync],
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
    message = step_failure_error(result.get_step_failure_events()[0]).message
    assert "schema revision 0001" in message and "st-pipeline db upgrade" in message


def test_a_sync_that_finds_nothing_new_is_cheap_and_changes_are_reported(
    local_env: Path, fresh_simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First sync: every dataset reported. Nothing new: no raw materialization, no check result, a
    handful of events, the tenant sync's own record. A change: only that dataset. A full refresh:
    every dataset again, with what it verified."""
    sim = fresh_simulator
    point_at_simulator(monkeypatch, sim)
    register_tenants(None, TENANT_A)
    core = list(CORE_DATASETS)
    customers_key = raw_asset_key(load_catalogue().dataset("crm/customers"))
    truth = len(sim.ground_truth(TENANT_A.tenant_id, "crm/customers"))

    def sync(
        instance: dg.DagsterInstance, **config: object
    ) -> tuple[
        dict[dg.AssetKey, Mapping[str, dg.MetadataValue]],
        Mapping[str, dg.MetadataValue],
        list[dg.AssetCheckEvaluation],
        int,
    ]:
        result = materialize_tenant(instance, TENANT_A.tenant_id, datasets=core, config=config)
        assert result.success
        run = result.run_id
        return (
            raw_materializations(instance, run),
            tenant_sync_metadata(instance, run),
            check_evaluations(instance, run),
            len(instance.all_logs(run)),
        )

    with dg.instance_for_test() as instance:
        first, first_summary, first_checks, _ = sync(instance)
        quiet, quiet_summary, quiet_checks, quiet_events = sync(instance)
        updated = sim.apply_changes(TENANT_A.tenant_id, "crm/customers", updated=2)["updated"]
        changed, changed_summary, changed_checks, _ = sync(instance)
        refreshed, _, _, _ = sync(instance, full_refresh=True)
    assert set(first) == {raw_asset_key(load_catalogue().dataset(k)) for k in core} and len(first_checks) > len(core)
    assert first[customers_key]["records"].value == truth == first[customers_key]["dagster/row_count"].value
    assert first[customers_key]["sync"].value == "from the beginning"

    assert quiet == {} and quiet_checks == []
    assert quiet_summary["datasets_checked"].value == len(core) and quiet_summary["datasets_changed"].value == 0
    assert quiet_summary["rows_written"].value == 0
    assert quiet_events <= 20  # run start and end, one step, the tenant sync's materialization, one log line

    assert set(changed) == {customers_key} and changed_summary["datasets_changed"].value == 1
    customers = changed[customers_key]
    assert customers["rows_written"].value == len(updated) == 2
    assert (
        customers["sync"].value == "incremental"
        and customers["cursor_before"].value == first[customers_key]["cursor"].value
    )
    assert customers["dagster/row_count"].value == truth  # updates add no rows
    assert {e.asset_key for e in changed_checks} == {customers_key}

    assert set(refreshed) == set(first)
    assert refreshed[customers_key]["records"].value == truth and refreshed[customers_key]["rows_written"].value == 0
    assert refreshed[customers_key]["dagster/row_count"].value == truth


def test_a_run_without_the_right_key_fails_naming_the_tenant_and_the_variable(
    local_env: Path, api_env: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_tenants(None, TENANT_A)
    monkeypatch.setenv("ST_PIPELINE_SECRET_KEYS", generate_key())  # the old key dropped before rotating
    with dg.instance_for_test() as instance:
        result = materialize_tenant(instance, TENANT_A.tenant_id, raise_on_error=False, datasets=["crm/customers"])
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = step_failure_error(failure).message
    assert f"tenant {TENANT_A.tenant_id}'s stored client secret cannot be decrypted" in message
    assert "ST_PIPELINE_SECRET_KEYS" in message and "keys rotate" not in message
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None and user_failure.metadata["error_type"].value == "SecretKeyError"


def test_two_syncs_of_one_tenant_never_overlap(local_env: Path, api_env: Simulator) -> None:
    """While a run holds the tenant, another is refused with who holds it, and writes nothing."""
    register_tenants(None, TENANT_A)
    warehouse = prepared_warehouse(f"sqlite:///{local_env / 'warehouse.db'}", [])
    with dg.instance_for_test() as instance:
        with tenant_lock(warehouse, TENANT_A.tenant_id, "the-running-sync"):
            refused = materialize_tenant(
                instance,
                TENANT_A.tenant_id,
                raise_on_error=False,
                datasets=["crm/customers"],
                config={"lock_wait_s": 0},
            )
        after = materialize_tenant(instance, TENANT_A.tenant_id, datasets=["crm/customers"])
    assert not refused.success and after.success
    refusal = refused.get_step_failure_events()[0]
    assert f"tenant {TENANT_A.tenant_id} is being synced by run the-running-sync" in step_failure_error(refusal).message
    user_failure = refusal.step_failure_data.user_failure_data
    assert user_failure is not None and user_failure.metadata["error_type"].value == "TenantBusyError"
    with warehouse.connect() as conn:
        runs = set(conn.execute(sa.select(sync_log_table.c.run_id)).scalars())
    warehouse.dispose()
    assert runs == {after.run_id}  # the refused run logged nothing and wrote nothing


def test_a_killed_sync_is_marked_failed_alerts_and_the_next_one_runs(
    local_env: Path, api_env: Simulator, tmp_path: Path, receiver: HttpReceiver
) -> None:
    """`dagster asset materialize` killed mid-sync: nobody tells Dagster, the run stays STARTED. Its
    lock went with it, so the abandoned-run sensor fails it; the failure alerts; the next sync runs."""
    register_tenants(None, TENANT_A)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), KILL_AT_VARIABLE: "page_committed:2"}
    prepared_warehouse(f"sqlite:///{local_env / 'warehouse.db'}", []).dispose()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        add_tenant_partition(instance, TENANT_A.tenant_id)
    killed = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "st_pipeline_tests.killing_location",  # the project's code location, dying at that point
            "--select",
            TENANT_SYNC_KEY.to_user_string(),
            "--partition",
            str(TENANT_A.tenant_id),
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    resources = {
        "tenant_registry": TenantRegistryResource(),
        "warehouse": WarehouseResource(),
        "alerting": AlertingResource(),
    }
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            abandoned_run_sensor(context)
        run = stored_run(instance, run.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        failure = run_events(instance, run.run_id, dg.DagsterEventType.RUN_FAILURE)[0]
        with dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert_sensor",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources=resources,
        ).for_run_failure() as context:
            run_failure_alert_sensor(context)
        [alert] = [json.loads(r.body) for r in receiver.drain()]
        assert alert["kind"] == "run_failure" and "the process of this run is gone" in alert["reason"]
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            assert isinstance(abandoned_run_sensor(context), dg.SkipReason)  # nothing left to fail
        next_sync = materialize_tenant(instance, TENANT_A.tenant_id)
        assert next_sync.success
    assert_warehouse_equals_ground_truth(f"sqlite:///{local_env / 'warehouse.db'}", api_env, TENANT_A.tenant_id)
    engine = sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}")
    with engine.connect() as conn:
        killed_rows = set(
            conn.execute(sa.select(sync_log_table.c.status).where(sync_log_table.c.run_id == run.run_id)).scalars()
        )
    # What the killed run finished stays succeeded; what it left unfinished is marked interrupted.
    engine.dispose()
    assert "interrupted" in killed_rows and killed_rows <= {"interrupted", "succeeded"}
