"""Asset checks: by direct evaluation, and through real materializations against the simulator."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from st_pipeline.defs.checks import CURSOR_CHECK, DUPLICATES_CHECK, SCHEMA_CHECK, TOTAL_CHECK, Judgement, Outcome, judge
from st_pipeline.defs.raw_assets import raw_asset_key
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.servicetitan.errors import StuckCursorError
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import ExtractResult
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.support import (
    check_evaluations,
    materialize_tenant,
    raw_materializations,
    register_tenants,
    step_failure_error,
)

CATALOGUE = load_catalogue()
CUSTOMERS, ZONES = CATALOGUE.dataset("crm/customers"), CATALOGUE.dataset("dispatch/zones")
TENANT = SimulatedTenant(tenant_id=9501, client_id="cid.checks", client_secret="cs1.checks-secret")


def _by_name(verdicts: list[Judgement]) -> dict[str, Judgement]:
    return {v.check_name: v for v in verdicts}


def _judge(dataset, **observed) -> dict[str, Judgement]:  # noqa: ANN001
    return _by_name(judge(dataset, Outcome.of(ExtractResult(dataset, **observed)), 0.01))


def test_direct_evaluation_severities() -> None:
    clean = _judge(CUSTOMERS, records=100)
    assert set(clean) == {SCHEMA_CHECK, DUPLICATES_CHECK, CURSOR_CHECK} and all(r.passed for r in clean.values())
    few = _judge(CUSTOMERS, records=1000, quarantined=3)
    assert not few[SCHEMA_CHECK].passed and few[SCHEMA_CHECK].severity == dg.AssetCheckSeverity.WARN
    many = _judge(CUSTOMERS, records=100, quarantined=5)
    assert not many[SCHEMA_CHECK].passed and many[SCHEMA_CHECK].severity == dg.AssetCheckSeverity.ERROR
    dupes = _judge(CUSTOMERS, records=10, duplicates=2)
    assert not dupes[DUPLICATES_CHECK].passed and dupes[DUPLICATES_CHECK].severity == dg.AssetCheckSeverity.WARN
    stuck = _judge(CUSTOMERS, error=StuckCursorError("stuck"))
    assert [(r.check_name, r.passed, r.severity) for r in stuck.values()] == [
        (CURSOR_CHECK, False, dg.AssetCheckSeverity.ERROR)
    ]
    wrong = _judge(ZONES, records=10, reported_total=12)[TOTAL_CHECK]
    assert not wrong.passed and wrong.description is not None and "reported 12" in wrong.description


@pytest.fixture()
def misbehaving(local_env: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    config = SimulatorConfig(
        tenants=[TENANT],
        seed=6,
        scale=0.05,
        export_batch_size=10,
        datasets=("crm/customers", "dispatch/zones", "crm/leads"),
    )
    with Simulator(config) as sim:
        point_at_simulator(monkeypatch, sim)
        registry_url = f"sqlite:///{local_env / 'registry.db'}"
        register_tenants(registry_url, TENANT)
        yield sim, registry_url, f"sqlite:///{local_env / 'warehouse.db'}"


def _run(
    registry_url: str, warehouse_url: str, keys: list[str], error_ratio: float = 0.01
) -> tuple[dg.ExecuteInProcessResult, dict, set[dg.AssetKey]]:
    """Sync ``keys`` of the tenant; the result, its check results by (resource, check), the raw assets reported."""
    with dg.instance_for_test() as instance:
        result = materialize_tenant(
            instance,
            TENANT.tenant_id,
            registry_url,
            warehouse_url,
            datasets=keys,
            raise_on_error=False,
            config={"quarantine_error_ratio": error_ratio},
        )
        evaluations = {(e.asset_key.path[-1], e.check_name): e for e in check_evaluations(instance, result.run_id)}
        materialized = set(raw_materializations(instance, result.run_id))
    return result, evaluations, materialized


def test_bad_records_fail_the_schema_check(misbehaving) -> None:  # noqa: ANN001
    sim, registry_url, warehouse_url = misbehaving
    ids = [r["id"] for r in sim.ground_truth(TENANT.tenant_id, "crm/customers")]
    sim.tamper_records(TENANT.tenant_id, "crm/customers", {i: (lambda r: r.update(createdById="x")) for i in ids[:1]})
    result, checks, _ = _run(registry_url, warehouse_url, ["crm/customers"], error_ratio=0.05)
    one = checks[("customers", SCHEMA_CHECK)]
    assert not one.passed and one.severity == dg.AssetCheckSeverity.WARN  # 1 of 50 is under 5%
    assert result.success and one.partition == str(TENANT.tenant_id)
    sim.tamper_records(TENANT.tenant_id, "crm/customers", {i: (lambda r: r.update(createdById="x")) for i in ids[:10]})
    fresh_warehouse = warehouse_url.replace("warehouse.db", "second.db")  # a full read again
    result, checks, _ = _run(registry_url, fresh_warehouse, ["crm/customers"])
    many = checks[("customers", SCHEMA_CHECK)]
    assert not many.passed and many.severity == dg.AssetCheckSeverity.ERROR
    assert not result.success  # an ERROR schema check fails the tenant's run
    failure = step_failure_error(result.get_step_failure_events()[0]).message
    assert "crm/customers: check schema_conformance failed (10 of 50 records quarantined" in failure


def test_wrong_total_warns(misbehaving) -> None:  # noqa: ANN001
    sim, registry_url, warehouse_url = misbehaving
    sim.misbehave(TENANT.tenant_id, "dispatch/zones", total_count_offset=3)
    result, checks, _ = _run(registry_url, warehouse_url, ["dispatch/zones"])
    check = checks[("zones", TOTAL_CHECK)]
    assert result.success and not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def test_stuck_feed_is_an_error_and_other_datasets_still_load(misbehaving) -> None:  # noqa: ANN001
    sim, registry_url, warehouse_url = misbehaving
    sim.misbehave(TENANT.tenant_id, "crm/customers", stuck_cursor=True)
    result, checks, materialized = _run(registry_url, warehouse_url, ["crm/customers", "crm/leads"])
    check = checks[("customers", CURSOR_CHECK)]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert not result.success
    assert materialized == {raw_asset_key(CATALOGUE.dataset("crm/leads"))}
