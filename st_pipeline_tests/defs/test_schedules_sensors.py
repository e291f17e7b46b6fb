"""Schedules and sensors, evaluated with Dagster's test contexts against real runs, a real
registry, the simulator and a real local HTTP receiver for the alerts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from pydantic import SecretStr

from st_pipeline.defs.alerting import (
    AlertingResource,
    check_failure_alert_sensor,
    run_failure_alert_sensor,
    run_recovery_sensor,
    stale_tenant_sensor,
)
from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import build_sync_schedule
from st_pipeline.defs.sensors import tenant_onboarding_sensor
from st_pipeline.defs.tenant_sync import FULL_REFRESH_TAG
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline_tests.alerts.conftest import HttpReceiver
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.support import TEST_CHANGE, materialize_tenant, open_registry, run_events, stored_run

CANARY = "cs1.CANARY-sensor-secret-4471"
TENANT = SimulatedTenant(tenant_id=9701, client_id="cid.sensors", client_secret=CANARY)
SOME = ["crm/customers", "dispatch/zones"]


@pytest.fixture()
def registry(local_env: Path) -> Iterator[TenantRegistry]:
    """The deployment's registry (in the test's home), opened directly."""
    registry = open_registry()
    yield registry
    registry.close()


# What the sensors and schedules get: resources that open the deployment's databases per tick.
RESOURCES = {
    "tenant_registry": TenantRegistryResource(),
    "warehouse": WarehouseResource(),
    "alerting": AlertingResource(),
}


def _save(registry: TenantRegistry, tenant_id: int, enabled: bool = True) -> None:
    registry.add(
        tenant_id, f"tenant {tenant_id}", f"cid.{tenant_id}", SecretStr("cs1.x"), enabled=enabled, change=TEST_CHANGE
    )


def test_sync_schedule_requests_one_run_per_ready_tenant(registry: TenantRegistry) -> None:
    for tenant_id, enabled in [(1, True), (2, False), (3, True), (4, True)]:
        _save(registry, tenant_id, enabled)
    registry.flag_needs_credentials(3, "invalid_client", change=TEST_CHANGE)
    tenant_sync_schedule = build_sync_schedule("0 * * * *")
    with dg.instance_for_test() as instance:
        for tenant_id in (1, 2, 3):
            add_tenant_partition(instance, tenant_id)  # 4 has no partition yet
        ticks = [datetime(2026, 11, 28, hour, tzinfo=UTC) for hour in (10, 11)]
        requests: list[list[dg.RunRequest]] = []
        for tick in ticks:
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, resources=RESOURCES
            ) as context:
                evaluation = tenant_sync_schedule(context)
                assert isinstance(evaluation, Iterator), evaluation  # the schedule is a generator
                tick_requests = []
                for request in evaluation:
                    assert isinstance(request, dg.RunRequest), request
                    tick_requests.append(request)
            requests.append(tick_requests)
    assert [[r.partition_key for r in tick] for tick in requests] == [["1"], ["1"]]
    assert requests[0][0].run_key != requests[1][0].run_key


def test_onboarding_adds_new_tenants_and_never_deletes_a_partition(
    registry: TenantRegistry, receiver: HttpReceiver
) -> None:
    _save(registry, 11)
    _save(registry, 12, enabled=False)
    _save(registry, 13)
    with dg.instance_for_test() as instance:
        add_tenant_partition(instance, 13)
        add_tenant_partition(instance, 99)  # not registered (removed without DAGSTER_HOME): kept
        with dg.build_sensor_context(instance=instance, resources=RESOURCES) as context:
            result = tenant_onboarding_sensor(context)
    assert isinstance(result, dg.SensorResult), result
    assert result.dynamic_partitions_requests is not None and result.run_requests is not None
    added = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)]
    deleted = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)]
    assert [r.partition_keys for r in added] == [["11"]] and deleted == []
    assert [(r.partition_key, r.tags[FULL_REFRESH_TAG]) for r in result.run_requests] == [("11", "true")]
    assert receiver.drain() == []


def test_a_registry_listing_far_fewer_tenants_alerts_once_and_changes_nothing(
    local_env: Path, registry: TenantRegistry, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tenant_id in (21, 22, 23, 24):
        _save(registry, tenant_id)
    with dg.instance_for_test() as instance:
        for tenant_id in (21, 22, 23, 24):
            add_tenant_partition(instance, tenant_id)

        def tick() -> dg.SensorResult:
            with dg.build_sensor_context(instance=instance, resources=RESOURCES) as context:
                result = tenant_onboarding_sensor(context)
            assert isinstance(result, dg.SensorResult), result
            return result

        # Every process of the deployment pointed at an empty registry by mistake.
        monkeypatch.setenv("ST_PIPELINE_REGISTRY_URL", f"sqlite:///{local_env / 'empty-registry.db'}")
        monkeypatch.setenv("ST_PIPELINE_WAREHOUSE_URL", f"sqlite:///{local_env / 'warehouse.db'}")
        broken = [tick(), tick()]
        opened = [json.loads(r.body) for r in receiver.drain()]
        monkeypatch.delenv("ST_PIPELINE_REGISTRY_URL")
        monkeypatch.delenv("ST_PIPELINE_WAREHOUSE_URL")
        healthy = tick()
        partitions = instance.get_dynamic_partitions("tenants")
    assert all(not r.dynamic_partitions_requests and not r.run_requests for r in [*broken, healthy])
    assert partitions == ["21", "22", "23", "24"]
    # (The incident is recorded in the registry database the sensor could reach: the wrong one.)
    assert [(a["kind"], a["event"]) for a in opened] == [("registry_shrank", "incident_opened")]
    assert (
        "0 tenants for 4 tenant partitions" in opened[0]["title"] and "ST_PIPELINE_REGISTRY_URL" in opened[0]["reason"]
    )


def test_a_code_server_outside_local_mode_without_the_registry_refuses_to_start(local_env: Path) -> None:
    env = {
        **os.environ,
        "ST_PIPELINE_WAREHOUSE_URL": f"sqlite:///{local_env / 'warehouse.db'}",
        "DAGSTER_HOME": str(local_env),
    }
    (local_env / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    started = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "api",
            "grpc",
            "-m",
            "st_pipeline.definitions",
            "--socket",
            str(local_env / "grpc.sock"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert "ST_PIPELINE_REGISTRY_URL is not set but ST_PIPELINE_WAREHOUSE_URL is" in started.stderr
    assert not (local_env / "registry.db").exists()  # no empty registry was opened in its place


def test_run_failure_alerts_once_flags_credentials_and_recovers(
    local_env: Path, registry: TenantRegistry, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimulatorConfig(tenants=[TENANT], seed=3, scale=0.01)
    registry.add(TENANT.tenant_id, "Sensor Co", TENANT.client_id, SecretStr(CANARY), change=TEST_CHANGE)
    monkeypatch.setenv("ST_PIPELINE_UI_URL", "http://dagster.example.invalid")
    with Simulator(config) as sim, dg.instance_for_test() as instance:
        point_at_simulator(monkeypatch, sim)
        sim.revoke_credentials(TENANT.tenant_id)
        failed = materialize_tenant(instance, TENANT.tenant_id, raise_on_error=False, datasets=SOME)
        assert not failed.success
        run = stored_run(instance, failed.run_id)
        failure_event = run_events(instance, run.run_id, dg.DagsterEventType.RUN_FAILURE)[0]
        for _ in range(2):  # still broken the second time: no repeat
            with dg.build_run_status_sensor_context(
                sensor_name="run_failure_alert_sensor",
                dagster_event=failure_event,
                dagster_instance=instance,
                dagster_run=run,
                resources=RESOURCES,
            ).for_run_failure() as context:
                run_failure_alert_sensor(context)
        opened = [json.loads(r.body) for r in receiver.drain()]
        assert registry.needing_credentials().keys() == {TENANT.tenant_id}

        sim.restore_credentials(TENANT.tenant_id)
        registry.update_credentials(TENANT.tenant_id, SecretStr(CANARY), change=TEST_CHANGE)
        ok = materialize_tenant(instance, TENANT.tenant_id, datasets=SOME)
        ok_run = stored_run(instance, ok.run_id)
        success_event = run_events(instance, ok_run.run_id, dg.DagsterEventType.RUN_SUCCESS)[0]
        with dg.build_run_status_sensor_context(
            sensor_name="run_recovery_sensor",
            dagster_event=success_event,
            dagster_instance=instance,
            dagster_run=ok_run,
            resources=RESOURCES,
        ) as recovery:
            run_recovery_sensor(recovery)
        resolved = [json.loads(r.body) for r in receiver.drain()]

    assert sorted(a["kind"] for a in opened) == ["auth_failure", "run_failure"]
    assert all(a["event"] == "incident_opened" and a["tenant_id"] == TENANT.tenant_id for a in opened)
    run_alert = next(a for a in opened if a["kind"] == "run_failure")
    assert run_alert["link"] == f"http://dagster.example.invalid/runs/{failed.run_id}"
    assert "rejected client id" in run_alert["reason"]
    assert sorted(a["kind"] for a in resolved) == ["auth_failure", "run_failure"]
    assert all(a["event"] == "incident_resolved" for a in resolved)
    assert CANARY not in json.dumps(opened + resolved)


def test_failed_check_alerts_once_and_clears_when_it_passes(
    local_env: Path, registry: TenantRegistry, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimulatorConfig(tenants=[TENANT], seed=3, scale=0.02)
    registry.add(TENANT.tenant_id, "Sensor Co", TENANT.client_id, SecretStr(CANARY), change=TEST_CHANGE)
    with Simulator(config) as sim, dg.instance_for_test() as instance:
        point_at_simulator(monkeypatch, sim)
        sim.misbehave(TENANT.tenant_id, "dispatch/zones", total_count_offset=2)
        assert materialize_tenant(
            instance, TENANT.tenant_id, warehouse_url=f"sqlite:///{local_env / 'a.db'}", datasets=SOME
        ).success

        def evaluate(cursor: str | None) -> str | None:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES) as context:
                check_failure_alert_sensor(context)
                return context.cursor

        cursor = evaluate(None)
        first = [json.loads(r.body) for r in receiver.drain()]
        assert evaluate(cursor) == cursor and receiver.drain() == []  # nothing new, nothing sent
        assert cursor is not None
        sim.misbehave(TENANT.tenant_id, "dispatch/zones", total_count_offset=0)
        assert materialize_tenant(
            instance, TENANT.tenant_id, warehouse_url=f"sqlite:///{local_env / 'b.db'}", datasets=SOME
        ).success
        evaluate(cursor)
        second = [json.loads(r.body) for r in receiver.drain()]
    assert [(a["event"], a["kind"]) for a in first] == [("incident_opened", "check_failure")]
    assert first[0]["title"] == f"tenant {TENANT.tenant_id}: 1 checks failing on 1 assets"
    assert "servicetitan/raw/dispatch/zones: count_matches_total (WARN)" in first[0]["reason"]
    assert [(a["event"], a["kind"]) for a in second] == [("incident_resolved", "check_failure")]


def test_stale_tenant_alert_and_recovery(
    local_env: Path, registry: TenantRegistry, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from st_pipeline.warehouse.schema import upgrade

    upgrade(sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}"))
    _save(registry, 21)
    with dg.instance_for_test() as instance:

        def evaluate() -> None:
            with dg.build_sensor_context(instance=instance, resources=RESOURCES) as context:
                stale_tenant_sensor(context)

        monkeypatch.setenv("ST_PIPELINE_FRESHNESS_SLA_HOURS", "0")
        evaluate()
        evaluate()
        opened = [json.loads(r.body) for r in receiver.drain()]
        monkeypatch.setenv("ST_PIPELINE_FRESHNESS_SLA_HOURS", "24")
        evaluate()
        resolved = [json.loads(r.body) for r in receiver.drain()]
    assert [(a["kind"], a["tenant_id"]) for a in opened] == [("stale_tenant", 21)]
    assert "never synced" in opened[0]["reason"]
    assert [a["event"] for a in resolved] == ["incident_resolved"]


def test_datasets_not_granted_or_not_available_alert_once_per_tenant(
    local_env: Path, registry: TenantRegistry, receiver: HttpReceiver
) -> None:
    import sqlalchemy as sa

    from st_pipeline.warehouse.schema import upgrade
    from st_pipeline.warehouse.tables import dataset_status_table

    engine = sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}")
    upgrade(engine)
    _save(registry, 31)
    payroll = [d.key for d in load_catalogue().extracted_datasets() if d.module == "payroll"]
    forms = [d.key for d in load_catalogue().extracted_datasets() if d.module == "forms"]
    now = datetime.now(UTC)

    def statuses(payroll_status: str, forms_status: str) -> None:
        with engine.begin() as conn:
            conn.execute(dataset_status_table.delete())
            conn.execute(
                dataset_status_table.insert(),
                [
                    {
                        "tenant_id": 31,
                        "dataset": key,
                        "row_count": 0,
                        "last_status": status,
                        "last_ended_at": now,
                        "last_success_at": now,
                    }
                    for keys, status in ((payroll, payroll_status), (forms, forms_status))
                    for key in keys
                ],
            )

    with dg.instance_for_test() as instance:

        def evaluate() -> None:
            with dg.build_sensor_context(instance=instance, resources=RESOURCES) as context:
                stale_tenant_sensor(context)

        # The tenant's admin withdrew the payroll scopes; the tenant does not have the forms module.
        statuses("skipped", "unavailable")
        evaluate()
        evaluate()
        opened = sorted((json.loads(r.body) for r in receiver.drain()), key=lambda a: a["kind"])
        statuses("succeeded", "succeeded")
        evaluate()
        resolved = sorted((json.loads(r.body) for r in receiver.drain()), key=lambda a: a["kind"])
    engine.dispose()
    module, scope = opened  # one each, although the sensor ran twice
    assert scope["kind"] == "scope_missing" and scope["title"].endswith(f"{len(payroll)} datasets not granted")
    assert all(key in scope["reason"] for key in payroll[:5]) and "tenant test --tenant 31" in scope["reason"]
    assert module["kind"] == "module_missing" and module["title"].endswith("does not have the modules forms")
    assert all(key in module["reason"] for key in forms[:5]) and "404" in module["reason"]
    assert [(a["kind"], a["event"]) for a in resolved] == [
        ("module_missing", "incident_resolved"),
        ("scope_missing", "incident_resolved"),
    ]


def test_fifty_failing_checks_of_one_tenant_make_one_alert(
    local_env: Path, registry: TenantRegistry, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A systemic fault (a wrong totalCount on every list): one message listing the checks, not 50."""
    lists = [d.key for d in load_catalogue().extracted_datasets() if d.extraction_endpoint.kind == "list"][:50]
    config = SimulatorConfig(tenants=[TENANT], seed=8, scale=0.01, datasets=tuple(lists))
    registry.add(TENANT.tenant_id, "Sensor Co", TENANT.client_id, SecretStr(CANARY), change=TEST_CHANGE)
    with Simulator(config) as sim, dg.instance_for_test() as instance:
        point_at_simulator(monkeypatch, sim)
        for dataset in lists:
            sim.misbehave(TENANT.tenant_id, dataset, total_count_offset=1)
        assert materialize_tenant(instance, TENANT.tenant_id, datasets=lists).success

        def evaluate(cursor: str | None) -> str | None:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES) as context:
                check_failure_alert_sensor(context)
                return context.cursor

        cursor = evaluate(None)
        opened = [json.loads(r.body) for r in receiver.drain()]
        for dataset in lists:
            sim.misbehave(TENANT.tenant_id, dataset, total_count_offset=0)
        assert materialize_tenant(instance, TENANT.tenant_id, datasets=lists, config={"full_refresh": True}).success
        evaluate(cursor)
        resolved = [json.loads(r.body) for r in receiver.drain()]
    assert len(lists) == 50
    [alert] = opened
    assert alert["title"] == f"tenant {TENANT.tenant_id}: 50 checks failing on 50 assets"
    assert alert["reason"].count("count_matches_total (WARN)") == 20 and alert["reason"].endswith("- and 30 more")
    assert [a["event"] for a in resolved] == ["incident_resolved"]


