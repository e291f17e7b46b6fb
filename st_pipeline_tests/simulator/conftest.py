"""Helpers for the tests of the simulator's hostile behaviour: simulators of their own, each
with a client that already holds a token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig

HOSTILE_TENANT = SimulatorConfig.demo_tenant(5001)
OTHER_TENANT = SimulatorConfig.demo_tenant(5002)
HOSTILE_CUSTOMERS = "/crm/v2/tenant/5001/export/customers"
HOSTILE_CUSTOMER_LIST = "/crm/v2/tenant/5001/customers"

Serve = Callable[..., tuple[Simulator, httpx.Client]]


def token_for(http: httpx.Client, sim: Simulator, tenant: SimulatedTenant) -> httpx.Response:
    """The token endpoint's answer to ``tenant``'s client credentials."""
    form = {
        "grant_type": "client_credentials",
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
    }
    return http.post(sim.auth_url, data=form)


def authorize(http: httpx.Client, sim: Simulator, tenant: SimulatedTenant) -> None:
    """Give ``http`` the app key and a fresh token of ``tenant``."""
    response = token_for(http, sim, tenant)
    assert response.status_code == 200, response.text
    http.headers["ST-App-Key"] = sim.config.app_key
    http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"


@pytest.fixture()
def serve() -> Iterator[Serve]:
    """``serve(**config overrides)`` → a running simulator (two tenants, 20 customers each,
    export batches of 5) and a client authorized for tenant 5001; stopped after the test."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> tuple[Simulator, httpx.Client]:
            settings: dict[str, Any] = {
                "tenants": [HOSTILE_TENANT, OTHER_TENANT],
                "scale": 0.02,
                "export_batch_size": 5,
                "datasets": ("crm/customers",),
            }
            settings.update(overrides)
            sim = stack.enter_context(Simulator(SimulatorConfig(**settings)))
            http = stack.enter_context(httpx.Client(base_url=sim.url, timeout=10))
            if HOSTILE_TENANT.tenant_id not in settings.get("revoked_tenants", ()):
                authorize(http, sim, HOSTILE_TENANT)
            return sim, http

        yield start
