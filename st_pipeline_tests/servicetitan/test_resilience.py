"""Rate limiter, retries and the consecutive-failure stop: units with a fake clock, then against the simulator."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import Endpoint, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.errors import (
    ConsecutiveFailuresError,
    MissingScopeError,
    RateLimitedError,
    RequestError,
    ServerError,
)
from st_pipeline.servicetitan.ratelimit import RateLimiter, shared_limiter
from st_pipeline.servicetitan.resilience import ConsecutiveFailureStop, RetryPolicy, retry_after_s
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import Simulator
from st_pipeline_tests.conftest import TENANT_A


class FakeTime:
    """A clock whose sleep advances it: waits are recorded, never slept."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# -- rate limiter ---------------------------------------------------------------------------


def test_limiter_spaces_requests_at_the_configured_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(60, burst=1, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    for _ in range(121):
        limiter.acquire()
    assert fake.now - start == pytest.approx(2.0)  # 120 intervals of 1/60 s


def test_limiter_burst_then_steady_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, burst=5, clock=fake.clock, sleep=fake.sleep)
    sent = [limiter.acquire() for _ in range(15)]
    assert sent[:5] == [100.0] * 5  # the burst goes at once
    assert fake.now - 100.0 == pytest.approx(1.0)  # 15 requests: 5 at once, then 10 at 0.1 s


