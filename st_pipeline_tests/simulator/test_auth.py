"""Token endpoint and request authentication of the simulator, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig

TENANT_A = SimulatorConfig.demo_tenant(1001)
TENANT_B = SimulatorConfig.demo_tenant(1002)
APP_KEY = "ak1.test-app"
CUSTOMERS_A = "/crm/v2/tenant/1001/export/customers"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(tenants=[TENANT_A, TENANT_B], app_key=APP_KEY, scale=0.02, datasets=("crm/customers",))
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture()
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url) as client:
        yield client


def token_response(http: httpx.Client, sim: Simulator, tenant: SimulatedTenant, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
        **overrides,
    }
    return http.post(sim.auth_url, data=form)


def auth_headers(http: httpx.Client, sim: Simulator, tenant: SimulatedTenant) -> dict[str, str]:
    token = token_response(http, sim, tenant).json()["access_token"]
    return {"ST-App-Key": APP_KEY, "Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"type", "title", "status", "traceId", "errors", "data"}
    assert body["status"] == status
    return body


def test_demo_tenant_credentials_are_deterministic() -> None:
    tenant = SimulatorConfig.demo_tenant(1001, seed=7)
    assert tenant == SimulatorConfig.demo_tenant(1001, seed=7)
    assert tenant.client_id == "cid.sim1001"
    assert tenant.client_secret.startswith("cs1.sim-") and len(tenant.client_secret) == 8 + 24
    assert tenant.client_secret != SimulatorConfig.demo_tenant(1001, seed=8).client_secret
    assert tenant.client_secret not in repr(tenant)


def test_token_is_issued_for_valid_client_credentials(http: httpx.Client, sim: Simulator) -> None:
    response = token_response(http, sim, TENANT_A)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 32
    assert "tn.crm.customers:r" in body["scope"].split()
    assert TENANT_A.client_secret not in response.text


@pytest.mark.parametrize(
    "overrides",
    [{"client_secret": "cs1.wrong"}, {"client_id": "cid.unknown"}, {"client_secret": ""}],
)
def test_bad_client_credentials_are_invalid_client(
    http: httpx.Client, sim: Simulator, overrides: dict[str, str]
) -> None:
    response = token_response(http, sim, TENANT_A, **overrides)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_client"}


def test_other_grant_types_are_unsupported(http: httpx.Client, sim: Simulator) -> None:
    response = token_response(http, sim, TENANT_A, grant_type="password")
    assert response.status_code == 400
    assert response.json() == {"error": "unsupported_grant_type"}


def test_valid_request_succeeds_with_bearer_or_raw_token(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_A)
    assert http.get(CUSTOMERS_A, headers=headers).status_code == 200
    raw = dict(headers, Authorization=headers["Authorization"].removeprefix("Bearer "))
    assert http.get(CUSTOMERS_A, headers=raw).status_code == 200


def test_missing_or_wrong_app_key_is_401(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_A)
    without_key = {"Authorization": headers["Authorization"]}
    body = assert_problem(http.get(CUSTOMERS_A, headers=without_key), 401)
    assert body["title"] == "Application key not present, check ST-App-Key header value."
    assert body["type"] == "https://tools.ietf.org/html/rfc7235#section-3.1"
    assert_problem(http.get(CUSTOMERS_A, headers=dict(headers, **{"ST-App-Key": "ak1.other"})), 401)


def test_missing_or_unknown_token_is_401(http: httpx.Client, sim: Simulator) -> None:
    assert_problem(http.get(CUSTOMERS_A, headers={"ST-App-Key": APP_KEY}), 401)
    response = http.get(CUSTOMERS_A, headers={"ST-App-Key": APP_KEY, "Authorization": "Bearer not-a-token"})
    assert_problem(response, 401)
    assert "not-a-token" not in response.text


def test_expire_tokens_invalidates_only_that_tenants_tokens(http: httpx.Client, sim: Simulator) -> None:
    headers_a = auth_headers(http, sim, TENANT_A)
    headers_b = auth_headers(http, sim, TENANT_B)
    sim.expire_tokens(1001)
    assert_problem(http.get(CUSTOMERS_A, headers=headers_a), 401)
    assert http.get("/crm/v2/tenant/1002/export/customers", headers=headers_b).status_code == 200
    assert http.get(CUSTOMERS_A, headers=auth_headers(http, sim, TENANT_A)).status_code == 200


def test_expire_all_tokens(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_B)
    sim.expire_tokens()
    assert_problem(http.get("/crm/v2/tenant/1002/export/customers", headers=headers), 401)


def test_tokens_expire_with_the_simulator_clock(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_A)
    sim.advance_clock(899)
    assert http.get(CUSTOMERS_A, headers=headers).status_code == 200
    sim.advance_clock(2)
    body = assert_problem(http.get(CUSTOMERS_A, headers=headers), 401)
    assert "token" in body["title"]
    assert http.get(CUSTOMERS_A, headers=auth_headers(http, sim, TENANT_A)).status_code == 200


def test_token_of_another_tenant_is_403(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_A)
    body = assert_problem(http.get("/crm/v2/tenant/1002/export/customers", headers=headers), 403)
    assert body["title"] == "Provided authentication is insufficient to grant access"
    # A tenant the simulator does not know is just another tenant.
    assert_problem(http.get("/crm/v2/tenant/4242/export/customers", headers=headers), 403)


def test_unknown_paths_are_404(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_A)
    assert_problem(http.get("/crm/v2/tenant/1001/no-such-thing", headers=headers), 404)
    assert_problem(http.get("/jpm/v2/tenant/1001/export/jobs", headers=headers), 404)  # not served
    assert_problem(http.get("/nowhere", headers=headers), 404)


def test_writes_are_not_supported(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_A)
    response = http.post("/crm/v2/tenant/1001/customers", headers=headers, json={"name": "x"})
    assert_problem(response, 405)


def test_stats_count_requests_per_tenant_and_status(http: httpx.Client, sim: Simulator) -> None:
    sim.stats.reset()
    headers = auth_headers(http, sim, TENANT_A)
    token_response(http, sim, TENANT_A, client_secret="cs1.wrong")
    http.get(CUSTOMERS_A, headers=headers)
    http.get(CUSTOMERS_A, headers=headers)
    http.get("/crm/v2/tenant/1002/export/customers", headers=headers)
    assert sim.stats.token_requests == 2
    assert sim.stats.token_requests_for(1001) == 2
    assert sim.stats.token_requests_for(1002) == 0
    assert sim.stats.api_requests == 3
    assert sim.stats.api_requests_for(1001) == 2
    assert sim.stats.api_requests_for(1002) == 1
    assert sim.stats.responses_by_status == {200: 3, 400: 1, 403: 1}
    sim.stats.reset()
    assert sim.stats.api_requests == 0 and sim.stats.responses_by_status == {}


def test_connections_are_kept_alive(http: httpx.Client, sim: Simulator) -> None:
    headers = auth_headers(http, sim, TENANT_A)
    first = http.get(CUSTOMERS_A, headers=headers)
    second = http.get(CUSTOMERS_A, headers=headers)
    assert first.http_version == second.http_version == "HTTP/1.1"
    assert first.headers.get("connection", "keep-alive").lower() != "close"
    assert int(second.headers["content-length"]) == len(second.content)
