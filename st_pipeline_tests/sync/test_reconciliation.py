"""Delete reconciliation: rows flagged deleted only after a complete listing, and unflagged when they return.

A reconciling sync reads a list endpoint fully and flags the rows the listing did not return. A
listing that breaks off part-way proves nothing about the rows it never reached: it must flag
nothing and leave the cursor where it was. On SQLite and on a real PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import Endpoint, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, Page, ServiceTitanClient
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import ExtractResult, SyncOptions, sync_tenant
from st_pipeline.sync.state import SUCCEEDED, load_cursors, read_log
from st_pipeline.warehouse.tables import raw_table
from st_pipeline_tests.support import assert_warehouse_equals_ground_truth, prepared_warehouse

ZONES = "dispatch/zones"  # a paged list with a modifiedOn watermark and no export feed: reconciled
DATASET = load_catalogue().dataset(ZONES)
ZONE_COUNT = 20  # at scale 1
PAGE_SIZE = 3  # seven pages: a listing can break off after the first
RECONCILE = SyncOptions(reconcile_deletes=True)
# One simulator for the module, one tenant per test (each test changes its tenant's data).
TENANTS = [
    SimulatedTenant(tenant_id=9500 + n, client_id=f"cid.reconcile-{n}", client_secret=f"cs1.rec-{n}")
    for n in range(1, 9)
]
_unused = list(TENANTS)


class SmallPagesClient(ServiceTitanClient):
    """Reads lists in pages of ``PAGE_SIZE``; runs ``after_first_page`` once the first was handed on."""

    after_first_page: Callable[[], None] | None = None

    def iter_list(self, endpoint: Endpoint, **kwargs: Any) -> Iterator[Page]:
        pages = super().iter_list(endpoint, **{**kwargs, "page_size": PAGE_SIZE})
        yield next(pages)
        if self.after_first_page is not None:
            self.after_first_page()
        yield from pages


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(tenants=TENANTS, seed=12, scale=1.0, datasets=(ZONES,))
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture()
def tenant(sim: Simulator) -> Iterator[SimulatedTenant]:
    tenant = _unused.pop(0)
    assert len(sim.ground_truth(tenant.tenant_id, ZONES)) == ZONE_COUNT
    yield tenant
    sim.clear_faults()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres")()  # a scratch database, dropped after the test
    engine = prepared_warehouse(url, [DATASET])
    assert engine.dialect.name == request.param
    yield url, engine
    engine.dispose()


def _client(sim: Simulator, tenant: SimulatedTenant) -> SmallPagesClient:
    settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(tenant.tenant_id, tenant.client_id, SecretStr(tenant.client_secret))
    return SmallPagesClient(settings, credentials, options=ClientOptions(requests_per_second=1000))


def _sync(
    sim: Simulator,
    tenant: SimulatedTenant,
    engine: sa.Engine,
    run_id: str,
    after_first_page: Callable[[], None] | None = None,
) -> ExtractResult:
    client = _client(sim, tenant)  # not `as client`: __enter__ is typed as the base ServiceTitanClient
    with client:
        client.after_first_page = after_first_page
        [result] = sync_tenant(client, engine, [DATASET], run_id=run_id, options=RECONCILE)
    return result


def _deleted(engine: sa.Engine, tenant: SimulatedTenant) -> dict[int, bool]:
    """Every row of the tenant: id → flagged deleted."""
    table = raw_table(DATASET)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.id, table.c.deleted_at).where(table.c.tenant_id == tenant.tenant_id))
        return {row.id: row.deleted_at is not None for row in rows}


def _newest_modified_on(sim: Simulator, tenant: SimulatedTenant) -> str:
    return max(record["modifiedOn"] for record in sim.ground_truth(tenant.tenant_id, ZONES))


def test_a_listing_that_breaks_off_flags_nothing_and_keeps_the_cursor(
    sim: Simulator, tenant: SimulatedTenant, warehouse: tuple[str, sa.Engine]
) -> None:
    _, engine = warehouse
    first = _sync(sim, tenant, engine, "full")
    assert first.succeeded and first.pages == 7
    cursor = load_cursors(engine, tenant.tenant_id)[ZONES]
    assert cursor == _newest_modified_on(sim, tenant)
    # Upstream, two zones go and every other one changes (so the first page alone would move the cursor).
    gone = sim.apply_changes(tenant.tenant_id, ZONES, updated=ZONE_COUNT - 2, deleted=2)["deleted"]
    assert len(gone) == 2

    # The listing's second page is refused (400, not retried): only the first page arrives.
    broken = _sync(
        sim, tenant, engine, "broken", after_first_page=lambda: sim.inject_faults(400, 50, tenant_id=tenant.tenant_id)
    )
    assert not broken.succeeded and broken.pages == 1 and broken.rows_written == PAGE_SIZE
    [logged] = read_log(engine, tenant.tenant_id, run_id="broken")
    assert logged.status != SUCCEEDED
    assert broken.rows_deleted == 0
    flags = _deleted(engine, tenant)
    assert len(flags) == ZONE_COUNT and not any(flags.values()), "an incomplete listing flagged rows deleted"
    assert load_cursors(engine, tenant.tenant_id)[ZONES] == cursor

    # The next complete listing flags exactly the two and moves the cursor.
    sim.clear_faults()
    complete = _sync(sim, tenant, engine, "complete")
    assert complete.succeeded and complete.rows_deleted == 2
    [logged] = read_log(engine, tenant.tenant_id, run_id="complete")
    # The sync log's rows_written counts the rows flagged deleted too (the result keeps them apart).
    assert complete.rows_written > 0 and logged.rows_written == complete.rows_written + complete.rows_deleted
    flags = _deleted(engine, tenant)
    assert {record_id for record_id, deleted in flags.items() if deleted} == set(gone)
    assert load_cursors(engine, tenant.tenant_id)[ZONES] == _newest_modified_on(sim, tenant) != cursor


def test_a_deleted_row_is_flagged_and_unflagged_when_it_comes_back(
    sim: Simulator, tenant: SimulatedTenant, warehouse: tuple[str, sa.Engine]
) -> None:
    url, engine = warehouse
    assert _sync(sim, tenant, engine, "full").succeeded
    before = {record["id"]: record for record in sim.ground_truth(tenant.tenant_id, ZONES)}
    held = _holding_records(sim, tenant)
    [gone] = sim.apply_changes(tenant.tenant_id, ZONES, deleted=1)["deleted"]

    flagged = _sync(sim, tenant, engine, "reconcile")
    assert flagged.succeeded and flagged.rows_deleted == 1
    assert _deleted(engine, tenant) == {record_id: record_id == gone for record_id in before}

    _put_back(sim, tenant, held[gone])
    assert sim.ground_truth(tenant.tenant_id, ZONES) == sorted(before.values(), key=lambda r: r["id"])
    returned = _sync(sim, tenant, engine, "returned")
    assert returned.succeeded and returned.rows_deleted == 0 and returned.rows_written == 1
    assert _deleted(engine, tenant) == {record_id: False for record_id in before}
    assert assert_warehouse_equals_ground_truth(url, sim, tenant.tenant_id, [DATASET]) == ZONE_COUNT


# The simulator cannot undelete (a hard delete is final upstream); these two reach into its store,
# through the store's own API, to serve a deleted record again exactly as it was.
def _holding_records(sim: Simulator, tenant: SimulatedTenant) -> dict[int, Any]:
    """The tenant's stored zones as they are now (immutable records), by id."""
    store = sim._tenant_data(tenant.tenant_id).stores[ZONES]
    return {record.id: record for record in store.records()}


def _put_back(sim: Simulator, tenant: SimulatedTenant, record: Any) -> None:
    sim._tenant_data(tenant.tenant_id).stores[ZONES].apply(added=[record])
