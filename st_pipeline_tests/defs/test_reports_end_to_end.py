"""Declared reports end to end: five reports of one tenant, one asset each, read for three days
through Dagster from the simulator's Reporting API under a per-report limit the runs exceed (the
pacer waits, the simulator answers no 429), every shipped mapping reconciled with its mart, a
re-run that changes nothing, a changed definition refused until the report is reset — and a
reconciliation that fails, naming the business unit, the day and both values, when one invoice
item's business unit changes in the mart's input only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from st_pipeline.cli import main
from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.reports import build_report_assets, report_asset_key, report_partition_key
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import load_settings
from st_pipeline.simulator import ReportField, SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.registry import Change, TenantRegistry
from st_pipeline.transform.build import build_tenant
from st_pipeline.transform.hubs import source_datasets
from st_pipeline.warehouse.loader import raw_rows, upsert_rows
from st_pipeline.warehouse.tables import raw_table
from st_pipeline_tests.conftest import point_at_simulator
from st_pipeline_tests.support import check_evaluations, prepared_warehouse, register_tenants, sync_and_build

TENANT = SimulatedTenant(tenant_id=9601, client_id="cid.reports", client_secret="cs1.reports-secret")
REPORTS = {  # declared name: (category, report id)
    "bu_performance": ("operations", 1001),
    "technician_performance": ("technician", 1002),
    "call_booking": ("marketing", 1003),
    "collections": ("accounting", 1004),
    "technician_hours": ("custom", 1005),
}
MAPPINGS = {
    "bu_performance_revenue",
    "bu_performance_conversion",
    "technician_performance",
    "call_booking",
    "collections",
}


# A stricter limit than ServiceTitan's, the simulator's and the resource's alike, and data pages of two
# rows: a read of a report with more than four rows takes three requests at once, so the pacer must wait.
LIMIT_REQUESTS, LIMIT_WINDOW_S = 2, 1.0
PAGE_ROWS = 2


def pages(rows: int) -> int:
    return max(1, -(-rows // PAGE_ROWS))


@pytest.fixture()
def reports_simulator() -> Iterator[Simulator]:
    config = SimulatorConfig(
        tenants=[TENANT],
        seed=23,
        scale=0.2,
        datasets=tuple(source_datasets()),
        report_page_size_cap=PAGE_ROWS,
        report_requests_per_window=LIMIT_REQUESTS,
        report_window_s=LIMIT_WINDOW_S,
    )
    with Simulator(config) as simulator:
        yield simulator


def _rows(engine: sa.Engine, name: str, day: date) -> list[Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT row_number, payload FROM raw_report_{name} WHERE tenant_id = :t AND period_start = :d"),
            {"t": TENANT.tenant_id, "d": day},
        ).all()
    return [(number, payload if isinstance(payload, dict) else json.loads(payload)) for number, payload in rows]


def _move_one_item(engine: sa.Engine, day: date) -> tuple[int, int, Decimal]:
    """Credit one income item of a job completed on ``day`` to another business unit, in the raw invoice
    only (ServiceTitan, and so its report, keeps the old one). Returns (old BU, new BU, the item's total)."""
    with engine.connect() as conn:
        invoice_id, item_id, old, total = conn.execute(
            sa.text(
                "SELECT it.invoice_id, it.id, it.business_unit_id, it.total FROM hub_invoice_items it "
                "JOIN hub_invoices i ON i.tenant_id = it.tenant_id AND i.id = it.invoice_id "
                "JOIN hub_jobs j ON j.tenant_id = i.tenant_id AND j.id = i.job_id "
                "WHERE it.tenant_id = :t AND j.job_status = 'Completed' AND substr(j.completed_on, 1, 10) = :d "
                "AND it.gl_account_type = 'Income' AND i.adjustment_to_id IS NULL AND i.active "
                "AND it.deleted_at IS NULL AND it.total > 0 AND it.business_unit_id IS NOT NULL "
                "ORDER BY it.id LIMIT 1"
            ),
            {"t": TENANT.tenant_id, "d": day.isoformat()},
        ).one()
        new = conn.execute(
            sa.text("SELECT min(id) FROM hub_business_units WHERE tenant_id = :t AND id <> :old"),
            {"t": TENANT.tenant_id, "old": old},
        ).scalar_one()
    table = raw_table(load_catalogue().dataset("accounting/invoices"))
    with engine.begin() as conn:
        payload = conn.execute(
            sa.select(table.c.payload).where(table.c.tenant_id == TENANT.tenant_id, table.c.id == invoice_id)
        ).scalar_one()
        record = payload if isinstance(payload, dict) else json.loads(payload)
        item = next(i for i in record["items"] if i["id"] == item_id)
        item["businessUnit"] = {"id": new, "name": "moved"}
        record["modifiedOn"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        upsert_rows(conn, table, raw_rows(TENANT.tenant_id, [record], extracted_at=datetime.now(UTC), run_id="edit"))
    return old, new, Decimal(total) / 10_000 if isinstance(total, int) else Decimal(total)


def test_declared_reports_are_read_per_day_reconciled_and_a_moved_item_is_named(
    local_env: Path, reports_simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at_simulator(monkeypatch, reports_simulator)
    register_tenants(None, TENANT)
    settings = load_settings()
    registry = TenantRegistry.open(settings)
    for name, (category, report_id) in REPORTS.items():
        registry.declare_report(TENANT.tenant_id, name, category, report_id, change=Change("test"))
    registry.close()
    engine = prepared_warehouse(
        settings.warehouse_database_url, [load_catalogue().dataset(key) for key in source_datasets()]
    )
    sync_and_build(reports_simulator, engine, TENANT)
    with engine.connect() as conn:
        days = [
            date.fromisoformat(str(row[0])[:10])
            for row in conn.execute(
                sa.text(
                    "SELECT substr(completed_on, 1, 10) AS d FROM hub_jobs WHERE tenant_id = :t AND "
                    "job_status = 'Completed' GROUP BY d ORDER BY count(*) DESC, d LIMIT 3"
                ),
                {"t": TENANT.tenant_id},
            )
        ]
    resources = {
        "servicetitan": ServiceTitanResource(report_requests_per_window=LIMIT_REQUESTS, report_window_s=LIMIT_WINDOW_S),
        "tenant_registry": TenantRegistryResource(),
        "warehouse": WarehouseResource(),
    }
    registry = TenantRegistry.open(settings)
    assets = build_report_assets(registry.reports(TENANT.tenant_id))
    registry.close()
    assert [asset.key for asset in assets] == [report_asset_key(name) for name in sorted(REPORTS)]

    def read(instance: dg.DagsterInstance, day: date, *, names: tuple[str, ...] = tuple(REPORTS)) -> Any:
        result = dg.materialize(
            assets,
            selection=[report_asset_key(name) for name in names],
            partition_key=report_partition_key(TENANT.tenant_id, day),
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        return result, {e.asset_key.path[-1]: e for e in check_evaluations(instance, result.run_id)}

    def paced(result: Any) -> float:
        return sum(
            float(str(m.metadata["seconds_paced"].value))
            for m in result.get_asset_materialization_events()
            for m in [m.materialization]
        )

    try:
        with dg.instance_for_test() as instance:
            add_tenant_partition(instance, TENANT.tenant_id)
            waited = 0.0
            requests = dict.fromkeys(REPORTS, 0)
            for day in days:
                result, evaluations = read(instance, day)
                assert result.success
                waited += paced(result)
                assert set(evaluations) == set(REPORTS)
                checked = {
                    mapping
                    for e in evaluations.values()
                    for mapping in str(e.metadata["mappings_checked"].value).split(", ")
                }
                assert checked - {"none"} == MAPPINGS, checked
                assert str(evaluations["technician_hours"].metadata["mappings_checked"].value) == "none"
                assert all(e.passed for e in evaluations.values()), evaluations
                assert sum(int(str(e.metadata["cells_compared"].value)) for e in evaluations.values()) > 10
                assert _rows(engine, "bu_performance", day) and _rows(engine, "technician_hours", day)
                for name in REPORTS:
                    requests[name] += pages(len(_rows(engine, name, day)))
            assert max(len(_rows(engine, name, day)) for name in REPORTS for day in days) > 2 * PAGE_ROWS
            for name, (_, report_id) in REPORTS.items():
                assert reports_simulator.stats.report_throttled_for(TENANT.tenant_id, report_id) == 0
                assert reports_simulator.stats.report_requests_for(TENANT.tenant_id, report_id) == requests[name]

            # Re-reading a day changes nothing; the fourth request of each report within the window had to wait.
            before = {name: _rows(engine, name, days[0]) for name in REPORTS}
            result, evaluations = read(instance, days[0])
            assert result.success and all(e.passed for e in evaluations.values())
            waited += paced(result)
            assert {name: _rows(engine, name, days[0]) for name in REPORTS} == before
            assert waited > 0
            assert (
                sum(reports_simulator.stats.report_throttled_for(TENANT.tenant_id, r) for _, r in REPORTS.values()) == 0
            )

            # The owner renames a column of the custom report: its next read fails saying so and stores nothing;
            # the other reports of the run are read.
            reports_simulator.change_report_fields(
                TENANT.tenant_id,
                1005,
                [
                    ReportField("TechnicianId", "Technician ID"),
                    ReportField("HoursOnShift", "Hours on shift", source="ShiftHours"),
                    ReportField("AppointmentCount", "Appointments"),
                ],
            )
            hours_before = _rows(engine, "technician_hours", days[1])
            changed, evaluations = read(instance, days[1], names=("technician_hours", "collections"))
            assert not changed.success
            (failure,) = [e for e in changed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
            message = str(failure.step_failure_data.error)
            assert "definition of report 'Daily Technician Hours' changed" in message and "HoursOnShift" in message
            assert f"st-pipeline report reset --tenant {TENANT.tenant_id} --name technician_hours" in message
            assert _rows(engine, "technician_hours", days[1]) == hours_before
            assert set(evaluations) == {"collections"} and evaluations["collections"].passed

            # One item moves to another business unit in the mart's input only: the check names both cells.
            old, new, total = _move_one_item(engine, days[0])
            build_tenant(engine, TENANT.tenant_id, "edited")
            result, evaluations = read(instance, days[0], names=("bu_performance",))
            failed = evaluations["bu_performance"]

            # Starting over under the new definition: the tenant's rows of the report are dropped, then read again.
            stored = sum(len(_rows(engine, "technician_hours", day)) for day in days)
            reset = CliRunner().invoke(
                main, ["report", "reset", "--tenant", str(TENANT.tenant_id), "--name", "technician_hours", "--yes"]
            )
            assert reset.exit_code == 0 and f"{stored} rows of report technician_hours dropped" in reset.output
            assert [_rows(engine, "technician_hours", day) for day in days] == [[], [], []]
            result, _ = read(instance, days[1], names=("technician_hours",))
            assert result.success
            renamed = _rows(engine, "technician_hours", days[1])
            assert [(n, list(p)) for n, p in renamed] == [
                (n, ["TechnicianId", "HoursOnShift", "AppointmentCount"]) for n, _ in hours_before
            ]
            assert [p["HoursOnShift"] for _, p in renamed] == [p["ShiftHours"] for _, p in hours_before]
    finally:
        engine.dispose()
    assert not failed.passed
    differences = failed.metadata["differences"].value
    assert isinstance(differences, list)
    revenue = {
        int(d["business_unit_id"]): (Decimal(d["report"]), Decimal(d["mart"]))
        for d in differences
        if d["mapping"] == "bu_performance_revenue"
    }
    assert set(revenue) == {old, new}, differences
    assert revenue[old][1] == revenue[old][0] - total and revenue[new][1] == revenue[new][0] + total
    assert {d["field"] for d in differences} == {"CompletedRevenue"}  # the job's BU and counts did not move
