"""Configuration of a simulator: its tenants, their credentials, and data volume."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from st_pipeline.simulator.faults import FaultPlan


@dataclass(frozen=True)
class SimulatedTenant:
    """One ServiceTitan tenant served by the simulator, with the OAuth client it accepts."""

    tenant_id: int
    client_id: str
    client_secret: str = field(repr=False)  # kept out of reprs, tracebacks and logs
    scale: float | None = None  # None → SimulatorConfig.scale
    rate_limit_per_s: float | None = None  # None → SimulatorConfig.rate_limit_per_s
    time_zone: str = "UTC"  # IANA zone: the calendar days of the tenant's reports


@dataclass
class SimulatorConfig:
    """What the simulator serves.

    ``datasets`` restricts the served datasets to these catalogue keys (``None``: every
    catalogue dataset whose schema can be generated). ``scale`` multiplies the record volumes
    (see ``data.BASE_VOLUMES``); a tenant's own ``scale`` overrides it.

    Hostile behaviour, all off by default:

    * ``latency_s`` delays every API and token response (in the request's own thread, so
      concurrent requests overlap as they would over a network);
    * ``rate_limit_per_s`` limits API requests per (app key, tenant) with a token bucket of one
      second's capacity; excess requests get 429 with ``Retry-After`` (see ``ratelimit``); a
      tenant's own ``rate_limit_per_s`` overrides it (as when its app key is shared with another
      integration);
    * ``revoke_tokens_every_s``: every access token issued is revoked this often (real time),
      so the next request with one gets 401;
    * ``faults`` injects faults at random but reproducibly from ``seed`` (see ``FaultPlan``);
    * ``revoked_tenants`` start with their credentials revoked (see
      ``Simulator.revoke_credentials``).

    The Reporting API (see ``reports``) takes at most ``report_requests_per_window`` data
    requests per tenant and report within any ``report_window_s`` seconds (ServiceTitan: 5 of
    the same report per minute); more get 429 with ``Retry-After``. That window is on the
    simulator's clock, so ``Simulator.advance_clock`` moves it on too. Its data pages hold at
    most ``report_page_size_cap`` rows whatever ``pageSize`` asks for (as a server may cap it),
    so that a test can make one read take several requests.
    """

    tenants: list[SimulatedTenant]
    app_key: str = "ak1.simulator"
    seed: int = 1
    scale: float = 1.0
    token_lifetime_s: int = 900
    export_batch_size: int = 500
    datasets: tuple[str, ...] | None = None
    latency_s: float = 0.0
    rate_limit_per_s: float | None = None
    faults: FaultPlan | None = None
    revoked_tenants: tuple[int, ...] = ()
    revoke_tokens_every_s: float | None = None
    report_requests_per_window: int = 5
    report_window_s: float = 60.0
    report_page_size_cap: int = 25_000

    def __post_init__(self) -> None:
        ids = [tenant.tenant_id for tenant in self.tenants]
        if len(set(ids)) != len(ids):
            raise ValueError("tenant ids must be unique")
        client_ids = [tenant.client_id for tenant in self.tenants]
        if len(set(client_ids)) != len(client_ids):
            raise ValueError("client ids must be unique")
        if self.export_batch_size < 1:
            raise ValueError("export_batch_size must be positive")
        if self.token_lifetime_s <= 0:
            raise ValueError("token_lifetime_s must be positive")
        if self.scale <= 0 or any(t.scale is not None and t.scale <= 0 for t in self.tenants):
            raise ValueError("scales must be positive")
        if self.datasets is not None:
            self.datasets = tuple(self.datasets)
        if self.latency_s < 0:
            raise ValueError("latency_s must not be negative")
        limits = [self.rate_limit_per_s, *(t.rate_limit_per_s for t in self.tenants)]
        if any(limit is not None and limit <= 0 for limit in limits):
            raise ValueError("rate_limit_per_s must be positive (or None for no limit)")
        if self.revoke_tokens_every_s is not None and self.revoke_tokens_every_s <= 0:
            raise ValueError("revoke_tokens_every_s must be positive (or None)")
        if self.report_requests_per_window < 1 or self.report_window_s <= 0:
            raise ValueError("report_requests_per_window and report_window_s must be positive")
        if self.report_page_size_cap < 1:
            raise ValueError("report_page_size_cap must be positive")
        for tenant in self.tenants:
            try:
                ZoneInfo(tenant.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"tenant {tenant.tenant_id}: unknown time zone {tenant.time_zone!r}") from None
        self.revoked_tenants = tuple(self.revoked_tenants)
        unknown = sorted(set(self.revoked_tenants) - set(ids))
        if unknown:
            raise ValueError(f"revoked_tenants are not configured tenants: {unknown}")

    @staticmethod
    def demo_tenant(tenant_id: int, seed: int = 1) -> SimulatedTenant:
        """A tenant with deterministic, simulator-only credentials (never valid anywhere else)."""
        digest = hashlib.sha256(f"{seed}:{tenant_id}".encode()).hexdigest()
        return SimulatedTenant(
            tenant_id=tenant_id,
            client_id=f"cid.sim{tenant_id}",
            client_secret="cs1.sim-" + digest[:24],
        )

    def tenant(self, tenant_id: int) -> SimulatedTenant | None:
        for tenant in self.tenants:
            if tenant.tenant_id == tenant_id:
                return tenant
        return None

    def scale_of(self, tenant: SimulatedTenant) -> float:
        return self.scale if tenant.scale is None else tenant.scale
