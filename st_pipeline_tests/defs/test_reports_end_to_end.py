"""Declared reports end to end: five reports of one tenant read for three days through Dagster from
the simulator's Reporting API, every shipped mapping reconciled with its mart, a re-run that
changes nothing, no 429 — and a reconciliation that fails, naming the business unit, the day and
both values, when one invoice item's business unit changes in the mart's input only."""

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
from st_pipeline.defs.reports import RECONCILES_CHECK, report_partition_key, servicetitan_reports
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import load_settings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
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


@pytest.fixture()
def reports_simulator() -> Iterator[Simulator]:
    config = SimulatorConfig(tenants=[TENANT], seed=23, scale=0.2, datasets=tuple(source_datasets()))
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
        "servicetitan": ServiceTitanResource(),
        "tenant_registry": TenantRegistryResource(),
        "warehouse": WarehouseResource(),
    }

    def read(instance: dg.DagsterInstance, day: date) -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            [servicetitan_reports],
            partition_key=report_partition_key(TENANT.tenant_id, day),
            instance=instance,
            resources=resources,
        )
        assert result.success
        (evaluation,) = [e for e in check_evaluations(instance, result.run_id) if e.check_name == RECONCILES_CHECK]
        return evaluation

    try:
        with dg.instance_for_test() as instance:
            add_tenant_partition(instance, TENANT.tenant_id)
            for day in days:
                evaluation = read(instance, day)
                checked = evaluation.metadata["mappings_checked"].value
                assert {part.split(": ")[1] for part in str(checked).split(", ")} == MAPPINGS, checked
                assert evaluation.passed, evaluation.metadata
                assert int(str(evaluation.metadata["cells_compared"].value)) > 10
                assert _rows(engine, "bu_performance", day) and _rows(engine, "technician_hours", day)
            for report_id in (rid for _, rid in REPORTS.values()):
                assert reports_simulator.stats.report_throttled_for(TENANT.tenant_id, report_id) == 0
                assert reports_simulator.stats.report_requests_for(TENANT.tenant_id, report_id) == len(days)

            # Re-reading a day changes nothing.
            before = {name: _rows(engine, name, days[0]) for name in REPORTS}
            assert read(instance, days[0]).passed
            assert {name: _rows(engine, name, days[0]) for name in REPORTS} == before

            # One item moves to another business unit in the mart's input only: the check names both cells.
            old, new, total = _move_one_item(engine, days[0])
            build_tenant(engine, TENANT.tenant_id, "edited")
            failed = read(instance, days[0])

            # Starting over (after a definition change): the tenant's rows of the report are dropped.
            stored = sum(len(_rows(engine, "bu_performance", day)) for day in days)
            reset = CliRunner().invoke(
                main, ["report", "reset", "--tenant", str(TENANT.tenant_id), "--name", "bu_performance", "--yes"]
            )
            assert reset.exit_code == 0 and f"{stored} rows of report bu_performance dropped" in reset.output
            assert [_rows(engine, "bu_performance", day) for day in days] == [[], [], []]
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
