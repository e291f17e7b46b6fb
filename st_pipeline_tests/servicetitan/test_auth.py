"""Token caching, expiry and the single re-authentication on 401, against the real simulator."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials, TokenProvider
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import AuthenticationError, InvalidClientError
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import Simulator
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _credentials(secret: str = CANARY_SECRET) -> TenantCredentials:
    return TenantCredentials(TENANT_A.tenant_id, TENANT_A.client_id, SecretStr(secret))


def _settings(sim: Simulator, app_key: str | None = None) -> ApiSettings:
    return ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(app_key or sim.config.app_key))


def test_token_is_cached_until_shortly_before_expiry(fresh_simulator: Simulator) -> None:
    clock = FakeClock()
    with httpx.Client() as http:
        provider = TokenProvider(_credentials(), fresh_simulator.auth_url, http, clock=clock)
        first = provider.token()
        clock.now += 800  # 900 s lifetime, refreshed 60 s early: still valid at +800
        assert provider.token() == first
        assert fresh_simulator.stats.token_requests_for(TENANT_A.tenant_id) == 1
        clock.now += 50  # +850 is inside the refresh margin
        second = provider.token()
    assert second != first
    assert provider.token_requests == 2
    assert fresh_simulator.stats.token_requests_for(TENANT_A.tenant_id) == 2


def test_one_reauthentication_on_401(fresh_simulator: Simulator) -> None:
    endpoint = load_catalogue().dataset("crm/customers").list
    assert endpoint is not None
    with ServiceTitanClient(_settings(fresh_simulator), _credentials()) as client:
        next(client.iter_list(endpoint, page_size=5))
        fresh_simulator.expire_tokens(TENANT_A.tenant_id)
        page = next(client.iter_list(endpoint, page_size=5))
    assert len(page.records) == 5
    assert client.stats.reauthentications == 1
    assert fresh_simulator.stats.token_requests_for(TENANT_A.tenant_id) == 2


def test_expired_simulator_clock_forces_a_new_token(fresh_simulator: Simulator) -> None:
    endpoint = load_catalogue().dataset("crm/customers").list
    assert endpoint is not None
    with ServiceTitanClient(_settings(fresh_simulator), _credentials()) as client:
        next(client.iter_list(endpoint, page_size=5))
        fresh_simulator.advance_clock(901)  # the server-side token is now expired
        next(client.iter_list(endpoint, page_size=5))
    assert client.stats.reauthentications == 1
    assert fresh_simulator.stats.token_requests_for(TENANT_A.tenant_id) == 2


def test_persistent_401_gets_two_fresh_tokens_then_blames_the_app_key(fresh_simulator: Simulator) -> None:
    endpoint = load_catalogue().dataset("crm/customers").list
    assert endpoint is not None
    with ServiceTitanClient(_settings(fresh_simulator, app_key="ak1.wrong"), _credentials()) as client:
        with pytest.raises(AuthenticationError) as raised:
            next(client.iter_list(endpoint, page_size=5))
    assert client.stats.requests == 3  # the first token, then two fresh ones
    assert fresh_simulator.stats.token_requests_for(TENANT_A.tenant_id) == 3
    message = str(raised.value)
    assert f"tenant {TENANT_A.tenant_id}" in message and "application key" in message
    assert "SERVICETITAN_APP_KEY" in message and "client credentials" not in message
    assert "ak1.wrong" not in message


def test_invalid_client_names_tenant_and_never_the_secret(fresh_simulator: Simulator) -> None:
    wrong = "cs1.WRONG-canary-secret"
    with httpx.Client() as http:
        provider = TokenProvider(_credentials(wrong), fresh_simulator.auth_url, http)
        with pytest.raises(InvalidClientError) as raised:
            provider.token()
    message = str(raised.value)
    assert f"tenant {TENANT_A.tenant_id}" in message
    assert TENANT_A.client_id in message
    assert wrong not in message and CANARY_SECRET not in message


def test_credentials_repr_hides_the_secret() -> None:
    assert CANARY_SECRET not in repr(_credentials())


def test_an_issued_token_and_the_secret_are_known_to_the_redactor(fresh_simulator: Simulator) -> None:
    from st_pipeline.redaction import redact

    secret = "plain-secret-no-pattern-would-catch-31"
    fresh_simulator.set_client_secret(TENANT_A.tenant_id, secret)
    with httpx.Client() as http:
        provider = TokenProvider(_credentials(secret), fresh_simulator.auth_url, http)
        token = provider.token()
    assert token == fresh_simulator.issued_tokens(TENANT_A.tenant_id)[-1]
    assert redact(f"401 for {token} with {secret}") == "401 for [redacted] with [redacted]"
