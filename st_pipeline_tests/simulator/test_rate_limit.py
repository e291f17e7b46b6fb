"""The simulator's rate limit: a token bucket per (app key, tenant), answered with 429s."""

from __future__ import annotations

import re

import httpx

from st_pipeline.simulator import Simulator

from .conftest import HOSTILE_CUSTOMERS, OTHER_TENANT, Serve, authorize

TITLE = re.compile(r"Rate limit is exceeded\. Try again in (\d+) seconds\.")


def burst(http: httpx.Client, count: int, path: str = HOSTILE_CUSTOMERS) -> list[httpx.Response]:
    return [http.get(path) for _ in range(count)]


def assert_throttled(response: httpx.Response) -> int:
    """Checks a rate-limit 429 and returns its Retry-After."""
    assert response.status_code == 429
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    body = response.json()
    assert set(body) == {"type", "title", "status", "traceId", "errors", "data"}
    assert body["status"] == 429 and body["errors"] == {} and body["data"] == {}
    match = TITLE.fullmatch(body["title"])
    assert match is not None, body["title"]
    # Clients read the wait from the title's second-to-last word, or from the header.
    assert int(body["title"].split(" ")[-2]) == retry_after == int(match.group(1))
    return retry_after


def freeze_rate_limit_clock(sim: Simulator, at: float) -> list[float]:
    """Replace the rate limit's clock by a settable one, so that no token refills by itself."""
    assert sim.rate_limiter is not None
    now = [at]
    sim.rate_limiter.clock = lambda: now[0]
    return now


def test_a_burst_beyond_the_rate_is_throttled(serve: Serve) -> None:
    sim, http = serve(rate_limit_per_s=5)
    responses = burst(http, 20)
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 429}
    throttled = [response for response in responses if response.status_code == 429]
    assert throttled, "20 back-to-back requests at 5/s must be throttled"
    for response in throttled:
        assert_throttled(response)
    accepted = statuses.count(200)
    assert accepted >= 5  # the bucket starts full
    assert sim.stats.throttled_for(5001) == len(throttled) == sim.stats.throttled
    assert sim.stats.injected_total == 0  # the rate limit is not an injected fault
    assert sim.stats.responses_by_status[429] == len(throttled)
    # A token bucket never lets more than capacity + one second's refill through in a second.
    assert sim.stats.max_requests_per_second_for(5001) <= min(accepted, 5 + 5)


def test_the_bucket_holds_one_second_and_refused_requests_take_no_token(serve: Serve) -> None:
    sim, http = serve(rate_limit_per_s=5)
    now = freeze_rate_limit_clock(sim, 1000.0)
    statuses = [response.status_code for response in burst(http, 20)]
    assert statuses == [200] * 5 + [429] * 15
    assert sim.stats.throttled_for(5001) == 15
    assert sim.stats.max_requests_per_second_for(5001) == 5
    now[0] += 0.5  # half a second refills 2.5 tokens; the 15 refusals took none
    statuses = [response.status_code for response in burst(http, 4)]
    assert statuses == [200, 200, 429, 429]
    # 5 + 2 within one second: a bucket of one second allows up to twice the rate in a window.
    assert sim.stats.max_requests_per_second_for(5001) == 7
    now[0] += 10.0  # a long pause refills the bucket only up to its capacity
    assert [response.status_code for response in burst(http, 7)] == [200] * 5 + [429] * 2
    assert sim.stats.max_requests_per_second_for(5001) == 7
    assert sim.stats.throttled_for(5001) == 15 + 2 + 2


def test_retry_after_covers_the_wait_for_the_next_token(serve: Serve) -> None:
    sim, http = serve(rate_limit_per_s=0.25)  # one request per 4 s, a bucket of one
    freeze_rate_limit_clock(sim, 50.0)
    first, second = burst(http, 2)
    assert first.status_code == 200
    assert assert_throttled(second) == 4


def test_each_tenant_has_its_own_bucket(serve: Serve) -> None:
    sim, http = serve(rate_limit_per_s=2)
    freeze_rate_limit_clock(sim, 0.0)
    assert [r.status_code for r in burst(http, 3)] == [200, 200, 429]
    with httpx.Client(base_url=sim.url) as other:
        authorize(other, sim, OTHER_TENANT)
        path = "/crm/v2/tenant/5002/export/customers"
        assert [r.status_code for r in burst(other, 3, path)] == [200, 200, 429]
    assert sim.stats.throttled_for(5001) == sim.stats.throttled_for(5002) == 1


def test_requests_that_fail_authentication_are_not_rate_limited(serve: Serve) -> None:
    sim, http = serve(rate_limit_per_s=1)
    freeze_rate_limit_clock(sim, 0.0)
    for _ in range(3):
        assert http.get(HOSTILE_CUSTOMERS, headers={"ST-App-Key": "ak1.wrong"}).status_code == 401
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200
    assert sim.stats.throttled == 0


def test_without_a_rate_limit_the_peak_rate_is_still_recorded(serve: Serve) -> None:
    sim, http = serve()
    assert sim.rate_limiter is None
    assert all(response.status_code == 200 for response in burst(http, 6))
    assert 1 <= sim.stats.max_requests_per_second_for(5001) <= 6
    assert sim.stats.max_requests_per_second_for(5002) == 0
