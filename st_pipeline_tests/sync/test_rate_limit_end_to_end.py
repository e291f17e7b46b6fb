"""The client's own rate limiter keeps a sync under ServiceTitan's per-tenant limit.

The fault matrix cannot tell: its syncs send fewer requests than the simulator's bucket holds. Here
the sync asks for several seconds' worth of the simulator's limit (tiny export batches), so only a
client that really paces itself gets every answer without a single 429.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.resilience import RetryPolicy
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import sync_tenant
from st_pipeline_tests.support import assert_warehouse_equals_ground_truth, prepared_warehouse

# A tenant of its own: the client's limiter is the process-wide one of (app key, tenant).
TENANT = SimulatedTenant(tenant_id=6303, client_id="cid.paced", client_secret="cs1.paced-secret")
SIMULATOR_LIMIT = 40  # requests per second per tenant; the bucket holds one second's worth
CLIENT_RATE = 30  # the client's pace, below the simulator's limit
# About 200 requests (2-record export batches): five seconds' worth of the limit, sent unpaced in
# well under one second by the sync's eight threads.
MIN_REQUESTS = 5 * SIMULATOR_LIMIT
DATASETS = load_catalogue().core_datasets()


def test_a_sync_demanding_more_than_the_limit_is_never_throttled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = prepared_warehouse(url, DATASETS)
    config = SimulatorConfig(
        tenants=[TENANT],
        seed=11,
        scale=0.04,
        export_batch_size=2,
        datasets=CORE_DATASETS,
        rate_limit_per_s=SIMULATOR_LIMIT,
    )
    credentials = TenantCredentials(TENANT.tenant_id, TENANT.client_id, SecretStr(TENANT.client_secret))
    # The production path: no limiter handed in, the client builds its shared one from its options.
    options = ClientOptions(requests_per_second=CLIENT_RATE, retry=RetryPolicy(base_delay_s=0.05, max_delay_s=0.5))
    try:
        with Simulator(config) as sim, ServiceTitanClient(_settings(sim), credentials, options=options) as client:
            results = list(sync_tenant(client, engine, DATASETS, run_id="paced"))
            stats = sim.stats
            assert all(r.succeeded for r in results), [str(r.error) for r in results if r.error]
            # The premise: the sync's demand clearly exceeds what the simulator lets through.
            assert stats.api_requests_for(TENANT.tenant_id) >= MIN_REQUESTS
            # The simulator's rate limit never refused a request, and no 429 reached the client.
            assert stats.throttled_for(TENANT.tenant_id) == 0
            assert stats.responses_by_status.get(429, 0) == 0
            assert client.stats.retries == 0
            assert_warehouse_equals_ground_truth(url, sim, TENANT.tenant_id, DATASETS)
    finally:
        engine.dispose()


def _settings(sim: Simulator) -> ApiSettings:
    return ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))


# A server granting 5 requests/s where 60 are published (its app key shared with another
# integration), revoking every token each second: pacing, not failure.
THROTTLED_TENANTS = [
    SimulatedTenant(
        tenant_id=6304 + n, client_id=f"cid.throttled-{n}", client_secret=f"cs1.throttled-{n}", rate_limit_per_s=5
    )
    for n in range(2)
]


def test_a_server_granting_a_twelfth_of_the_limit_is_converged_on_and_every_dataset_is_exact(tmp_path: Path) -> None:
    config = SimulatorConfig(
        tenants=THROTTLED_TENANTS,
        seed=13,
        scale=0.04,
        export_batch_size=3,
        datasets=CORE_DATASETS,
        revoke_tokens_every_s=1.0,
    )
    with Simulator(config) as sim:
        engines = {
            t.tenant_id: prepared_warehouse(f"sqlite:///{tmp_path / f'{t.tenant_id}.db'}", DATASETS)
            for t in THROTTLED_TENANTS
        }
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                runs = {
                    t.tenant_id: pool.submit(_sync_throttled, sim, t, engines[t.tenant_id]) for t in THROTTLED_TENANTS
                }
                results = {tenant_id: run.result() for tenant_id, run in runs.items()}
            for tenant in THROTTLED_TENANTS:
                failed = [(r.dataset.key, str(r.error)) for r in results[tenant.tenant_id] if not r.succeeded]
                assert failed == [] and len(results[tenant.tenant_id]) == len(DATASETS)
                url = f"sqlite:///{tmp_path / f'{tenant.tenant_id}.db'}"
                assert_warehouse_equals_ground_truth(url, sim, tenant.tenant_id, DATASETS)
                answers = sim.stats.admissions_for(tenant.tenant_id)
                assert sim.stats.token_requests_for(tenant.tenant_id) > 5  # the premise: tokens kept being revoked
                assert answers.count(False) > 0  # the premise: the server did throttle
                steady = answers[len(answers) // 2 :]
                share = steady.count(False) / len(steady)
                print(
                    f"tenant {tenant.tenant_id}: {len(answers)} requests, {answers.count(False)} answered 429 "
                    f"({answers.count(False) / len(answers):.1%}); second half {share:.1%}"
                )
                assert share < 0.05
        finally:
            for engine in engines.values():
                engine.dispose()


def _sync_throttled(sim: Simulator, tenant: SimulatedTenant, engine) -> list:
    credentials = TenantCredentials(tenant.tenant_id, tenant.client_id, SecretStr(tenant.client_secret))
    # Production defaults, except the retry backoff (short, so the test is quick).
    options = ClientOptions(retry=RetryPolicy(base_delay_s=0.05, max_delay_s=0.5))
    with ServiceTitanClient(_settings(sim), credentials, options=options) as client:
        return list(sync_tenant(client, engine, DATASETS, run_id=f"throttled-{tenant.tenant_id}"))
