"""Configurable resources: ServiceTitan API access, the tenant registry and the warehouse.

Every field is optional and falls back to the environment variable documented in the README, so
run config never needs (or shows) a secret.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.ratelimit import DEFAULT_REQUESTS_PER_SECOND
from st_pipeline.servicetitan.resilience import RetryPolicy
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.sync.extract import DEFAULT_CONCURRENCY
from st_pipeline.tenants.endpoint_selection import EndpointSelection
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline.warehouse.engine import create_warehouse_engine


class ServiceTitanResource(dg.ConfigurableResource):
    """Where the API is (``SERVICETITAN_*`` variables by default) and how to reach it."""

    environment: str | None = None
    api_url: str | None = None
    auth_url: str | None = None
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = 100.0
    max_retry_attempts: int = 8
    circuit_failure_threshold: int = 10

    def settings(self) -> ApiSettings:
        return ApiSettings.resolve(environment=self.environment, api_url=self.api_url, auth_url=self.auth_url)

    def client(self, credentials: TenantCredentials) -> ServiceTitanClient:
        """A client for one tenant with its own connection pool and token cache."""
        options = ClientOptions(
            requests_per_second=self.requests_per_second,
            timeout_s=self.timeout_s,
            retry=RetryPolicy(max_attempts=self.max_retry_attempts),
            circuit_failure_threshold=self.circuit_failure_threshold,
            max_connections=max(16, 2 * self.concurrency),
        )
        return ServiceTitanClient(self.settings(), credentials, options=options)


class TenantRegistryResource(dg.ConfigurableResource):
    """The tenant registry (``ST_PIPELINE_REGISTRY_URL`` by default)."""

    url: str | None = None

    def registry(self) -> TenantRegistry:
        return TenantRegistry.from_url(self.url)

    def endpoint_selection(self) -> EndpointSelection:
        """Which datasets are enabled per tenant (flags live in the registry database)."""
        return EndpointSelection(self.registry().engine)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse database (``ST_PIPELINE_WAREHOUSE_URL`` by default)."""

    url: str | None = None

    def engine(self) -> sa.Engine:
        return create_warehouse_engine(self.url)
