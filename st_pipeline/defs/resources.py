"""Configurable resources: ServiceTitan API access, the tenant registry, the warehouse.

Where things are — API and token URLs, the app key, encryption keys, the warehouse and registry
databases — is deployment configuration, read from the code server's environment by
``st_pipeline.settings``; none of it is a resource field. Dagster lets run config override any
resource field (even one set from an ``EnvVar``), and anyone who can launch a run must not be
able to send a client secret or the data somewhere else. What a run may tune — pace, concurrency,
timeouts — are the fields below, each bounded.

The registry and warehouse resources open their database once per run or sensor tick
(``setup_for_execution``) and dispose of it afterwards.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints.

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.ratelimit import DEFAULT_REQUESTS_PER_SECOND
from st_pipeline.servicetitan.reports import REPORT_REQUESTS_PER_WINDOW, REPORT_WINDOW_S
from st_pipeline.servicetitan.resilience import RetryPolicy
from st_pipeline.settings import Settings, load_settings
from st_pipeline.sync.extract import DEFAULT_CONCURRENCY
from st_pipeline.tenants.endpoint_selection import EndpointSelection
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline.warehouse.engine import create_warehouse_engine

if TYPE_CHECKING:  # pandas is imported by the assets that read frames, not by every run
    import pandas as pd


class ServiceTitanResource(dg.ConfigurableResource):
    """How a run talks to ServiceTitan (where it talks to is deployment configuration)."""

    requests_per_second: float = Field(
        default=DEFAULT_REQUESTS_PER_SECOND,
        gt=0,
        le=DEFAULT_REQUESTS_PER_SECOND,
        description="Requests per second to ServiceTitan for this tenant, at most its published limit of 60.",
    )
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=32, description="Datasets fetched at once.")
    timeout_s: float = Field(
        default=100.0,
        gt=0,
        le=600,
        description="Longest wait for one step of a request (connect, each read), in seconds.",
    )
    request_deadline_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Longest time one request may take as a whole, in seconds (a body that drips in is cut off; "
        "a request cut off is tried once more). ServiceTitan's servers give up after 100 s.",
    )
    max_response_mb: float = Field(
        default=64.0, gt=0, le=1024, description="Largest response accepted; a larger one fails that dataset, unread."
    )
    max_pages: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="Most pages of one dataset in one run when no total bounds it (export feeds resume next run).",
    )
    max_retry_attempts: int = Field(default=8, ge=1, le=20, description="Attempts per request before giving up.")
    stop_after_consecutive_failures: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Consecutive failed requests (each already retried) that stop the tenant's requests for this run.",
    )
    circuit_failure_threshold: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Deprecated name of stop_after_consecutive_failures (removed in 0.3); used when set.",
    )
    max_retry_after_s: float = Field(
        default=300.0,
        ge=1,
        le=3600,
        description="Longest Retry-After honoured; a 429 asking for more fails that dataset for this run.",
    )
    throttle_budget_s: float = Field(
        default=900.0,
        ge=1,
        le=86_400,
        description="Seconds of 429 pauses one dataset may be asked for in one run; throttling within it is "
        "pacing, not failure (no retry attempts used), past it the dataset resumes next run.",
    )

    report_requests_per_window: int = Field(
        default=REPORT_REQUESTS_PER_WINDOW,
        ge=1,
        le=REPORT_REQUESTS_PER_WINDOW,
        description="Data requests of one report per tenant and report window, at most ServiceTitan's published 5.",
    )
    report_window_s: float = Field(
        default=REPORT_WINDOW_S,
        gt=0,
        le=600,
        description="The window of report_requests_per_window, in seconds (ServiceTitan's: a minute).",
    )

    def client(self, credentials: TenantCredentials, settings: Settings | None = None) -> ServiceTitanClient:
        """A client for one tenant with its own connection pool and token cache."""
        options = ClientOptions(
            requests_per_second=self.requests_per_second,
            timeout_s=self.timeout_s,
            request_deadline_s=self.request_deadline_s,
            max_response_bytes=int(self.max_response_mb * 1024 * 1024),
            max_pages=self.max_pages,
            retry=RetryPolicy(max_attempts=self.max_retry_attempts),
            stop_after_consecutive_failures=self._consecutive_failure_limit(),
            max_connections=max(16, 2 * self.concurrency),
            max_retry_after_s=self.max_retry_after_s,
            throttle_budget_s=self.throttle_budget_s,
        )
        return ServiceTitanClient((settings or load_settings()).api(), credentials, options=options)

    def _consecutive_failure_limit(self) -> int:
        if self.circuit_failure_threshold is None:
            return self.stop_after_consecutive_failures
        warnings.warn(
            "resources.servicetitan.config.circuit_failure_threshold is deprecated and goes in 0.3: set "
            "stop_after_consecutive_failures instead",
            FutureWarning,
            stacklevel=3,
        )
        return self.circuit_failure_threshold


class TenantRegistryResource(dg.ConfigurableResource):
    """The deployment's tenant registry (``ST_PIPELINE_REGISTRY_URL``), open for one run or tick."""

    _settings: Settings | None = PrivateAttr(default=None)
    _registry: TenantRegistry | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = load_settings()
        self._registry = TenantRegistry.open(self._settings)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError("TenantRegistryResource is used outside a run or sensor tick")
        return self._settings

    def registry(self) -> TenantRegistry:
        if self._registry is None:
            raise RuntimeError("TenantRegistryResource is used outside a run or sensor tick")
        return self._registry

    def endpoint_selection(self) -> EndpointSelection:
        """Which datasets are enabled per tenant (flags in the registry, ``ST_PIPELINE_DISABLED_ENDPOINTS``)."""
        return EndpointSelection(self.registry().engine, self.settings.disabled_endpoints)


