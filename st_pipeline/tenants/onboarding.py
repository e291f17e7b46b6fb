"""Proving a tenant's credentials against ServiceTitan before they are stored, and probing its scopes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import Dataset, Endpoint, load_catalogue
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import MissingScopeError, NotFoundError, ServiceTitanError
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.tenants import validation
from st_pipeline.tenants.registry import Change, Tenant, TenantRegistry

# A small list every ServiceTitan app can usually read; it proves the tenant id matches.
PROBE_DATASET = "settings/business-units"
VERIFY_TIMEOUT_S = 30.0


def verify_credentials(settings: ApiSettings, credentials: TenantCredentials) -> None:
    """Fetch a token and read one page of one endpoint; raise ``ServiceTitanError`` if either fails."""
    with httpx.Client(timeout=VERIFY_TIMEOUT_S) as http:
        client = ServiceTitanClient(settings, credentials, http=http)
        client.tokens.token()
        _prove_tenant(client)


def _prove_tenant(client: ServiceTitanClient) -> None:
    endpoint = load_catalogue().dataset(PROBE_DATASET).list
    assert endpoint is not None
    try:
        next(client.iter_list(endpoint, page_size=1, include_total=False, parallel=False))
    except (MissingScopeError, NotFoundError) as exc:
        raise ServiceTitanError(
            f"the credentials are valid but do not open tenant {client.tenant_id} ({exc.detail}); "
            "check that the tenant id matches the client id",
            tenant_id=client.tenant_id,
        ) from None


def add_tenant(
    registry: TenantRegistry,
    settings: ApiSettings,
    *,
    tenant_id: int,
    name: str,
    client_id: str,
    client_secret: SecretStr,
    change: Change,
    verify: bool = True,
    time_zone: str | None = None,
) -> Tenant:
    """Verify the credentials (unless ``verify`` is false) and register a new tenant.

    ``time_zone``: its IANA zone, or None (not set: days are UTC). Nothing is stored when the zone
    is not an IANA name (checked before any request), verification fails or the id is registered.
    """
    if time_zone is not None:
        validation.validate_time_zone(time_zone)
    registry.ensure_absent(tenant_id)
    registry.require_keys()
    credentials = TenantCredentials(tenant_id=tenant_id, client_id=client_id, client_secret=client_secret)
    if verify:
        verify_credentials(settings, credentials)
    return registry.add(tenant_id, name, client_id, client_secret, change=change, time_zone=time_zone)


def update_credentials(
    registry: TenantRegistry,
    settings: ApiSettings,
    *,
    tenant_id: int,
    client_secret: SecretStr,
    change: Change,
    client_id: str | None = None,
) -> Tenant:
    """Verify new credentials of a registered tenant, then store them (nothing changes if they fail)."""
    tenant = registry.get(tenant_id)
    registry.require_keys()
    credentials = TenantCredentials(
        tenant_id=tenant_id, client_id=client_id or tenant.client_id, client_secret=client_secret
    )
    verify_credentials(settings, credentials)
    return registry.update_credentials(tenant_id, client_secret, change=change, client_id=client_id)


@dataclass
class ProbeReport:
    """What ``probe_tenant`` found: one request per distinct scope of the datasets probed."""

    scopes_probed: int = 0
    denied: dict[str, list[str]] = field(default_factory=dict)  # scope → datasets it would open
    not_found: list[str] = field(default_factory=list)  # datasets the tenant does not have (404)
    errors: dict[str, str] = field(default_factory=dict)  # dataset → what went wrong

    @property
    def all_granted(self) -> bool:
        return not (self.denied or self.not_found or self.errors)


def probe_tenant(settings: ApiSettings, credentials: TenantCredentials, datasets: Iterable[Dataset]) -> ProbeReport:
    """Token, tenant id, then one small request per distinct scope set of ``datasets``.

    Raises ``ServiceTitanError`` when the token or the tenant id fails; a scope not granted, a
    module the tenant lacks or another error of one request is reported, not raised.
    """
    by_scopes: dict[tuple[str, ...], list[Dataset]] = {}
    for dataset in datasets:
        by_scopes.setdefault(dataset.extraction_endpoint.scopes, []).append(dataset)
    report = ProbeReport()
    with httpx.Client(timeout=VERIFY_TIMEOUT_S) as http:
        client = ServiceTitanClient(settings, credentials, http=http)
        client.tokens.token()
        _prove_tenant(client)
        for scopes, members in by_scopes.items():
            report.scopes_probed += 1
            endpoint, params = _cheapest_request(members[0])
            try:
                client.request(endpoint, params)
            except MissingScopeError:
                for scope in scopes or ("(no scope listed)",):
                    report.denied.setdefault(scope, []).extend(d.key for d in members)
            except NotFoundError:
                report.not_found.extend(d.key for d in members)
            except ServiceTitanError as exc:
                if exc.fatal_for_tenant:
                    raise
                report.errors[members[0].key] = exc.detail
    return report


def _cheapest_request(dataset: Dataset) -> tuple[Endpoint, dict[str, Any]]:
    """One page of one record where the dataset has a paged list; else its first page."""
    if dataset.list is not None:
        return dataset.list, {**dataset.list.fixed_params, "page": 1, "pageSize": 1}
    endpoint = dataset.lookup or dataset.extraction_endpoint
    return endpoint, dict(endpoint.fixed_params)
