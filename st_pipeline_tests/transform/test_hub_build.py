"""Hub tables and marts built from a real sync of the simulator: every check passes, the marts
say something, and an incremental build after a 1% change (deletes included) reprocesses about 1%
of the rows and leaves the same tables as a full rebuild, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import SyncOptions, sync_tenant
from st_pipeline.transform.build import TenantBuild, build_tenant, raw_table_name_for
from st_pipeline.transform.checks import check_hub, check_mart
from st_pipeline.transform.hubs import HUB_TABLES, source_datasets
from st_pipeline.transform.marts import MARTS
from st_pipeline_tests.support import prepared_warehouse

TENANT = SimulatedTenant(tenant_id=9401, client_id="cid.hub", client_secret="cs1.hub-secret")
KEYS = tuple(dict.fromkeys((*CORE_DATASETS, *source_datasets())))
DATASETS = [load_catalogue().dataset(key) for key in KEYS]
# A list without an export feed (a record deleted upstream is flagged by a reconciling sync) whose
# records no declared reference points at.
LIST_DATASET = "marketing/campaigns"


@pytest.fixture()
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(tenants=[TENANT], seed=21, scale=0.2, datasets=KEYS)) as simulator:
        yield simulator


def _sync(sim: Simulator, engine: sa.Engine, run_id: str, **options: object) -> None:
    settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(TENANT.tenant_id, TENANT.client_id, SecretStr(TENANT.client_secret))
    with ServiceTitanClient(settings, credentials, options=ClientOptions(requests_per_second=1000)) as client:
        results = list(sync_tenant(client, engine, DATASETS, run_id=run_id, options=SyncOptions(**options)))
    assert all(r.succeeded for r in results), [str(r.error) for r in results if not r.succeeded]


def _tables(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every hub and mart row of the tenant, without the build time (which differs by design)."""
    out = {}
    with engine.connect() as conn:
        for name in [h.table_name for h in HUB_TABLES] + [m.table_name for m in MARTS]:
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            columns = [c for c in table.columns if c.name != "built_at"]
            out[name] = sorted(
                tuple(row) for row in conn.execute(sa.select(*columns).where(table.c.tenant_id == TENANT.tenant_id))
            )
    return out


def _all_checks_pass(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        for spec in HUB_TABLES:
            for verdict in check_hub(conn, spec, TENANT.tenant_id, raw_table_name_for(spec)):
                assert verdict.passed, (spec.table_name, verdict)
        for mart in MARTS:
            for verdict in check_mart(conn, mart, TENANT.tenant_id):
                assert verdict.passed, (mart.table_name, verdict)


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path, fresh_postgres: Callable[[], str]) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}" if request.param == "sqlite" else fresh_postgres()


def test_hubs_reconcile_marts_are_real_and_incremental_equals_full(sim: Simulator, warehouse_url: str) -> None:
    engine = prepared_warehouse(warehouse_url, DATASETS)
    try:
        _sync(sim, engine, "sync-1")
        first = build_tenant(engine, TENANT.tenant_id, "build-1")
        assert {h.mode for h in first.hubs} == {"full"}
        assert len(first.marts) == len(MARTS)
        _all_checks_pass(engine)
        with engine.connect() as conn:
            hub_rows = {h.table: h.row_count for h in first.hubs}
            raw_invoices = conn.execute(sa.text(
                "SELECT count(*) FROM raw_accounting_invoices WHERE tenant_id = :t"), {"t": TENANT.tenant_id}).scalar_one()
            assert hub_rows["hub_invoices"] == raw_invoices > 0
            assert hub_rows["hub_invoice_items"] > raw_invoices  # several items per invoice, exploded
            revenue_units = conn.execute(sa.text(
                "SELECT count(DISTINCT business_unit_id) FROM mart_revenue_by_business_unit "
                "WHERE tenant_id = :t AND completed_revenue > 0"), {"t": TENANT.tenant_id}).scalar_one()
            assert revenue_units >= 3
            converted, opportunities = conn.execute(sa.text(
                "SELECT sum(converted), sum(opportunities) FROM mart_job_conversion WHERE tenant_id = :t"),
                {"t": TENANT.tenant_id}).one()
            assert 0 < converted < opportunities
            booked, bookable = conn.execute(sa.text(
                "SELECT sum(booked_calls), sum(bookable_calls) FROM mart_call_booking WHERE tenant_id = :t"),
                {"t": TENANT.tenant_id}).one()
            assert 0 < booked < bookable
            open_balance = conn.execute(sa.text(
                "SELECT sum(open_invoices) FROM mart_accounts_receivable WHERE tenant_id = :t"),
                {"t": TENANT.tenant_id}).scalar_one()
            assert open_balance > 0

        # Nothing changed: nothing is rebuilt.
        unchanged = build_tenant(engine, TENANT.tenant_id, "build-2")
        assert {h.mode for h in unchanged.hubs} == {"unchanged"} and unchanged.marts == []

        # A 1% change of every dataset (updates, deactivations, a new record), and deletes in a list.
        for key in KEYS:
            count = len(sim.ground_truth(TENANT.tenant_id, key))
            sim.apply_changes(TENANT.tenant_id, key, updated=max(1, count // 100), created=1,
                              deleted=1 if key == LIST_DATASET else 0)
        _sync(sim, engine, "sync-2", reconcile_deletes=True)
        incremental: TenantBuild = build_tenant(engine, TENANT.tenant_id, "build-3")
        assert {h.mode for h in incremental.hubs} == {"incremental"}
        reprocessed = sum(h.source_rows_changed for h in incremental.hubs)
        total = sum(h.source_rows_total for h in incremental.hubs)
        assert reprocessed <= 0.05 * total, (reprocessed, total)  # about 1%, plus one new record per dataset
        with engine.connect() as conn:
            deleted = conn.execute(sa.text(
                "SELECT count(*) FROM hub_campaigns WHERE tenant_id = :t AND deleted_at IS NOT NULL"),
                {"t": TENANT.tenant_id}).scalar_one()
        assert deleted == 1  # the delete reached the hub through the incremental build
        _all_checks_pass(engine)
        after_incremental = _tables(engine)

        rebuilt = build_tenant(engine, TENANT.tenant_id, "build-4", full=True)
        assert {h.mode for h in rebuilt.hubs} == {"full"}
        assert _tables(engine) == after_incremental
    finally:
        engine.dispose()
