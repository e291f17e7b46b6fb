"""Revoked credentials, latency, and the request counters exposed to other processes."""

from __future__ import annotations

import threading

import httpx
import pytest

from st_pipeline.simulator import Simulator, SimulatorConfig

from .conftest import (
    HOSTILE_CUSTOMERS,
    HOSTILE_TENANT,
    OTHER_TENANT,
    Serve,
    authorize,
    token_for,
)

OTHER_CUSTOMERS = "/crm/v2/tenant/5002/export/customers"


def test_revoked_credentials_get_no_token_and_issued_tokens_stop_working(serve: Serve) -> None:
    sim, http = serve()
    old_token = dict(http.headers)
    with httpx.Client(base_url=sim.url) as other:
        authorize(other, sim, OTHER_TENANT)
        sim.revoke_credentials(5001)
        assert sim.is_revoked(5001) and not sim.is_revoked(5002)
        response = http.get(HOSTILE_CUSTOMERS)
        assert response.status_code == 401
        assert response.json()["status"] == 401
        refused = token_for(http, sim, HOSTILE_TENANT)
        assert refused.status_code == 400 and refused.json() == {"error": "invalid_client"}
        assert other.get(OTHER_CUSTOMERS).status_code == 200  # other tenants are unaffected

    sim.restore_credentials(5001)
    assert not sim.is_revoked(5001)
    assert http.get(HOSTILE_CUSTOMERS, headers=old_token).status_code == 200
    authorize(http, sim, HOSTILE_TENANT)
    assert http.get(HOSTILE_CUSTOMERS).status_code == 200
    assert sim.stats.token_requests_for(5001) == 3


def test_tenants_can_start_revoked(serve: Serve) -> None:
    sim, http = serve(revoked_tenants=(5001,))
    assert token_for(http, sim, HOSTILE_TENANT).json() == {"error": "invalid_client"}
    assert token_for(http, sim, OTHER_TENANT).status_code == 200
    sim.restore_credentials(5001)
    assert token_for(http, sim, HOSTILE_TENANT).status_code == 200


def test_revoking_unknown_tenants_is_an_error() -> None:
    tenant = SimulatorConfig.demo_tenant(1)
    with pytest.raises(ValueError, match="revoked_tenants"):
        SimulatorConfig(tenants=[tenant], revoked_tenants=(2,))
    simulator = Simulator(SimulatorConfig(tenants=[tenant], datasets=("crm/customers",)))
    with pytest.raises(KeyError):
        simulator.revoke_credentials(2)


def test_latency_is_accepted_and_requests_still_succeed(serve: Serve) -> None:
    sim, http = serve(latency_s=0.02)
    assert sim.config.latency_s == 0.02
    statuses: list[int] = []

    def fetch() -> None:
        with httpx.Client(base_url=sim.url, headers=http.headers) as client:
            statuses.append(client.get(HOSTILE_CUSTOMERS).status_code)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4
    with pytest.raises(ValueError, match="latency_s"):
        SimulatorConfig(tenants=[HOSTILE_TENANT], latency_s=-1)


def test_stats_snapshot_is_served_without_credentials(serve: Serve) -> None:
    sim, http = serve()
    sim.inject_faults(502)
    http.get(HOSTILE_CUSTOMERS)
    http.get(HOSTILE_CUSTOMERS)
    token_for(http, sim, OTHER_TENANT)
    with httpx.Client(base_url=sim.url) as anonymous:
        served = anonymous.get("/_simulator/stats").json()
        counts = anonymous.get("/_simulator/tenants/5001/counts").json()
    assert served == sim.stats.snapshot()
    assert counts == sim.record_counts(5001)
    assert served["api_requests"] == 2 and served["token_requests"] == 2
    assert served["responses_by_status"] == {"200": 3, "502": 1}
    assert served["injected_total"] == 1 and served["injected"]["server_error"] == 1
    assert served["throttled"] == 0
    mine = served["tenants"]["5001"]
    assert mine["api_requests"] == 2 and mine["token_requests"] == 1
    assert mine["injected"]["server_error"] == 1 and mine["injected_total"] == 1
    assert mine["throttled"] == 0 and 1 <= mine["max_requests_per_second"] <= 2
    assert served["tenants"]["5002"]["api_requests"] == 0
    sim.stats.reset()
    assert sim.stats.snapshot()["tenants"] == {}
