"""Errors raised by the ServiceTitan API layer.

Every message names the tenant and the endpoint it concerns and says what to do; none ever
contains a client secret, an access token or the application key.
"""

from __future__ import annotations


class ServiceTitanError(Exception):
    """Base class of every error of the API layer."""

    def __init__(self, message: str, *, tenant_id: int | None = None, endpoint: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.endpoint = endpoint
        where = []
        if tenant_id is not None:
            where.append(f"tenant {tenant_id}")
        if endpoint:
            where.append(endpoint)
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)


class ConfigurationError(ServiceTitanError):
    """The API location or application key is not configured correctly."""


class InvalidClientError(ServiceTitanError):
    """The token endpoint rejected the tenant's client id or secret."""


class AuthenticationError(ServiceTitanError):
    """The API refused our credentials (401) even after fetching a fresh token."""


class ForbiddenError(ServiceTitanError):
    """403: the app lacks a scope for this endpoint, or the tenant has not granted it."""


class NotFoundError(ServiceTitanError):
    """404: the path does not exist for this tenant (wrong tenant id or module)."""


class RequestError(ServiceTitanError):
    """400: ServiceTitan rejected the request's parameters."""


class ServerError(ServiceTitanError):
    """5xx from ServiceTitan."""


class RateLimitedError(ServiceTitanError):
    """429 from ServiceTitan."""


class BadResponseError(ServiceTitanError):
    """The response was not the JSON shape the endpoint promises."""
