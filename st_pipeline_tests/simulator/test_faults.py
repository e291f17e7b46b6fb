"""Planned faults: each kind has its effect, is counted, and is reproducible from the seed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import httpx
import pytest

from st_pipeline.simulator import FaultPlan, Simulator

from .conftest import HOSTILE_CUSTOMER_LIST, HOSTILE_CUSTOMERS, Serve

NO_FAULTS = {"server_error": 0, "drop": 0, "truncate": 0, "slow": 0, "throttle": 0}
PROBLEM_KEYS = {"type", "title", "status", "traceId", "errors", "data"}


def injected(**counts: int) -> dict[str, int]:
    return {**NO_FAULTS, **counts}


def outcome(http: httpx.Client, path: str, **params: str) -> str:
    """What a client sees for one request, as a short comparable string."""
    try:
        response = http.get(path, params=params)
    except httpx.TransportError as error:
        return f"dropped:{type(error).__name__}"
    try:
        response.json()
        parsed = "json"
    except ValueError:
        parsed = "not-json"
    digest = hashlib.sha256(response.content).hexdigest()[:12]
    if response.status_code >= 400 and parsed == "json":
        digest = response.json()["title"]  # error bodies carry a random traceId
    return f"{response.status_code}:{parsed}:{digest}"


def test_server_errors_are_500_502_503_with_json_or_html_bodies(serve: Serve) -> None:
    sim, http = serve(faults=FaultPlan(server_error_rate=1.0))
    responses = [http.get(HOSTILE_CUSTOMERS) for _ in range(30)]
    assert {response.status_code for response in responses} == {500, 502, 503}
    kinds: Counter[str] = Counter()
    for response in responses:
        content_type = response.headers["Content-Type"]
        if content_type.startswith("text/html"):
            assert response.text.startswith("<!DOCTYPE html>")
            assert str(response.status_code) in response.text
            kinds["html"] += 1
        else:
            assert content_type.startswith("application/json")
            body = response.json()
            assert set(body) == PROBLEM_KEYS and body["status"] == response.status_code
            kinds["json"] += 1
    assert kinds["html"] > 0 and kinds["json"] > 0
    assert sim.stats.injected == injected(server_error=30)
    assert sim.stats.injected_total == 30
    assert sim.stats.injected_for(5001) == injected(server_error=30)


def test_dropped_requests_close_the_connection_without_a_response(serve: Serve) -> None:
    sim, http = serve(faults=FaultPlan(drop_rate=1.0))
    for _ in range(3):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.get(HOSTILE_CUSTOMERS)
    assert sim.stats.injected == injected(drop=3)
    assert sim.stats.responses_by_status == {200: 1}  # only the token: nothing was answered
    sim.set_fault_plan(None)
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200  # the client reconnects


def test_truncated_responses_are_cut_in_half(serve: Serve) -> None:
    sim, http = serve(faults=FaultPlan(truncate_rate=1.0))
    truncated = http.get(HOSTILE_CUSTOMERS)
    sim.set_fault_plan(None)
    full = http.get(HOSTILE_CUSTOMERS)
    assert truncated.status_code == full.status_code == 200
    assert int(truncated.headers["Content-Length"]) == len(truncated.content)
    assert truncated.content == full.content[: len(full.content) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.content)
    assert sim.stats.injected == injected(truncate=1)


def test_slow_responses_are_correct_and_counted(serve: Serve) -> None:
    sim, http = serve(faults=FaultPlan(slow_rate=1.0, slow_s=0.01))
    slow = http.get(HOSTILE_CUSTOMERS, params={"from": "2024-01-01"})
    sim.set_fault_plan(None)
    assert slow.status_code == 200
    assert slow.json() == http.get(HOSTILE_CUSTOMERS, params={"from": "2024-01-01"}).json()
    assert sim.stats.injected == injected(slow=1)


def test_injected_throttling_is_a_429_with_the_planned_retry_after(serve: Serve) -> None:
    sim, http = serve(faults=FaultPlan(throttle_rate=1.0, injected_retry_after_s=3))
    response = http.get(HOSTILE_CUSTOMER_LIST)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    body = response.json()
    assert set(body) == PROBLEM_KEYS
    assert body["title"] == "Rate limit is exceeded. Try again in 3 seconds."
    assert sim.stats.injected == injected(throttle=1)
    assert sim.stats.throttled == 0  # injected, not the rate limit


def test_faults_spare_the_token_endpoint_and_unauthorized_requests(serve: Serve) -> None:
    sim, http = serve(faults=FaultPlan(drop_rate=1.0))  # the fixture got its token regardless
    assert http.get(HOSTILE_CUSTOMERS, headers={"ST-App-Key": "ak1.wrong"}).status_code == 401
    assert http.get(HOSTILE_CUSTOMERS, headers={"Authorization": "x"}).status_code == 401
    assert sim.stats.injected_total == 0


def test_queued_faults_are_counted_as_injected(serve: Serve) -> None:
    sim, http = serve()
    sim.inject_faults(503)
    sim.inject_faults(429, retry_after_s=2)
    assert http.get(HOSTILE_CUSTOMERS).status_code == 503
    assert http.get(HOSTILE_CUSTOMERS).headers["Retry-After"] == "2"
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200
    assert sim.stats.injected == injected(server_error=1, throttle=1)
    assert sim.stats.injected_total == 2


def quick(plan: FaultPlan) -> FaultPlan:
    return dataclasses.replace(plan, slow_s=0.001)


def request_sequence(http: httpx.Client) -> list[str]:
    """A fixed mix of distinct and repeated requests, and what each one got."""
    outcomes = []
    for page in range(1, 9):
        outcomes.append(outcome(http, HOSTILE_CUSTOMER_LIST, page=str(page), pageSize="3"))
    for _ in range(8):
        outcomes.append(outcome(http, HOSTILE_CUSTOMERS))
    outcomes.append(outcome(http, HOSTILE_CUSTOMER_LIST, pageSize="3", page="2"))
    return outcomes


def test_the_same_seed_gives_the_same_faults(serve: Serve) -> None:
    plan = quick(FaultPlan.uniform(0.3))
    first, first_http = serve(faults=plan, seed=11)
    second, second_http = serve(faults=plan, seed=11)
    sequence = request_sequence(first_http)
    assert request_sequence(second_http) == sequence
    assert first.stats.injected == second.stats.injected
    assert first.stats.injected_total == len(sequence)  # five kinds at 0.3 each: always a fault
    assert len(set(sequence)) > 3
    reseeded, reseeded_http = serve(faults=plan, seed=12)
    assert request_sequence(reseeded_http) != sequence


def test_a_repeated_request_gets_a_fresh_reproducible_draw(serve: Serve) -> None:
    plan = FaultPlan(drop_rate=0.5)
    first, first_http = serve(faults=plan)
    second, second_http = serve(faults=plan)
    repeated = [outcome(first_http, HOSTILE_CUSTOMERS) for _ in range(24)]
    assert any(o.startswith("dropped") for o in repeated)
    assert any(o.startswith("200") for o in repeated)
    assert [outcome(second_http, HOSTILE_CUSTOMERS) for _ in range(24)] == repeated


def test_draws_do_not_depend_on_the_order_of_requests(serve: Serve) -> None:
    """Concurrent clients interleave differently every run; each request's draw must not."""
    plan = quick(FaultPlan.uniform(0.1))
    pages = [str(page) for page in range(1, 21)]
    forward, forward_http = serve(faults=plan)
    backward, backward_http = serve(faults=plan)
    ahead = {p: outcome(forward_http, HOSTILE_CUSTOMER_LIST, page=p, pageSize="1") for p in pages}
    behind = {p: outcome(backward_http, HOSTILE_CUSTOMER_LIST, page=p, pageSize="1") for p in reversed(pages)}
    assert ahead == behind
    assert forward.stats.injected == backward.stats.injected


def test_fault_plans_validate_their_rates() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        FaultPlan(drop_rate=1.5)
    with pytest.raises(ValueError, match="slow_s"):
        FaultPlan(slow_s=-1)
    plan = FaultPlan.uniform(0.3)
    assert plan.total_rate == 1.0
    assert list(plan.rates().values()) == pytest.approx([0.2] * 5)
    assert FaultPlan.uniform(0.1).rates()["throttle"] == pytest.approx(0.1)


def test_a_simulator_without_faults_serves_normally(serve: Serve) -> None:
    sim, http = serve(faults=FaultPlan())
    assert isinstance(sim, Simulator)
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200
    assert sim.stats.injected_total == 0
