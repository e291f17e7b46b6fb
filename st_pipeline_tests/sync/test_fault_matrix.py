"""A tenant sync survives every transient fault with nothing lost and nothing duplicated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.errors import InvalidClientError
from st_pipeline.servicetitan.ratelimit import RateLimiter
from st_pipeline.servicetitan.resilience import RetryPolicy
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import FaultPlan, SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import sync_tenant
from st_pipeline.warehouse.tables import sync_log_table
from st_pipeline_tests.support import (
    assert_warehouse_equals_ground_truth,
    prepared_warehouse,
)

TENANT = SimulatedTenant(tenant_id=6101, client_id="cid.faulty", client_secret="cs1.faulty-secret")
OTHER = SimulatedTenant(tenant_id=6202, client_id="cid.healthy", client_secret="cs1.healthy-secret")
RATE = 60
FAULT_TYPES = {
    "server_error": FaultPlan(server_error_rate=0.1),
    "drop": FaultPlan(drop_rate=0.1),
    "truncate": FaultPlan(truncate_rate=0.1),
    "slow": FaultPlan(slow_rate=0.1, slow_s=1.0),  # slower than the client's timeout below
    "throttle": FaultPlan(throttle_rate=0.1),
    "all": FaultPlan.uniform(0.1),
}
DATASETS = load_catalogue().core_datasets()


def _simulator(faults: FaultPlan | None, *, revoked: tuple[int, ...] = ()) -> Simulator:
    config = SimulatorConfig(
        tenants=[TENANT, OTHER],
        seed=5,
        scale=0.04,
        export_batch_size=15,
        datasets=CORE_DATASETS,
        rate_limit_per_s=RATE,
        faults=faults,
        revoked_tenants=revoked,
    )
    return Simulator(config)


def _client(sim: Simulator, tenant: SimulatedTenant) -> ServiceTitanClient:
    settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(tenant.tenant_id, tenant.client_id, SecretStr(tenant.client_secret))
    options = ClientOptions(timeout_s=0.5, retry=RetryPolicy(base_delay_s=0.05, max_delay_s=0.5, max_attempts=10))
    # A limiter of its own per test, at the simulator's rate.
    return ServiceTitanClient(settings, credentials, options=options, limiter=RateLimiter(RATE))


@pytest.fixture()
def warehouse(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = prepared_warehouse(url, DATASETS)
    yield url, engine
    engine.dispose()


@pytest.mark.parametrize("fault", list(FAULT_TYPES))
def test_sync_completes_exactly_under_faults(fault: str, warehouse: tuple[str, sa.Engine]) -> None:
    url, engine = warehouse
    with _simulator(FAULT_TYPES[fault]) as sim, _client(sim, TENANT) as client:
        results = list(sync_tenant(client, engine, DATASETS, run_id="fault-matrix"))
        stats = sim.stats
        assert all(r.succeeded for r in results)
        assert_warehouse_equals_ground_truth(url, sim, TENANT.tenant_id, DATASETS)
        injected = stats.injected_total
        assert injected > 0, "the fault plan should have struck at least once"
        assert client.stats.retries >= injected
        # Only the simulator's own injected 429s: its rate limit was never hit.
        assert stats.throttled_for(TENANT.tenant_id) == 0
        assert stats.max_requests_per_second_for(TENANT.tenant_id) <= 2 * RATE  # one bucket: capacity + refill
        assert stats.token_requests_for(TENANT.tenant_id) == 1
        assert sum(r.records for r in results) >= sum(len(sim.ground_truth(TENANT.tenant_id, d.key)) for d in DATASETS)


def test_revoked_credentials_fail_fast_and_the_other_tenant_syncs(warehouse: tuple[str, sa.Engine]) -> None:
    url, engine = warehouse
    with _simulator(None) as sim:
        export = DATASETS[2].export
        assert export is not None
        with _client(sim, TENANT) as client:
            next(client.iter_export(export))  # a token is cached, then revoked mid-run
            sim.revoke_credentials(TENANT.tenant_id)
            requests_before = client.stats.requests
            with pytest.raises(InvalidClientError) as raised:
                list(sync_tenant(client, engine, DATASETS, run_id="revoked"))
        message = str(raised.value)
        assert f"tenant {TENANT.tenant_id}" in message and "st-pipeline tenant update-credentials" in message
        assert TENANT.client_secret not in message
        # Fast: each extraction thread gets at most one 401 before the run stops.
        assert client.stats.requests - requests_before <= len(DATASETS)
        # Honest log: no row left running; the dataset that hit the error failed with it, the others
        # were cancelled; every row has the requests it really made.
        with engine.connect() as conn:
            rows = list(conn.execute(sa.select(sync_log_table).where(sync_log_table.c.run_id == "revoked")))
        statuses = sorted(row.status for row in rows)
        assert len(rows) == len(DATASETS) and "running" not in statuses
        assert statuses.count("failed") == 1 and set(statuses) <= {"failed", "cancelled", "succeeded"}
        [failed] = [row for row in rows if row.status == "failed"]
        assert "rejected client id" in failed.error and failed.error_kind == "InvalidClientError"
        assert all(row.error.startswith("stopped: ") for row in rows if row.status == "cancelled")
        assert {row.dataset: row.requests for row in rows} == {d.key: client.stats.of(d.key).requests for d in DATASETS}
        assert all(row.ended_at is not None and row.duration_s is not None for row in rows)
        with _client(sim, OTHER) as other:
            results = list(sync_tenant(other, engine, DATASETS, run_id="healthy"))
        assert all(r.succeeded for r in results)
        assert_warehouse_equals_ground_truth(url, sim, OTHER.tenant_id, DATASETS)
