"""Schedules and sensors, evaluated with Dagster's test contexts against real runs, a real
registry, the simulator and a real local HTTP receiver for the alerts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from pydantic import SecretStr

from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.raw_assets import FULL_REFRESH_TAG
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import build_sync_schedule
from st_pipeline.defs.sensors import (
    AlertingResource,
    check_failure_alert_sensor,
    run_failure_alert_sensor,
    run_recovery_sensor,
    stale_tenant_sensor,
    tenant_onboarding_sensor,
)
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline_tests.alerts.conftest import HttpReceiver
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.support import TEST_CHANGE, materialize_tenant, open_registry

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
RESOURCES = {"tenant_registry": TenantRegistryResource(), "warehouse": WarehouseResource(), "alerting": AlertingResource()}


def _save(registry: TenantRegistry, tenant_id: int, enabled: bool = True) -> None:
    registry.add(tenant_id, f"tenant {tenant_id}", f"cid.{tenant_id}", SecretStr("cs1.x"), enabled=enabled,
                 change=TEST_CHANGE)


def test_sync_schedule_requests_one_run_per_ready_tenant(registry: TenantRegistry) -> None:
    for tenant_id, enabled in [(1, True), (2, False), (3, True), (4, True)]:
        _save(registry, tenant_id, enabled)
    registry.flag_needs_credentials(3, "invalid_client", change=TEST_CHANGE)
    tenant_sync_schedule = build_sync_schedule("0 * * * *")
    with dg.instance_for_test() as instance:
        for tenant_id in (1, 2, 3):
            add_tenant_partition(instance, tenant_id)  # 4 has no partition yet
        ticks = [datetime(2026, 11, 28, hour, tzinfo=UTC) for hour in (10, 11)]
        requests = []
        for tick in ticks:
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick,
                                           resources=RESOURCES) as context:
                requests.append(list(tenant_sync_schedule(context)))
    assert [[r.partition_key for r in tick] for tick in requests] == [["1"], ["1"]]
    assert requests[0][0].run_key != requests[1][0].run_key


def test_onboarding_sensor_adds_and_removes_partitions_and_requests_a_full_sync(registry: TenantRegistry) -> None:
    _save(registry, 11)
    _save(registry, 12, enabled=False)
    with dg.instance_for_test() as instance:
        add_tenant_partition(instance, 99)  # no longer registered
        with dg.build_sensor_context(instance=instance, resources=RESOURCES) as context:
            result = tenant_onboarding_sensor(context)
    added = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)]
    deleted = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)]
    assert [r.partition_keys for r in added] == [["11"]] and [r.partition_keys for r in deleted] == [["99"]]
    assert [(r.partition_key, r.tags[FULL_REFRESH_TAG]) for r in result.run_requests] == [("11", "true")]


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
        run = instance.get_run_by_id(failed.run_id)
        failure_event = next(e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE").dagster_event
        for _ in range(2):  # still broken the second time: no repeat
            with dg.build_run_status_sensor_context(
                sensor_name="run_failure_alert_sensor", dagster_event=failure_event, dagster_instance=instance,
                dagster_run=run, resources=RESOURCES,
            ).for_run_failure() as context:
                run_failure_alert_sensor(context)
        opened = [json.loads(r.body) for r in receiver.drain()]
        assert registry.needing_credentials().keys() == {TENANT.tenant_id}

        sim.restore_credentials(TENANT.tenant_id)
        registry.update_credentials(TENANT.tenant_id, SecretStr(CANARY), change=TEST_CHANGE)
        ok = materialize_tenant(instance, TENANT.tenant_id, datasets=SOME)
        ok_run = instance.get_run_by_id(ok.run_id)
        success_event = next(e for e in instance.all_logs(ok_run.run_id) if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_SUCCESS").dagster_event
        with dg.build_run_status_sensor_context(
            sensor_name="run_recovery_sensor", dagster_event=success_event, dagster_instance=instance,
            dagster_run=ok_run, resources=RESOURCES,
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
        assert materialize_tenant(instance, TENANT.tenant_id, warehouse_url=f"sqlite:///{local_env / 'a.db'}",
                                  datasets=SOME).success

        def evaluate(cursor: str | None) -> str | None:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES) as context:
                check_failure_alert_sensor(context)
                return context.cursor

        cursor = evaluate(None)
        first = [json.loads(r.body) for r in receiver.drain()]
        assert evaluate(cursor) == cursor and receiver.drain() == []  # nothing new, nothing sent
        assert cursor is not None
        sim.misbehave(TENANT.tenant_id, "dispatch/zones", total_count_offset=0)
        assert materialize_tenant(instance, TENANT.tenant_id, warehouse_url=f"sqlite:///{local_env / 'b.db'}",
                                  datasets=SOME).success
        evaluate(cursor)
        second = [json.loads(r.body) for r in receiver.drain()]
    assert [(a["event"], a["kind"]) for a in first] == [("incident_opened", "check_failure")]
    assert "count_matches_total" in first[0]["title"] and first[0]["asset"] == "servicetitan/raw/dispatch/zones"
    assert [(a["event"], a["kind"]) for a in second] == [("incident_resolved", "check_failure")]


def test_stale_tenant_alert_and_recovery(
    local_env: Path, registry: TenantRegistry, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from st_pipeline.warehouse.schema import upgrade
    import sqlalchemy as sa

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
