"""The marketing reports end to end: the campaign cost summary, Marketing Ads performance and attributed
leads of a tenant in Chicago read for a few days through Dagster from the simulator, each day equal to
the figures computed again here from the simulator's records; a re-read that replaces and never
duplicates; a malformed answer that fails its dataset with a clear error and keeps the stored rows; and
the daily schedule's trailing window of partitions."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.defs.marketing_reports import (
    ROWS_MATCH_SPEC,
    build_marketing_reports_schedule,
    marketing_report_assets,
    marketing_report_key,
)
from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.reports import report_partition_key
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.date_ranges import DATE_RANGE_DATASETS_BY_KEY
from st_pipeline.settings import load_settings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.simulator import marketing_reports as mr
from st_pipeline.tenants.registry import Change, TenantRegistry
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.support import check_evaluations

ZONE = "America/Chicago"
TENANT = SimulatedTenant(
    tenant_id=9701, client_id="cid.marketing", client_secret="cs1.marketing-secret", time_zone=ZONE
)
TABLES = {
    mr.COST_SUMMARY: "raw_marketing_campaign_cost_summary",
    mr.PERFORMANCE: "raw_marketingads_performance",
    mr.ATTRIBUTED_LEADS: "raw_marketingads_attributed_leads",
}
CHANGE = Change("test")


@pytest.fixture()
def marketing_simulator() -> Iterator[Simulator]:
    config = SimulatorConfig(tenants=[TENANT], seed=31, scale=0.4, datasets=mr.SOURCES)
    with Simulator(config) as simulator:
        yield simulator


def _utc_range(day: date) -> tuple[datetime, datetime]:
    """The day's two local midnights in Chicago, as UTC instants (computed here, not by the pipeline)."""
    zone = ZoneInfo(ZONE)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text[:23].rstrip("Z") + "+00:00") if "." in text else datetime.fromisoformat(text)


def _busiest_days(simulator: Simulator, count: int) -> list[date]:
    """The local days with most leads (calls, bookings, lead forms), latest first on ties."""
    days: Counter[date] = Counter()
    for key, field in ((mr.CALLS, "createdOn"), (mr.BOOKINGS, "createdOn"), (mr.LEADS, "createdOn")):
        for record in simulator.ground_truth(TENANT.tenant_id, key):
            days[_moment(record[field]).astimezone(ZoneInfo(ZONE)).date()] += 1
    return sorted(sorted(days, key=lambda d: (days[d], d), reverse=True)[:count])


def _stored(engine: sa.Engine, key: str, day: date) -> list[tuple[int, dict[str, Any], str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT row_number, payload, run_id FROM {TABLES[key]} WHERE tenant_id = :t AND period_start = :d "
                "AND period_end = :d ORDER BY row_number"
            ),
            {"t": TENANT.tenant_id, "d": day},
        ).all()
    return [(n, p if isinstance(p, dict) else json.loads(p), run_id) for n, p, run_id in rows]


def _payloads(engine: sa.Engine, key: str, day: date) -> list[dict[str, Any]]:
    return [payload for _, payload, _ in _stored(engine, key, day)]


def _expected(simulator: Simulator, key: str, day: date) -> list[dict[str, Any]]:
    """The simulator's figures for the day, as JSON would carry them."""
    records = simulator.marketing_reports_of(TENANT.tenant_id).records
    if key == mr.COST_SUMMARY:
        rows = mr.cost_summary(
            records, datetime.combine(day, time()), datetime.combine(day + timedelta(days=1), time())
        )
    elif key == mr.PERFORMANCE:
        rows = mr.performance(records, *_utc_range(day), "Campaign")
    else:
        rows = mr.attributed_leads(records, *_utc_range(day), None)
    return list(json.loads(json.dumps(mr.plain(rows))))


