"""The freshness checks, run by their job after real syncs against the simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from st_pipeline.defs.alerting import AlertingResource, check_failure_alert_sensor
from st_pipeline.defs.freshness import FRESHNESS_CHECK, build_freshness_schedule, freshness_checks, freshness_job
from st_pipeline.defs.raw_assets import raw_asset_key
from st_pipeline.defs.resources import TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.endpoint_selection import EndpointSelection
from st_pipeline.tenants.tables import tenants_table
from st_pipeline.warehouse.tables import dataset_status_table
from st_pipeline_tests.alerts.conftest import HttpReceiver
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.support import (
    TEST_CHANGE,
    check_evaluations,
    materialize_tenant,
    open_registry,
    register_tenants,
)

OLD = SimulatedTenant(tenant_id=9801, client_id="cid.fresh-old", client_secret="cs1.fresh-old-secret")
NEW = SimulatedTenant(tenant_id=9802, client_id="cid.fresh-new", client_secret="cs1.fresh-new-secret")
SYNCED = ["crm/customers", "settings/technicians", "payroll/gross-pay-items"]


def _results(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    """Freshness evaluations of a run by dataset key."""
    dataset_of = {raw_asset_key(d): d.key for d in load_catalogue().extracted_datasets()}
    evaluations = check_evaluations(instance, run_id)
    return {dataset_of[ev.asset_key]: ev for ev in evaluations if ev.check_name == FRESHNESS_CHECK}


def test_freshness_checks_name_the_stale_tenants_and_do_not_alert_per_asset(
    local_env: Path, receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_url = f"sqlite:///{local_env / 'registry.db'}"
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    register_tenants(registry_url, OLD, NEW)
    registry = open_registry(registry_url)
    EndpointSelection(registry.engine).set(
        "crm", enabled=False, tenant_id=NEW.tenant_id, reason="not licensed", change=TEST_CHANGE
    )
    registry.close()
    config = SimulatorConfig(tenants=[OLD, NEW], seed=5, scale=0.02)
    with Simulator(config) as sim, dg.instance_for_test() as instance:
        sim.deny_scopes(OLD.tenant_id, {"tn.prl.grosspayitems:r"})
        point_at_simulator(monkeypatch, sim)
        assert materialize_tenant(instance, OLD.tenant_id, registry_url, warehouse_url, datasets=SYNCED).success

        # OLD registered 3 days ago; its customers last synced 2 days ago, its technicians just now.
        long_ago = datetime.now(UTC) - timedelta(days=3)
        registry_engine = sa.create_engine(registry_url)
        with registry_engine.begin() as conn:
            conn.execute(
                tenants_table.update().where(tenants_table.c.tenant_id == OLD.tenant_id).values(created_at=long_ago)
            )
        registry_engine.dispose()
        warehouse_engine = sa.create_engine(warehouse_url)
        status = dataset_status_table.c
        with warehouse_engine.begin() as conn:
            conn.execute(
                dataset_status_table.update()
                .where(status.dataset == "crm/customers")
                .values(last_success_at=long_ago + timedelta(days=1))
            )
        warehouse_engine.dispose()

        monkeypatch.setenv("ST_PIPELINE_FRESHNESS_SLA_HOURS", "6")
        defs = dg.Definitions(
            asset_checks=[freshness_checks],
            jobs=[freshness_job],
            resources={"tenant_registry": TenantRegistryResource(), "warehouse": WarehouseResource()},
        )
        run = defs.resolve_job_def(freshness_job.name).execute_in_process(instance=instance)
        assert run.success
        results = _results(instance, run.run_id)

        with dg.build_sensor_context(
            instance=instance, resources={"tenant_registry": TenantRegistryResource(), "alerting": AlertingResource()}
        ) as context:
            check_failure_alert_sensor(context)
        alerts = [json.loads(r.body) for r in receiver.drain()]

    assert len(results) == len(load_catalogue().extracted_datasets())
    customers = results["crm/customers"]
    assert not customers.passed and customers.severity == dg.AssetCheckSeverity.WARN
    assert customers.metadata["stale_tenants"].value == str(OLD.tenant_id)  # NEW has crm disabled
    assert customers.metadata["tenants_checked"].value == 1
    assert customers.description is not None and "last success" in customers.description
    technicians = results["settings/technicians"]
    assert technicians.passed and technicians.metadata["tenants_checked"].value == 2  # NEW: registered just now
    payroll = results["payroll/gross-pay-items"]  # not granted to OLD: left out, not stale
    assert payroll.passed and payroll.metadata["not_granted_tenants"].value == str(OLD.tenant_id)
    jobs = results["jpm/jobs"]  # never synced by OLD, registered 3 days ago
    assert not jobs.passed and jobs.metadata["stale_tenants"].value == str(OLD.tenant_id)
    assert jobs.description is not None and "never synced" in jobs.description
    assert not any(FRESHNESS_CHECK in alert["title"] for alert in alerts)


def test_the_freshness_schedule_targets_the_check_job() -> None:
    freshness_schedule = build_freshness_schedule("15 * * * *")
    assert freshness_schedule.job_name == freshness_job.name
    specs = list(freshness_checks.check_specs)
    assert {spec.asset_key for spec in specs} == {raw_asset_key(d) for d in load_catalogue().extracted_datasets()}
    assert all(spec.partitions_def is None for spec in specs)
