"""Adding a tenant: verify its credentials against ServiceTitan, then store them encrypted."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials, TokenProvider
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import MissingScopeError, NotFoundError, ServiceTitanError
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.tenants.registry import Tenant, TenantRegistry

# A small list every ServiceTitan app can usually read; it proves the tenant id matches.
_PROBE_DATASET = "settings/business-units"


def verify_credentials(settings: ApiSettings, credentials: TenantCredentials) -> None:
    """Fetch a token and read one page of one endpoint; raise ``ServiceTitanError`` if either fails."""
    with httpx.Client(timeout=30.0) as http:
        TokenProvider(credentials, settings.auth_url, http).token()
        endpoint = load_catalogue().dataset(_PROBE_DATASET).list
        assert endpoint is not None
        client = ServiceTitanClient(settings, credentials, http=http)
        try:
            next(client.iter_list(endpoint, page_size=1))
        except (MissingScopeError, NotFoundError) as exc:
            raise ServiceTitanError(
                f"the credentials are valid but do not open tenant {credentials.tenant_id} ({exc}); "
                "check that the tenant id matches the client id",
                tenant_id=credentials.tenant_id,
            ) from None


def add_tenant(
    registry: TenantRegistry,
    settings: ApiSettings,
    *,
    tenant_id: int,
    name: str,
    client_id: str,
    client_secret: SecretStr,
    verify: bool = True,
) -> Tenant:
    """Verify the credentials (unless ``verify`` is false) and store the tenant.

    Nothing is stored when verification fails.
    """
    credentials = TenantCredentials(tenant_id=tenant_id, client_id=client_id, client_secret=client_secret)
    if verify:
        verify_credentials(settings, credentials)
    return registry.save(tenant_id, name, client_id, client_secret)