def test_429_pauses_every_caller_and_slows_the_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(60, burst=1, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire()
    limiter.throttled(3.0)
    assert limiter.rate == pytest.approx(42)  # cut by 30%
    limiter.acquire()
    assert fake.now >= 103.0
    for _ in range(200):
        limiter.succeeded()
    assert limiter.rate == 60


def test_429s_of_requests_sent_before_a_cut_do_not_cut_again() -> None:
    """Eight threads' requests in flight all meet the same empty bucket: one congestion episode, one cut."""
    fake = FakeTime()
    limiter = RateLimiter(60, clock=fake.clock, sleep=fake.sleep)
    in_flight = [limiter.acquire() for _ in range(8)]
    fake.now += 0.01
    for sent_at in in_flight:
        limiter.throttled(1.0, sent_at)
    assert limiter.cuts == 1 and limiter.throttle_events == 8
    assert limiter.rate == pytest.approx(42)
    limiter.throttled(1.0, limiter.acquire())  # sent after the cut, at the new rate: cut again
    assert limiter.cuts == 2 and limiter.rate == pytest.approx(42 * 0.7)


def test_shared_limiter_is_one_per_app_key_and_tenant() -> None:
    assert shared_limiter("ak1.x", 1, 60) is shared_limiter("ak1.x", 1, 60)
    assert shared_limiter("ak1.x", 1, 60) is not shared_limiter("ak1.x", 2, 60)
    assert shared_limiter("ak1.x", 1, 60) is not shared_limiter("ak1.y", 1, 60)


# -- retry policy and consecutive-failure stop-----------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=8)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        delay = policy.backoff_s(attempt, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_from_header_or_title() -> None:
    assert retry_after_s("7", None) == 7
    assert retry_after_s(None, "Rate limit is exceeded. Try again in 12 seconds.") == 12
    assert retry_after_s("soon", "no number here") is None


def test_consecutive_failures_stop_the_tenant_for_the_run() -> None:
    stop = ConsecutiveFailureStop(7, limit=3)
    for _ in range(2):
        stop.before_request("/x")
        stop.record_failure("HTTP 503")
    stop.record_success()  # a success before the limit starts the count again
    for _ in range(3):
        stop.before_request("/x")
        stop.record_failure("HTTP 503")
    assert stop.stopped
    with pytest.raises(ConsecutiveFailuresError, match=r"tenant 7.*3 consecutive requests failed.*HTTP 503.*this run"):
        stop.before_request("/x")
    stop.record_success()  # a late answer of a request already in flight does not restart the tenant
    with pytest.raises(ConsecutiveFailuresError):
        stop.before_request("/x")


# -- against the simulator -------------------------------------------------------------------


def _client(sim: Simulator, fake: FakeTime, **options: Any) -> ServiceTitanClient:
    """A client on the fake clock; ``options`` are passed through to ``ClientOptions`` unchanged."""
    settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(TENANT_A.tenant_id, TENANT_A.client_id, SecretStr(TENANT_A.client_secret))
    return ServiceTitanClient(
        settings,
        credentials,
        options=ClientOptions(**options),
        limiter=RateLimiter(1000, clock=fake.clock, sleep=fake.sleep),
        clock=fake.clock,
        sleep=fake.sleep,
    )


def _customers_list() -> Endpoint:
    endpoint = load_catalogue().dataset("crm/customers").list
    assert endpoint is not None
    return endpoint


CUSTOMERS_LIST = _customers_list()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_errors_are_retried(fresh_simulator: Simulator, status: int) -> None:
    fake = FakeTime()
    with _client(fresh_simulator, fake) as client:
        fresh_simulator.inject_faults(status, count=3, tenant_id=TENANT_A.tenant_id, retry_after_s=2)
        page = next(client.iter_list(CUSTOMERS_LIST, page_size=10))
    assert len(page.records) == 10
    assert client.stats.retries == 3 and client.stats.requests == 4
    if status == 429:
        assert client.stats.throttled == 3
        assert fake.sleeps.count(2.0) == 3  # Retry-After honoured, not the backoff


@pytest.mark.parametrize(("status", "error"), [(400, RequestError), (403, MissingScopeError)])
def test_client_errors_are_not_retried(fresh_simulator: Simulator, status: int, error: type) -> None:
    fake = FakeTime()
    with _client(fresh_simulator, fake) as client:
        fresh_simulator.inject_faults(status, count=1, tenant_id=TENANT_A.tenant_id)
        with pytest.raises(error, match=f"tenant {TENANT_A.tenant_id}"):
            next(client.iter_list(CUSTOMERS_LIST, page_size=10))
    assert client.stats.requests == 1 and client.stats.retries == 0


def test_retries_are_bounded_in_count(fresh_simulator: Simulator) -> None:
    fake = FakeTime()
    with _client(
        fresh_simulator, fake, retry=RetryPolicy(max_attempts=4), stop_after_consecutive_failures=100
    ) as client:
        fresh_simulator.inject_faults(503, count=50, tenant_id=TENANT_A.tenant_id)
        with pytest.raises(ServerError, match="gave up after 4 attempts"):
            next(client.iter_list(CUSTOMERS_LIST, page_size=10))
    assert client.stats.requests == 4


def test_retries_are_bounded_in_time(fresh_simulator: Simulator) -> None:
    fake = FakeTime()
    with _client(fresh_simulator, fake, retry=RetryPolicy(max_attempts=100, max_elapsed_s=20)) as client:
        fresh_simulator.inject_faults(503, count=500, tenant_id=TENANT_A.tenant_id)
        with pytest.raises(ServerError, match="gave up after"):
            next(client.iter_list(CUSTOMERS_LIST, page_size=10))
    assert sum(fake.sleeps) <= 20


def test_throttling_is_pacing_bounded_by_the_dataset_throttle_budget(fresh_simulator: Simulator) -> None:
    """Twelve 429s asking for 8 s each: more than the 4 attempts allowed, yet no failure — until the
    dataset's pauses pass its throttle budget."""
    fake = FakeTime()
    with _client(fresh_simulator, fake, retry=RetryPolicy(max_attempts=4), throttle_budget_s=100) as client:
        fresh_simulator.inject_faults(429, count=12, tenant_id=TENANT_A.tenant_id, retry_after_s=8)
        page = next(client.iter_list(CUSTOMERS_LIST, page_size=10))
        assert len(page.records) == 10 and client.stats.throttled == 12
        fresh_simulator.inject_faults(429, count=50, tenant_id=TENANT_A.tenant_id, retry_after_s=8)
        with pytest.raises(RateLimitedError, match=r"asked for 104 s of pauses.*100 s allowed \(throttle_budget_s\)"):
            next(client.iter_list(CUSTOMERS_LIST, page_size=10))
    assert client.stats.throttled == 13


def test_consecutive_failures_stop_hammering(fresh_simulator: Simulator) -> None:
    fake = FakeTime()
    with _client(fresh_simulator, fake, stop_after_consecutive_failures=3) as client:
        fresh_simulator.inject_faults(500, count=100, tenant_id=TENANT_A.tenant_id)
        with pytest.raises(ConsecutiveFailuresError, match=f"tenant {TENANT_A.tenant_id}"):
            next(client.iter_list(CUSTOMERS_LIST, page_size=10))
        assert client.stats.requests == 3
        fresh_simulator.clear_faults()
        fake.now += 3600  # however long the run goes on: no request is sent again
        with pytest.raises(ConsecutiveFailuresError):
            next(client.iter_list(CUSTOMERS_LIST, page_size=10))
        assert client.stats.requests == 3


def test_a_retry_after_a_long_wait_fetches_a_fresh_token(fresh_simulator: Simulator) -> None:
    fake = FakeTime()
    with _client(fresh_simulator, fake, retry=RetryPolicy(max_elapsed_s=1000), max_retry_after_s=900) as client:
        next(client.iter_list(CUSTOMERS_LIST, page_size=10))
        fresh_simulator.inject_faults(429, count=1, tenant_id=TENANT_A.tenant_id, retry_after_s=880)
        next(client.iter_list(CUSTOMERS_LIST, page_size=10))
    # The client's own clock says the token expired during the wait: a new one, no 401 needed.
    assert client.tokens.token_requests == 2 and client.stats.reauthentications == 0


def test_paged_list_with_total_fetches_pages_in_parallel_in_order(simulator: Simulator) -> None:
    fake = FakeTime()
    truth = simulator.ground_truth(TENANT_A.tenant_id, "crm/customers")
    with _client(simulator, fake) as client:
        pages = list(client.iter_list(CUSTOMERS_LIST, page_size=7))
    assert [p.number for p in pages] == list(range(1, len(pages) + 1))
    assert [r["id"] for p in pages for r in p.records] == [r["id"] for r in truth]


def test_an_absurd_retry_after_fails_that_request_at_once_and_does_not_pause_the_others(
    fresh_simulator: Simulator,
) -> None:
    """Retry-After: 999999 is beyond the cap: the request fails as throttled, naming the cap, without
    sleeping; the tenant's next request is not held back by it."""
    fake = FakeTime()
    with _client(fresh_simulator, fake, max_retry_after_s=60) as client:
        fresh_simulator.inject_faults(429, count=1, tenant_id=TENANT_A.tenant_id, retry_after_s=999999)
        with pytest.raises(RateLimitedError, match="asked to wait 999999 s.*more than the 60 s"):
            next(client.iter_list(CUSTOMERS_LIST, page_size=10))
        assert client.stats.requests == 1  # not retried
        page = next(client.iter_list(CUSTOMERS_LIST, page_size=10))  # another dataset goes on
    assert len(page.records) == 10
    assert sum(fake.sleeps) < 60  # nobody waited for the 999999 s (fake clock: nothing really slept)


def test_the_deprecated_config_name_still_sets_the_stop_with_a_warning() -> None:
    from st_pipeline.defs.resources import ServiceTitanResource
    from st_pipeline.settings import load_settings

    credentials = TenantCredentials(TENANT_A.tenant_id, TENANT_A.client_id, SecretStr(TENANT_A.client_secret))
    settings = load_settings({"SERVICETITAN_APP_KEY": "ak1.canary-not-sent"})  # the client sends nothing here
    with pytest.warns(FutureWarning, match="circuit_failure_threshold is deprecated.*stop_after_consecutive_failures"):
        client = ServiceTitanResource(circuit_failure_threshold=3).client(credentials, settings)
    with client:
        assert client.failure_stop.limit == 3
    with ServiceTitanResource(stop_after_consecutive_failures=4).client(credentials, settings) as client:
        assert client.failure_stop.limit == 4