class WarehouseResource(dg.ConfigurableResource):
    """The deployment's warehouse (``ST_PIPELINE_WAREHOUSE_URL``), open for one run or tick."""

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._engine = create_warehouse_engine(load_settings().warehouse_database_url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def engine(self) -> sa.Engine:
        if self._engine is None:
            raise RuntimeError("WarehouseResource is used outside a run or sensor tick")
        return self._engine

    def current_engine(self) -> tuple[sa.Engine, str]:
        """The engine and the warehouse's printable name, its schema at this code's revision.

        An empty warehouse gets its schema here (its first run); one behind or ahead of this code
        is a run failure saying what to do, and is not changed.
        """
        from st_pipeline.warehouse.engine import describe_url
        from st_pipeline.warehouse.schema import SchemaOutOfDateError, ensure_schema

        engine = self.engine()
        name = describe_url(engine)
        try:
            ensure_schema(engine, name)
        except SchemaOutOfDateError as exc:
            raise dg.Failure(str(exc)) from None
        return engine, name

    def frame(self, table_name: str, tenant_id: int, columns: Sequence[str] | None = None) -> "pd.DataFrame":
        """One tenant's rows of a hub table (``hub_jobs``) or mart (``mart_job_conversion``) as a DataFrame,
        for an asset built on ours (``transform.frames.read_frame``).

        Each column's dtype follows its declared type: ``Int64``, ``string``, ``boolean``, timestamps
        as ``datetime64[ns, UTC]``, days as ``datetime64[ns]``, rates and other decimals as
        ``float64``, and money as ``object`` columns of ``decimal.Decimal``, exact. ``columns`` picks
        some columns (default: all). A name that is no hub table or mart raises ``UnknownTableError``
        (a ValueError) listing those there are; a table not built yet raises ``TableNotBuiltError``
        (a LookupError) naming the asset to materialize.
        """
        from st_pipeline.transform.frames import read_frame

        return read_frame(self.engine(), table_name, tenant_id, columns)


def process_cpu_s() -> float:
    """CPU seconds of this run's process so far (its start and imports included), for run metadata."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