def _independent_costs(simulator: Simulator, day: date) -> list[dict[str, Any]]:
    """The cost summary of one day straight from the cost and campaign records: each campaign's daily cost."""
    names = {c["id"]: c["name"] for c in simulator.ground_truth(TENANT.tenant_id, mr.CAMPAIGNS)}
    costs = simulator.ground_truth(TENANT.tenant_id, mr.COSTS)
    return [
        {"campaignId": c["campaignId"], "campaignName": names[c["campaignId"]], "totalCost": float(c["dailyCost"])}
        for c in sorted(costs, key=lambda c: c["campaignId"])
        if (c["year"], c["month"]) == (day.year, day.month)
    ]


def _independent_calls(simulator: Simulator, day: date) -> list[int]:
    """The ids of the inbound calls with a campaign received on the day (Chicago), by time."""
    start, end = _utc_range(day)
    calls = [
        c
        for c in simulator.ground_truth(TENANT.tenant_id, mr.CALLS)
        if c["direction"] == "Inbound" and c.get("campaign") and start <= _moment(c["createdOn"]) < end
    ]
    return [c["id"] for c in sorted(calls, key=lambda c: (_moment(c["createdOn"]), c["id"]))]


def _register(settings_url: str | None = None) -> None:
    registry = TenantRegistry.open(load_settings())
    registry.add(
        TENANT.tenant_id, "marketing", TENANT.client_id, SecretStr(TENANT.client_secret), change=CHANGE, time_zone=ZONE
    )
    registry.close()


def _materialize(instance: dg.DagsterInstance, day: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        marketing_report_assets,
        partition_key=report_partition_key(TENANT.tenant_id, day),
        instance=instance,
        resources={
            "servicetitan": ServiceTitanResource(),
            "tenant_registry": TenantRegistryResource(),
            "warehouse": WarehouseResource(),
        },
        raise_on_error=False,
    )


