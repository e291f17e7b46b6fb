"""A tenant's two declared reports backfilled over a date range from the command line a user runs
(`dagster job backfill`), each day a run of its own launched by the instance: the stored rows equal
the simulator's report for each day, fetched over HTTP here, and backfilling a day again changes
nothing. The tenant keeps Chicago's calendar, so each day is the tenant's, not UTC's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.reports import report_partition_key
from st_pipeline.settings import load_settings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.registry import Change, TenantRegistry
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.simulator.conftest import authorize
from st_pipeline_tests.support import REPO_ROOT, check_evaluations, register_tenants

BIN = Path(sys.executable).parent
TENANT = SimulatedTenant(9611, "cid.backfill", "cs1.backfill-secret", time_zone="America/Chicago")
DECLARED = {"bu_performance": ("operations", 1001), "technician_hours": ("custom", 1005)}
SOURCES = (
    "jpm/jobs",
    "jpm/job-types",
    "accounting/invoices",
    "sales/estimates",
    "settings/business-units",
    "settings/technicians",
    "jpm/appointments",
    "dispatch/appointment-assignments",
    "dispatch/technician-shifts",
)
DEADLINE_S = 240


@pytest.fixture()
def backfill_simulator() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(tenants=[TENANT], seed=31, scale=0.5, datasets=SOURCES)) as simulator:
        yield simulator


def _served_rows(simulator: Simulator, report: tuple[str, int], day: date) -> list[dict[str, Any]]:
    """The simulator's report for one day, read over HTTP page by page, as {field: value} rows."""
    category, report_id = report
    path = f"/reporting/v2/tenant/{TENANT.tenant_id}/report-category/{category}/reports/{report_id}/data"
    body = {"parameters": [{"name": "From", "value": day.isoformat()}, {"name": "To", "value": day.isoformat()}]}
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=simulator.url, timeout=10) as http:
        authorize(http, simulator, TENANT)
        for page in range(1, 20):
            answer = http.post(path, params={"page": page, "pageSize": 3}, json=body)
            assert answer.status_code == 200, answer.text
            decoded = json.loads(answer.content, parse_float=Decimal)
            names = [field["name"] for field in decoded["fields"]]
            rows += [dict(zip(names, values, strict=True)) for values in decoded["data"]]
            if not decoded["hasMore"]:
                return rows
    pytest.fail("the simulator's report did not end within 20 pages")


def _stored_rows(engine: sa.Engine, name: str, day: date) -> list[tuple[int, dict[str, Any]]]:
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text(
                f"SELECT row_number, payload FROM raw_report_{name} WHERE tenant_id = :t AND period_start = :d "
                "AND period_end = :d ORDER BY row_number"
            ),
            {"t": TENANT.tenant_id, "d": day},
        ).all()
    return [(number, json.loads(p, parse_float=Decimal) if isinstance(p, str) else p) for number, p in stored]


def _backfill(env: dict[str, str], days: list[date]) -> None:
    keys = ",".join(report_partition_key(TENANT.tenant_id, day) for day in days)
    done = subprocess.run(
        [str(BIN / "dagster"), "job", "backfill", "-m", "st_pipeline.definitions", "-j", "servicetitan_reports"]
        + ["--partitions", keys, "--noprompt"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])


def _finished_runs(instance: dg.DagsterInstance, expected: int) -> list[dg.DagsterRun]:
    """The backfill runs, once ``expected`` of them are finished (they run in their own processes)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="servicetitan_reports"))
        if len(runs) >= expected and all(run.is_finished for run in runs):
            return list(runs)
        time.sleep(0.5)  # polling other processes' progress, not synchronising threads
    pytest.fail(f"the backfill's {expected} runs did not finish within {DEADLINE_S} s")


def test_two_reports_backfilled_over_a_date_range_equal_the_simulators_and_a_second_backfill_changes_nothing(
    local_env: Path, backfill_simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at_simulator(monkeypatch, backfill_simulator)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # Runs launched as they are submitted (no daemon to dequeue them), each in a process of its own.
    (dagster_home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "telemetry:\n  enabled: false\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    register_tenants(None, TENANT)
    settings = load_settings()
    registry = TenantRegistry.open(settings)
    registry.set_time_zone(TENANT.tenant_id, TENANT.time_zone, change=Change("test"))
    for name, (category, report_id) in DECLARED.items():
        registry.declare_report(TENANT.tenant_id, name, category, report_id, change=Change("test"))
    registry.close()
    # Three consecutive days on which both reports have rows (the simulator's history ends 2025-06-01).
    days = [date(2025, 5, 21) + timedelta(days=n) for n in range(3)]
    env = {**os.environ}

    with dg.DagsterInstance.get() as instance:
        add_tenant_partition(instance, TENANT.tenant_id)
        _backfill(env, days)
        runs = _finished_runs(instance, len(days))
        assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * len(days)
        assert {run.tags.get("dagster/partition") for run in runs} == {
            report_partition_key(TENANT.tenant_id, day) for day in days
        }
        assert len({run.tags.get("dagster/backfill") for run in runs} - {None}) == 1  # launched as one backfill
        # Before any build of the tenant's marts, the BU Performance reconciliation warns that it has nothing to
        # compare; the custom report has no mapping.
        for run in runs:
            evaluations = {e.asset_key.path[-1]: e for e in check_evaluations(instance, run.run_id)}
            assert set(evaluations) == set(DECLARED)
            bu = evaluations["bu_performance"]
            assert not bu.passed and bu.severity == dg.AssetCheckSeverity.WARN
            assert bu.metadata["marts_not_built"].value == "mart_job_conversion, mart_revenue_by_business_unit"
            assert evaluations["technician_hours"].passed

        engine = sa.create_engine(settings.warehouse_database_url)
        try:
            stored = {(name, day): _stored_rows(engine, name, day) for name in DECLARED for day in days}
            backfill_simulator.advance_clock(120)  # past the report limit's window: the test's reads pass
            for (name, day), rows in stored.items():
                served = _served_rows(backfill_simulator, DECLARED[name], day)
                assert [payload for _, payload in rows] == served, (name, day)
                assert [number for number, _ in rows] == list(range(1, len(served) + 1))
            assert all(stored[("technician_hours", day)] for day in days)
            assert sum(len(rows) for rows in stored.values()) > 2 * len(days)

            # Backfilling a day again replaces its rows with the same rows.
            backfill_simulator.advance_clock(120)
            _backfill(env, days[1:2])
            again = _finished_runs(instance, len(days) + 1)
            assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in again)
            assert {(name, day): _stored_rows(engine, name, day) for name in DECLARED for day in days} == stored
        finally:
            engine.dispose()
