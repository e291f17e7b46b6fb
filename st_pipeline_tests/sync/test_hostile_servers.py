"""A hostile ServiceTitan: every misbehaviour costs one dataset (or nothing), never a hung tenant.

One case per way a server can misbehave. Each runs a whole tenant sync against the simulator with
small bounds, under a wall-clock limit enforced by pytest-timeout (a hang fails the test; nothing
here asserts on speed), and checks that the affected dataset reports the cause while every other
dataset loads exactly what the simulator holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PagingLoopError,
    RateLimitedError,
    ServerError,
    StuckCursorError,
    UnusableResponseError,
)
from st_pipeline.servicetitan.http import unhealable_cause
from st_pipeline.servicetitan.ratelimit import RateLimiter
from st_pipeline.servicetitan.resilience import RetryPolicy
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import ExtractResult, SyncOptions, sync_tenant
from st_pipeline.sync.state import FAILED, SUCCEEDED, UNAVAILABLE
from st_pipeline_tests.support import assert_warehouse_equals_ground_truth, prepared_warehouse

# A hang fails the test: the thread method ends the (worker) process even when threads are stuck in
# a sleep, where a signal would only interrupt the main thread.
pytestmark = pytest.mark.timeout(60, method="thread")

CATALOGUE = load_catalogue()
KEYS = (
    "crm/customers",
    "jpm/jobs",  # export feeds
    "jpm/job-types",
    "crm/contacts",  # paged lists with a modifiedOn watermark
    # lists with only createdOnOrAfter: read in full
    "dispatch/arrival-windows",
    "settings/user-roles",
    "accounting/payment-types",
    "dispatch/business-hours",  # a lookup
)
DATASETS = [CATALOGUE.dataset(key) for key in KEYS]
# One tenant per case, so that one case's misbehaviour never meets another's.
TENANTS = [
    SimulatedTenant(tenant_id=7300 + n, client_id=f"cid.hostile-{n}", client_secret=f"cs1.hostile-{n}")
    for n in range(30)
]
_next_tenant = iter(TENANTS)

# Small bounds, so that each case ends in seconds; the production defaults are larger.
OPTIONS = ClientOptions(
    timeout_s=2.0,
    request_deadline_s=2.0,
    retry=RetryPolicy(max_attempts=4, max_elapsed_s=6.0, base_delay_s=0.05, max_delay_s=0.2),
    max_retry_after_s=5.0,
    max_response_bytes=256 * 1024,
    max_pages=50,
)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(tenants=TENANTS, seed=11, scale=0.05, export_batch_size=20, datasets=KEYS)
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture()
def tenant() -> SimulatedTenant:
    return next(_next_tenant)


@pytest.fixture()
def warehouse(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = prepared_warehouse(url, DATASETS)
    yield url, engine
    engine.dispose()


def _client(
    sim: Simulator, tenant: SimulatedTenant, *, api_url: str | None = None, max_pages: int = OPTIONS.max_pages
) -> ServiceTitanClient:
    settings = ApiSettings(api_url=api_url or sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(tenant.tenant_id, tenant.client_id, SecretStr(tenant.client_secret))
    options = dataclasses.replace(OPTIONS, max_pages=max_pages)
    return ServiceTitanClient(settings, credentials, options=options, limiter=RateLimiter(200))


def _sync(
    sim: Simulator, tenant: SimulatedTenant, engine: sa.Engine, *, max_pages: int = OPTIONS.max_pages
) -> dict[str, ExtractResult]:
    with _client(sim, tenant, max_pages=max_pages) as client:
        return {r.dataset.key: r for r in sync_tenant(client, engine, DATASETS, run_id=f"hostile-{tenant.tenant_id}")}


def _others_load_exactly(
    url: str, sim: Simulator, tenant: SimulatedTenant, results: dict[str, ExtractResult], affected: set[str]
) -> None:
    others: list[Dataset] = [d for d in DATASETS if d.key not in affected]
    for dataset in others:
        assert results[dataset.key].status == SUCCEEDED, (dataset.key, results[dataset.key].error)
    assert_warehouse_equals_ground_truth(url, sim, tenant.tenant_id, others)


def test_an_absurd_retry_after_fails_one_request_and_the_rest_load(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.inject_faults(429, 1, tenant_id=tenant.tenant_id, retry_after_s=999_999)
    results = _sync(sim, tenant, engine)
    throttled = [key for key, r in results.items() if isinstance(r.error, RateLimitedError)]
    assert len(throttled) == 1
    assert "max_retry_after_s" in str(results[throttled[0]].error)
    assert results[throttled[0]].status == FAILED
    _others_load_exactly(url, sim, tenant, results, set(throttled))


def test_a_dripping_body_is_cut_off_by_the_request_deadline(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.misbehave(tenant.tenant_id, "jpm/job-types", drip_bytes_per_s=20)
    results = _sync(sim, tenant, engine)
    error = results["jpm/job-types"].error
    assert isinstance(error, ServerError) and "no complete response within 2 s" in str(error)
    assert "2 times" in str(error) and "100 s" in str(error)
    assert results["jpm/job-types"].requests == 2  # cut off once, tried once more, not again
    _others_load_exactly(url, sim, tenant, results, {"jpm/job-types"})


def test_an_export_cursor_that_repeats_with_records_stops_that_feed(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.misbehave(tenant.tenant_id, "crm/customers", repeat_cursor=True)
    results = _sync(sim, tenant, engine)
    result = results["crm/customers"]
    assert isinstance(result.error, StuckCursorError) and "export/customers" in str(result.error)
    assert result.requests == 2  # the first page, and the one that handed its token back
    _others_load_exactly(url, sim, tenant, results, {"crm/customers"})


def test_a_list_that_says_has_more_forever_stops_within_a_few_pages(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.misbehave(tenant.tenant_id, "crm/contacts", endless_has_more=True)
    results = _sync(sim, tenant, engine)
    result = results["crm/contacts"]
    assert isinstance(result.error, PagingLoopError) and "more is waiting" in str(result.error)
    assert result.requests <= 5
    _others_load_exactly(url, sim, tenant, results, {"crm/contacts"})


class _Quirks(TypedDict, total=False):
    """The keyword arguments of ``Simulator.misbehave`` these cases use."""

    same_page: bool
    short_pages: bool
    total_count_offset: int
    endless_has_more: bool


# Paging that never ends, against the production page ceiling (max_pages 20,000): each guard has to
# see the loop by itself, within 20 requests, while pytest-timeout bounds the wall time.
LOOPS: dict[str, tuple[str, _Quirks, str]] = {
    "same page of a list": ("crm/contacts", {"same_page": True}, "repeats page 1"),
    "same page of an export feed": ("crm/customers", {"same_page": True}, "repeats page 1"),
    "short pages that say hasMore": ("jpm/job-types", {"short_pages": True}, "fewer records than the page size"),
    "absurd totalCount": (
        "crm/contacts",
        {"total_count_offset": 10**12, "endless_has_more": True},
        "a total no tenant has",
    ),
}


@pytest.mark.parametrize("case", list(LOOPS))
def test_a_paging_loop_is_seen_within_a_few_pages(sim, tenant, warehouse, case: str) -> None:
    url, engine = warehouse
    key, quirks, says = LOOPS[case]
    sim.misbehave(tenant.tenant_id, key, **quirks)
    results = _sync(sim, tenant, engine, max_pages=20_000)
    result = results[key]
    assert isinstance(result.error, PagingLoopError) and says in str(result.error), result.error
    assert CATALOGUE.dataset(key).extraction_endpoint.path in str(result.error)
    assert result.requests <= 20
    _others_load_exactly(url, sim, tenant, results, {key})


def test_json_nested_ten_thousand_deep_costs_only_its_dataset(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.misbehave(tenant.tenant_id, "jpm/job-types", deep_json_depth=10_000)
    results = _sync(sim, tenant, engine)
    result = results["jpm/job-types"]
    assert isinstance(result.error, UnusableResponseError) and "nested deeper" in str(result.error)
    assert result.requests == 1  # no retry can fix it
    _others_load_exactly(url, sim, tenant, results, {"jpm/job-types"})


def test_an_oversized_page_is_refused_unread(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.misbehave(tenant.tenant_id, "settings/user-roles", padding_bytes=2 * 1024 * 1024)
    results = _sync(sim, tenant, engine)
    result = results["settings/user-roles"]
    assert isinstance(result.error, UnusableResponseError) and "max_response_mb" in str(result.error)
    assert result.requests == 1
    _others_load_exactly(url, sim, tenant, results, {"settings/user-roles"})


def test_bytes_that_are_not_utf8_fail_that_dataset_at_once(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.misbehave(tenant.tenant_id, "dispatch/arrival-windows", invalid_utf8=True)
    results = _sync(sim, tenant, engine)
    result = results["dispatch/arrival-windows"]
    assert isinstance(result.error, UnusableResponseError) and "UTF-8" in str(result.error)
    assert result.requests == 1
    _others_load_exactly(url, sim, tenant, results, {"dispatch/arrival-windows"})


def test_a_module_the_tenant_lacks_is_skipped_as_unavailable(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    sim.hide_modules(tenant.tenant_id, {"dispatch"})
    results = _sync(sim, tenant, engine)
    missing = {"dispatch/arrival-windows", "dispatch/business-hours"}
    for key in missing:
        assert isinstance(results[key].error, NotFoundError) and "dispatch module" in str(results[key].error)
        assert results[key].status == UNAVAILABLE and not results[key].changed
    _others_load_exactly(url, sim, tenant, results, missing)


@pytest.mark.parametrize("status", [429, 503, 0])
def test_the_token_endpoint_is_retried_like_the_api(sim, tenant, warehouse, status: int) -> None:
    url, engine = warehouse
    sim.inject_token_faults(status, 2, retry_after_s=1 if status == 429 else None)
    before = sim.stats.token_requests_for(tenant.tenant_id)
    results = _sync(sim, tenant, engine)
    assert sim.stats.token_requests_for(tenant.tenant_id) - before >= 3  # two refused, then one issued
    _others_load_exactly(url, sim, tenant, results, set())


def test_a_401_after_a_fresh_token_gets_one_more_token_before_blaming_credentials(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    job_types = CATALOGUE.dataset("jpm/job-types")
    sim.inject_faults(401, 2, tenant_id=tenant.tenant_id)
    with _client(sim, tenant) as client:  # one dataset, so that both 401s meet the same request
        [result] = sync_tenant(client, engine, [job_types], run_id="hostile-401-twice")
        assert client.stats.reauthentications == 2
    assert result.status == SUCCEEDED
    assert_warehouse_equals_ground_truth(url, sim, tenant.tenant_id, [job_types])


def test_three_401s_in_a_row_blame_the_client_credentials_and_end_the_tenant_run(sim, tenant, warehouse) -> None:
    _, engine = warehouse
    sim.inject_faults(401, 3, tenant_id=tenant.tenant_id)
    with _client(sim, tenant) as client, pytest.raises(AuthenticationError) as raised:
        # One dataset, so that the three 401s meet one request and its two fresh tokens.
        list(sync_tenant(client, engine, [CATALOGUE.dataset("jpm/job-types")], run_id="hostile-401"))
    message = str(raised.value)
    assert "client credentials" in message and f"update-credentials --tenant {tenant.tenant_id}" in message
    assert "SERVICETITAN_APP_KEY" not in message and tenant.client_secret not in message


def test_https_against_a_plain_http_server_fails_at_once_saying_what_to_fix(sim, tenant, warehouse) -> None:
    _, engine = warehouse
    https_url = sim.url.replace("http://", "https://")
    with _client(sim, tenant, api_url=https_url) as client:
        with pytest.raises(ConfigurationError) as raised:
            list(sync_tenant(client, engine, DATASETS, run_id="hostile-tls"))
        assert client.stats.retries == 0  # each dataset's first request failed, and none was tried again
        assert client.stats.requests <= len(DATASETS)
    assert "does not speak https" in str(raised.value)


def test_a_url_scheme_httpx_cannot_speak_is_not_retried() -> None:
    with httpx.Client() as http, pytest.raises(httpx.UnsupportedProtocol) as raised:
        http.get("htps://127.0.0.1:9/")
    assert "scheme" in (unhealable_cause(raised.value) or "")
    with httpx.Client() as http, pytest.raises(httpx.ConnectError) as refused:
        http.get("http://127.0.0.1:9/")  # nothing listens on the discard port: a retry may help
    assert unhealable_cause(refused.value) is None


def test_lists_with_only_a_created_on_filter_see_changes_to_existing_records(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    key = "accounting/payment-types"
    [oldest] = sim.ground_truth(tenant.tenant_id, key)[:1]
    sim.apply_changes(tenant.tenant_id, key, created=3)  # newer records: a createdOn watermark would pass the oldest
    _sync(sim, tenant, engine)

    def rename(record: dict) -> None:
        record["name"] = "Renamed payment type"
        record["modifiedOn"] = "2030-01-01T00:00:00Z"

    sim.tamper_records(tenant.tenant_id, key, {oldest["id"]: rename})
    results = _sync(sim, tenant, engine)
    assert results[key].rows_written == 1
    _others_load_exactly(url, sim, tenant, results, set())


def test_reconciliation_of_a_hostile_list_marks_nothing_deleted(sim, tenant, warehouse) -> None:
    url, engine = warehouse
    _sync(sim, tenant, engine)
    sim.misbehave(tenant.tenant_id, "crm/contacts", endless_has_more=True)
    with _client(sim, tenant) as client:
        results = {
            r.dataset.key: r
            for r in sync_tenant(
                client, engine, DATASETS, run_id="hostile-reconcile", options=SyncOptions(reconcile_deletes=True)
            )
        }
    assert isinstance(results["crm/contacts"].error, PagingLoopError)
    assert results["crm/contacts"].rows_deleted == 0
    sim.misbehave(tenant.tenant_id, "crm/contacts")
    assert_warehouse_equals_ground_truth(url, sim, tenant.tenant_id, DATASETS)