def _row_counts(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    counts = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        counts[materialization.asset_key.to_user_string()] = int(
            str(materialization.metadata["dagster/row_count"].value)
        )
    return counts


def test_days_equal_the_simulators_figures_rereads_replace_and_a_malformed_answer_keeps_the_rows(
    local_env: Path, marketing_simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at_simulator(monkeypatch, marketing_simulator)
    _register()
    days = _busiest_days(marketing_simulator, 3)
    engine = sa.create_engine(load_settings().warehouse_database_url)
    try:
        with dg.instance_for_test() as instance:
            add_tenant_partition(instance, TENANT.tenant_id)
            for day in days:  # a backfill of three days: one run per partition
                result = _materialize(instance, day)
                assert result.success
                evaluations = check_evaluations(instance, result.run_id)
                assert [e.check_name for e in evaluations] == [ROWS_MATCH_SPEC] * 3
                assert all(e.passed for e in evaluations)
                counts = _row_counts(result)
                for key in TABLES:
                    stored = _payloads(engine, key, day)
                    assert stored == _expected(marketing_simulator, key, day), (key, day)
                    asset = marketing_report_key(DATE_RANGE_DATASETS_BY_KEY[key]).to_user_string()
                    assert counts[asset] == len(stored)
                # Independently of the simulator's figures: costs are the day's daily costs, calls the day's calls.
                assert _payloads(engine, mr.COST_SUMMARY, day) == _independent_costs(marketing_simulator, day)
                calls = [r["call"]["id"] for r in _payloads(engine, mr.ATTRIBUTED_LEADS, day) if r["leadType"] == 1]
                assert calls == _independent_calls(marketing_simulator, day)
                performance = _payloads(engine, mr.PERFORMANCE, day)
                assert sum(r["leadStats"]["leadCalls"] for r in performance) == len(calls)
            assert any(_payloads(engine, mr.ATTRIBUTED_LEADS, day) for day in days)
            assert any(r["digitalStats"]["cost"] > 0 for r in _payloads(engine, mr.PERFORMANCE, days[0]))

            # Re-reading a day replaces its rows: the same rows, as many, all written by the new run.
            before = {key: _stored(engine, key, days[0]) for key in TABLES}
            again = _materialize(instance, days[0])
            assert again.success
            for key in TABLES:
                after = _stored(engine, key, days[0])
                assert [(n, p) for n, p, _ in after] == [(n, p) for n, p, _ in before[key]]
                assert {run_id for _, _, run_id in after} <= {again.run_id}
            with engine.connect() as conn:
                total = conn.execute(sa.text(f"SELECT count(*) FROM {TABLES[mr.PERFORMANCE]}")).scalar_one()
            assert total == sum(len(_payloads(engine, mr.PERFORMANCE, day)) for day in days)

            # A malformed answer (a count that is text) fails that dataset only, says why, and keeps its rows.
            def damage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                rows[0]["digitalStats"]["clicks"] = "many"
                return rows

            marketing_simulator.damage_marketing_report(TENANT.tenant_id, mr.PERFORMANCE, damage)
            kept = _stored(engine, mr.PERFORMANCE, days[0])
            failed = _materialize(instance, days[0])
            marketing_simulator.damage_marketing_report(TENANT.tenant_id, mr.PERFORMANCE, None)
            performance_key = marketing_report_key(DATE_RANGE_DATASETS_BY_KEY[mr.PERFORMANCE])
            (check,) = [e for e in check_evaluations(instance, failed.run_id) if e.asset_key == performance_key]
            assert _stored(engine, mr.PERFORMANCE, days[0]) == kept
    finally:
        engine.dispose()
    assert not failed.success
    assert set(_row_counts(failed)) == {
        marketing_report_key(DATE_RANGE_DATASETS_BY_KEY[key]).to_user_string()
        for key in (mr.COST_SUMMARY, mr.ATTRIBUTED_LEADS)
    }
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error.message if failure.step_failure_data.error else "")
    assert "1 of" in message and "digitalStats.clicks" in message and "stored rows were kept" in message, message
    assert not check.passed and "digitalStats.clicks" in str(check.metadata["problem"].value)


def test_the_schedule_asks_for_each_enabled_tenants_trailing_days(local_env: Path) -> None:
    registry = TenantRegistry.open(load_settings())
    tenants = {  # tenant id: (time zone, enabled, has a partition)
        9711: (ZONE, True, True),
        9712: (None, True, True),
        9713: (None, True, False),
        9714: (None, False, True),
    }
    for tenant_id, (zone, enabled, _) in tenants.items():
        registry.add(
            tenant_id,
            f"t{tenant_id}",
            f"cid.{tenant_id}",
            SecretStr("cs1.x"),
            change=CHANGE,
            enabled=enabled,
            time_zone=zone,
        )
    registry.close()
    schedule = build_marketing_reports_schedule(3)
    at = datetime(2024, 3, 10, 3, 0, tzinfo=UTC)  # still the 9th in Chicago
    with dg.instance_for_test() as instance:
        for tenant_id, (_, _, partition) in tenants.items():
            if partition:
                add_tenant_partition(instance, tenant_id)
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=at, resources={"tenant_registry": TenantRegistryResource()}
        ) as context:
            evaluation = schedule(context)
    assert isinstance(evaluation, list)
    requests = [request for request in evaluation if isinstance(request, dg.RunRequest)]
    keys = [request.partition_key for request in requests]
    assert keys == [
        *(report_partition_key(9711, date(2024, 3, d)) for d in (8, 7, 6)),
        *(report_partition_key(9712, date(2024, 3, d)) for d in (9, 8, 7)),
    ]
    assert len({request.run_key for request in requests}) == len(requests)


def test_the_window_is_a_setting(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().marketing_report_window_days == 7
    monkeypatch.setenv("ST_PIPELINE_MARKETING_REPORT_WINDOW_DAYS", "3")
    assert load_settings().marketing_report_window_days == 3
    monkeypatch.setenv("ST_PIPELINE_MARKETING_REPORT_WINDOW_DAYS", "0")
    with pytest.raises(ValueError, match="ST_PIPELINE_MARKETING_REPORT_WINDOW_DAYS"):
        load_settings()


def test_decimal_figures_survive_json() -> None:
    """Costs of 4 places travel as JSON numbers that read back as the same decimals."""
    assert json.loads(json.dumps(mr.plain({"c": Decimal("137.6425")}))) == {"c": 137.6425}
