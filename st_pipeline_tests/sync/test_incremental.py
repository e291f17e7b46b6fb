"""Incremental syncs: cursors, ties on modifiedOn, deletes, full refresh, the sync log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import ExtractResult, SyncOptions, sync_tenant
from st_pipeline.sync.freshness import SyncHistory
from st_pipeline.sync.state import SUCCEEDED, load_cursors, prune_log, read_log, reset_cursors, row_counts
from st_pipeline.warehouse.tables import raw_table, sync_log_table
from st_pipeline_tests.support import (
    assert_warehouse_equals_ground_truth,
    prepared_warehouse,
)

TENANT = SimulatedTenant(tenant_id=9301, client_id="cid.incr", client_secret="cs1.incr-secret")
ZONES = "dispatch/zones"  # a paged list with a modifiedOn watermark and no export feed
DATASETS = [load_catalogue().dataset(key) for key in (*CORE_DATASETS, ZONES)]


@pytest.fixture()
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        tenants=[TENANT], seed=8, scale=0.5, export_batch_size=10, datasets=(*CORE_DATASETS, ZONES)
    )
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture()
def warehouse(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = prepared_warehouse(url, DATASETS)
    yield url, engine
    engine.dispose()


def _sync(
    sim: Simulator, engine: sa.Engine, run_id: str, *, full_refresh: bool = False, reconcile_deletes: bool = False
) -> tuple[list[ExtractResult], int]:
    """One sync of every test dataset; returns the results and the API requests it made."""
    settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(TENANT.tenant_id, TENANT.client_id, SecretStr(TENANT.client_secret))
    with ServiceTitanClient(settings, credentials, options=ClientOptions(requests_per_second=1000)) as client:
        results = list(
            sync_tenant(
                client,
                engine,
                DATASETS,
                run_id=run_id,
                options=SyncOptions(full_refresh=full_refresh, reconcile_deletes=reconcile_deletes),
            )
        )
    assert all(r.succeeded for r in results)
    return results, client.stats.requests


def test_one_percent_change_costs_at_most_five_percent_of_the_requests(
    sim: Simulator, warehouse: tuple[str, sa.Engine]
) -> None:
    url, engine = warehouse
    _, full_requests = _sync(sim, engine, "full")
    for dataset in DATASETS:
        count = len(sim.ground_truth(TENANT.tenant_id, dataset.key))
        sim.apply_changes(
            TENANT.tenant_id, dataset.key, updated=max(1, count // 200), deactivated=max(1, count // 200), created=1
        )
    results, incremental_requests = _sync(sim, engine, "incremental")
    assert_warehouse_equals_ground_truth(url, sim, TENANT.tenant_id, DATASETS)
    assert full_requests > 400
    assert incremental_requests <= 0.05 * full_requests, (incremental_requests, full_requests)
    # Export feeds resumed from their tokens: they read only the changes (plus the duplicates
    # includeRecentChanges might bring, none here).
    customers = next(r for r in results if r.dataset.key == "crm/customers")
    assert 0 < customers.records <= 2 * (2 * max(1, 500 // 200) + 1)


def test_records_sharing_one_modified_on_across_a_page_boundary_all_load(
    sim: Simulator, warehouse: tuple[str, sa.Engine]
) -> None:
    url, engine = warehouse
    _sync(sim, engine, "full")
    # 25 ties in an export feed of 10-record batches, and 25 in the watermark list.
    changed = sim.apply_changes(TENANT.tenant_id, "crm/customers", updated=25, same_timestamp=True)
    changed_zones = sim.apply_changes(TENANT.tenant_id, ZONES, updated=5, same_timestamp=True)
    results, _ = _sync(sim, engine, "ties")
    assert_warehouse_equals_ground_truth(url, sim, TENANT.tenant_id, DATASETS)
    customers = next(r for r in results if r.dataset.key == "crm/customers")
    assert customers.records >= 25 and customers.pages >= 3
    stamps = {
        r["modifiedOn"] for r in sim.ground_truth(TENANT.tenant_id, "crm/customers") if r["id"] in changed["updated"]
    }
    assert len(stamps) == 1
    table = raw_table(load_catalogue().dataset(ZONES))
    with engine.connect() as conn:
        stored = {row.id: row.payload for row in conn.execute(sa.select(table.c.id, table.c.payload))}
    for record in sim.ground_truth(TENANT.tenant_id, ZONES):
        if record["id"] in changed_zones["updated"]:
            assert stored[record["id"]] == record


def test_list_watermark_reads_only_recent_changes(sim: Simulator, warehouse: tuple[str, sa.Engine]) -> None:
    _, engine = warehouse
    _sync(sim, engine, "full")
    cursor = load_cursors(engine, TENANT.tenant_id)[ZONES]
    newest = max(r["modifiedOn"] for r in sim.ground_truth(TENANT.tenant_id, ZONES))
    assert cursor == newest
    sim.apply_changes(TENANT.tenant_id, ZONES, updated=2)
    results, _ = _sync(sim, engine, "second")
    zones = next(r for r in results if r.dataset.key == ZONES)
    total = len(sim.ground_truth(TENANT.tenant_id, ZONES))
    assert 2 <= zones.records < total  # the overlap may bring back a few, never the whole list


def test_deletes_are_flagged_by_reconciliation_never_removed(sim: Simulator, warehouse: tuple[str, sa.Engine]) -> None:
    _, engine = warehouse
    _sync(sim, engine, "full")
    gone = sim.apply_changes(TENANT.tenant_id, ZONES, deleted=2)["deleted"]
    _sync(sim, engine, "incremental")  # an incremental list read cannot see deletes
    table = raw_table(load_catalogue().dataset(ZONES))
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(table.c.deleted_at.is_not(None))).scalar_one() == 0
    _sync(sim, engine, "reconcile", reconcile_deletes=True)
    with engine.connect() as conn:
        rows = {r.id: r.deleted_at for r in conn.execute(sa.select(table.c.id, table.c.deleted_at))}
    assert {i for i, deleted in rows.items() if deleted is not None} == set(gone)
    assert len(rows) == len(sim.ground_truth(TENANT.tenant_id, ZONES)) + 2  # never hard-deleted


def test_full_refresh_and_reset_cursor_read_everything_again(sim: Simulator, warehouse: tuple[str, sa.Engine]) -> None:
    url, engine = warehouse
    _, full_requests = _sync(sim, engine, "full")
    _, quiet_requests = _sync(sim, engine, "nothing-changed")
    assert quiet_requests == len(DATASETS)  # one request per dataset finds nothing new
    _, refresh_requests = _sync(sim, engine, "refresh", full_refresh=True)
    assert refresh_requests == full_requests
    assert reset_cursors(engine, TENANT.tenant_id, ["crm/customers"]) == 1
    results, _ = _sync(sim, engine, "after-reset")
    customers = next(r for r in results if r.dataset.key == "crm/customers")
    assert customers.records == len(sim.ground_truth(TENANT.tenant_id, "crm/customers"))
    assert_warehouse_equals_ground_truth(url, sim, TENANT.tenant_id, DATASETS)


def test_sync_log_tells_what_each_sync_did(sim: Simulator, warehouse: tuple[str, sa.Engine]) -> None:
    _, engine = warehouse
    results, _ = _sync(sim, engine, "logged")
    rows = {row.dataset: row for row in read_log(engine, TENANT.tenant_id)}
    assert set(rows) == {d.key for d in DATASETS}
    for result in results:
        row = rows[result.dataset.key]
        assert row.status == SUCCEEDED and row.run_id == "logged"
        assert (row.records, row.pages, row.requests) == (result.records, result.pages, result.requests)
        assert row.cursor_before is None and row.ended_at >= row.started_at
    assert rows["crm/customers"].cursor_after == load_cursors(engine, TENANT.tenant_id)["crm/customers"]
    assert all(row.duration_s is not None and row.rows_written == row.records for row in rows.values())

    # A second sync with nothing new: logged as its own run, nothing written; row counts still true.
    _sync(sim, engine, "quiet")
    latest = read_log(engine, TENANT.tenant_id)
    assert {row.run_id for row in latest} == {"quiet"} and sum(row.rows_written for row in latest) == 0
    assert {row.run_id for row in read_log(engine, TENANT.tenant_id, runs=2)} == {"logged", "quiet"}
    with engine.connect() as conn:
        counted = {
            d.key: conn.execute(
                sa.select(sa.func.count()).select_from(raw_table(d)).where(raw_table(d).c.tenant_id == TENANT.tenant_id)
            ).scalar_one()
            for d in DATASETS
        }
    assert row_counts(engine, TENANT.tenant_id) == counted

    # Retention: rows older than it go; the status of each pair stays.
    with engine.begin() as conn:
        conn.execute(
            sync_log_table.update()
            .where(sync_log_table.c.run_id == "logged")
            .values(started_at=datetime.now(UTC) - timedelta(days=100))
        )
    assert prune_log(engine, timedelta(days=90)) == len(DATASETS)
    assert {row.run_id for row in read_log(engine, TENANT.tenant_id, runs=5)} == {"quiet"}
    assert len(SyncHistory.read(engine).last_success) == len(DATASETS)
