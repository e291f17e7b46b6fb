"""Hub tables and marts built from a real sync of the simulator: every check passes, the marts
say something, and an incremental build after a 1% change (deletes included) reprocesses about 1%
of the rows and leaves the same tables as a full rebuild, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
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
from st_pipeline.warehouse.loader import raw_rows, upsert_rows
from st_pipeline.warehouse.tables import raw_table
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


def _sync(sim: Simulator, engine: sa.Engine, run_id: str, *, reconcile_deletes: bool = False) -> None:
    settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(TENANT.tenant_id, TENANT.client_id, SecretStr(TENANT.client_secret))
    with ServiceTitanClient(settings, credentials, options=ClientOptions(requests_per_second=1000)) as client:
        results = list(
            sync_tenant(
                client, engine, DATASETS, run_id=run_id, options=SyncOptions(reconcile_deletes=reconcile_deletes)
            )
        )
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


def _active_members(memberships: list[dict], day: str) -> int:
    """Memberships active at the end of ``day`` (ISO): started by then, and neither canceled nor at
    their ``to`` day yet (every simulated Canceled membership has its cancellation date)."""
    active = 0
    for membership in memberships:
        if not membership["active"] or membership["from"][:10] > day:
            continue
        ends = [membership["to"][:10]] if membership["to"] else []
        if membership["status"] == "Canceled":
            ends.append(membership["cancellationDate"][:10])
        active += not ends or min(ends) > day
    return active


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
            raw_invoices = conn.execute(
                sa.text("SELECT count(*) FROM raw_accounting_invoices WHERE tenant_id = :t"), {"t": TENANT.tenant_id}
            ).scalar_one()
            assert hub_rows["hub_invoices"] == raw_invoices > 0
            assert hub_rows["hub_invoice_items"] > raw_invoices  # several items per invoice, exploded
            revenue_units = conn.execute(
                sa.text(
                    "SELECT count(DISTINCT business_unit_id) FROM mart_revenue_by_business_unit "
                    "WHERE tenant_id = :t AND completed_revenue > 0"
                ),
                {"t": TENANT.tenant_id},
            ).scalar_one()
            assert revenue_units >= 3
            converted, opportunities = conn.execute(
                sa.text("SELECT sum(converted), sum(opportunities) FROM mart_job_conversion WHERE tenant_id = :t"),
                {"t": TENANT.tenant_id},
            ).one()
            assert 0 < converted < opportunities
            booked, bookable = conn.execute(
                sa.text("SELECT sum(booked_calls), sum(bookable_calls) FROM mart_call_booking WHERE tenant_id = :t"),
                {"t": TENANT.tenant_id},
            ).one()
            assert 0 < booked < bookable
            open_balance = conn.execute(
                sa.text("SELECT sum(open_invoices) FROM mart_accounts_receivable WHERE tenant_id = :t"),
                {"t": TENANT.tenant_id},
            ).scalar_one()
            assert open_balance > 0
            booked, available = conn.execute(
                sa.text(
                    "SELECT sum(booked_minutes), sum(available_minutes) FROM mart_technician_capacity "
                    "WHERE tenant_id = :t"
                ),
                {"t": TENANT.tenant_id},
            ).one()
            assert 0 < booked < available  # shifts cover the days' visits
            active_by_day = conn.execute(
                sa.text("SELECT day, active_members FROM mart_membership_health WHERE tenant_id = :t"),
                {"t": TENANT.tenant_id},
            ).all()
        memberships = sim.ground_truth(TENANT.tenant_id, "memberships/memberships")
        assert {str(day)[:10]: active for day, active in active_by_day} == {
            str(day)[:10]: _active_members(memberships, str(day)[:10]) for day, _ in active_by_day
        }
        assert max(active for _, active in active_by_day) > 10

        # Nothing changed: nothing is rebuilt.
        unchanged = build_tenant(engine, TENANT.tenant_id, "build-2")
        assert {h.mode for h in unchanged.hubs} == {"unchanged"} and unchanged.marts == []

        # A 1% change of every dataset (updates, deactivations, a new record), and deletes in a list.
        for key in KEYS:
            count = len(sim.ground_truth(TENANT.tenant_id, key))
            sim.apply_changes(
                TENANT.tenant_id, key, updated=max(1, count // 100), created=1, deleted=1 if key == LIST_DATASET else 0
            )
        _sync(sim, engine, "sync-2", reconcile_deletes=True)
        incremental: TenantBuild = build_tenant(engine, TENANT.tenant_id, "build-3")
        assert {h.mode for h in incremental.hubs} == {"incremental"}
        reprocessed = sum(h.source_rows_changed for h in incremental.hubs)
        total = sum(h.source_rows_total for h in incremental.hubs)
        assert reprocessed <= 0.05 * total, (reprocessed, total)  # about 1%, plus one new record per dataset
        with engine.connect() as conn:
            deleted = conn.execute(
                sa.text("SELECT count(*) FROM hub_campaigns WHERE tenant_id = :t AND deleted_at IS NOT NULL"),
                {"t": TENANT.tenant_id},
            ).scalar_one()
        assert deleted == 1  # the delete reached the hub through the incremental build
        _all_checks_pass(engine)
        after_incremental = _tables(engine)

        rebuilt = build_tenant(engine, TENANT.tenant_id, "build-4", full=True)
        assert {h.mode for h in rebuilt.hubs} == {"full"}
        assert _tables(engine) == after_incremental
    finally:
        engine.dispose()


def _edit(engine: sa.Engine, dataset_key: str, edits: dict[int, Callable[[dict], None]]) -> None:
    """Change records in the raw table as a sync bringing those upstream changes would."""
    table = raw_table(load_catalogue().dataset(dataset_key))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        records = []
        for record_id, edit in edits.items():
            payload = conn.execute(
                sa.select(table.c.payload).where(table.c.tenant_id == TENANT.tenant_id, table.c.id == record_id)
            ).scalar_one()
            record = json.loads(payload) if isinstance(payload, str) else dict(payload)
            edit(record)
            record["modifiedOn"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            records.append(record)
        upsert_rows(conn, table, raw_rows(TENANT.tenant_id, records, extracted_at=now, run_id="edit"))


def test_changes_that_move_facts_between_mart_rows_build_incrementally_like_a_full_rebuild(
    sim: Simulator, warehouse_url: str
) -> None:
    """Changes that move a fact to another mart row — a job completed on another day or of another
    type, a threshold changed, an invoice moved to another job, an item to another business unit, a
    membership to another location, an assignment to another technician, a sale undone — reach the
    right entities through the marts' links: the incremental build equals a full one."""
    engine = prepared_warehouse(warehouse_url, DATASETS)
    try:
        _sync(sim, engine, "sync-1")
        build_tenant(engine, TENANT.tenant_id, "build-1")
        with engine.connect() as conn:

            def ids(sql: str) -> list[int]:
                return list(conn.execute(sa.text(sql), {"t": TENANT.tenant_id}).scalars())

            jobs = ids(
                "SELECT j.id FROM hub_jobs j JOIN hub_invoices i ON i.tenant_id = j.tenant_id AND i.job_id = j.id "
                "WHERE j.tenant_id = :t AND j.job_status = 'Completed' AND i.sub_total > 0 ORDER BY j.id LIMIT 3"
            )
            job_types = ids("SELECT id FROM hub_job_types WHERE tenant_id = :t ORDER BY id")
            invoice = ids(
                "SELECT id FROM hub_invoices WHERE tenant_id = :t AND job_id IS NOT NULL "
                "AND sub_total > 0 ORDER BY id DESC LIMIT 1"
            )[0]  # another job's
            units = ids("SELECT id FROM hub_business_units WHERE tenant_id = :t ORDER BY id")
            membership = ids("SELECT id FROM hub_memberships WHERE tenant_id = :t ORDER BY id LIMIT 1")[0]
            locations = ids(
                "SELECT location_id FROM hub_jobs WHERE tenant_id = :t AND job_status = 'Completed' "
                "ORDER BY id DESC LIMIT 1"
            )
            assignment = ids("SELECT id FROM hub_appointment_assignments WHERE tenant_id = :t ORDER BY id LIMIT 1")[0]
            technicians = ids("SELECT id FROM hub_technicians WHERE tenant_id = :t ORDER BY id")
            sold = ids("SELECT id FROM hub_estimates WHERE tenant_id = :t AND status = 'Sold' ORDER BY id LIMIT 1")[0]

        def move_job(record: dict) -> None:
            record["completedOn"] = "2024-02-29T12:00:00Z"
            record["jobTypeId"] = job_types[-1]

        _edit(engine, "jpm/jobs", {jobs[0]: move_job})
        _edit(engine, "jpm/job-types", {job_types[0]: lambda r: r.update(soldThreshold=100000.0)})

        def move_invoice(record: dict) -> None:
            record["job"] = {"id": jobs[1], "number": str(jobs[1]), "type": None}
            record["items"][0]["businessUnit"] = {"id": units[-1], "name": "moved"}

        _edit(engine, "accounting/invoices", {invoice: move_invoice})
        _edit(engine, "memberships/memberships", {membership: lambda r: r.update(locationId=locations[0])})
        _edit(
            engine, "dispatch/appointment-assignments", {assignment: lambda r: r.update(technicianId=technicians[-1])}
        )
        _edit(engine, "sales/estimates", {sold: lambda r: r.update(status={"name": "Open", "value": 0}, soldOn=None)})

        incremental = build_tenant(engine, TENANT.tenant_id, "build-2")
        assert {m.mode for m in incremental.marts} >= {"incremental"}
        after_incremental = _tables(engine)
        build_tenant(engine, TENANT.tenant_id, "build-3", full=True)
        full = _tables(engine)
        assert after_incremental.keys() == full.keys()
        for name in full:
            assert after_incremental[name] == full[name], name
    finally:
        engine.dispose()