def test_the_maintenance_job_applies_the_sync_log_retention(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from st_pipeline.defs.maintenance import maintenance_job
    from st_pipeline.warehouse.schema import upgrade
    from st_pipeline.warehouse.tables import sync_log_table

    engine = sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}")
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sync_log_table.insert(),
            [
                {
                    "run_id": f"r{age}",
                    "tenant_id": 1,
                    "dataset": "crm/customers",
                    "status": "succeeded",
                    "started_at": now - timedelta(days=age),
                }
                for age in (1, 29, 31, 200)
            ],
        )
    monkeypatch.setenv("ST_PIPELINE_SYNC_LOG_RETENTION_DAYS", "30")
    with dg.instance_for_test() as instance:
        result = maintenance_job.execute_in_process(instance=instance, resources={"warehouse": WarehouseResource()})
    with engine.connect() as conn:
        kept = sorted(conn.execute(sa.select(sync_log_table.c.run_id)).scalars())
    engine.dispose()
    assert result.success and result.output_for_node("prune_sync_log") == 2
    assert kept == ["r1", "r29"]


def test_run_retention_deletes_finished_runs_and_their_event_logs_only(local_env: Path) -> None:
    from st_pipeline.defs.maintenance import prune_runs

    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def tiny() -> None:
        noop()

    with dg.instance_for_test() as instance:
        finished = [tiny.execute_in_process(instance=instance).run_id for _ in range(3)]
        queued = instance.create_run_for_job(tiny, status=dg.DagsterRunStatus.NOT_STARTED).run_id
        created = {r.dagster_run.run_id: r.create_timestamp for r in instance.get_run_records()}
        assert prune_runs(instance, min(created.values()) - timedelta(seconds=1)) == 0  # none that old
        cutoff = max(created.values()) + timedelta(seconds=1)
        assert prune_runs(instance, cutoff, keep_run_id=finished[0]) == 2
        left = {r.run_id for r in instance.get_runs()}
        assert left == {finished[0], queued}  # the kept run and the unfinished one
        assert instance.all_logs(finished[1]) == [] and instance.all_logs(finished[0]) != []
