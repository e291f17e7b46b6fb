"""Errors raised by the ServiceTitan API layer.

Every message names the tenant and the endpoint it concerns and says what to do; none ever
contains a client secret, an access token or the application key.

``retryable`` tells the client whether trying the same request again can help; ``fatal_for_tenant``
tells a sync whether the tenant's other endpoints should stop too (bad credentials, too many consecutive failures).
"""

from __future__ import annotations

from typing import TypedDict


class ErrorContext(TypedDict):
    """Where an error happened: the keyword arguments of ``ServiceTitanError`` after the message."""

    tenant_id: int | None
    endpoint: str | None


class ServiceTitanError(Exception):
    """Base class of every error of the API layer."""

    retryable = False
    fatal_for_tenant = False

    def __init__(self, message: str, *, tenant_id: int | None = None, endpoint: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.endpoint = endpoint
        self.detail = message
        where = []
        if tenant_id is not None:
            where.append(f"tenant {tenant_id}")
        if endpoint:
            where.append(endpoint)
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)


class ConfigurationError(ServiceTitanError):
    """The API location or application key is not configured correctly."""

    fatal_for_tenant = True


class InvalidClientError(ServiceTitanError):
    """The token endpoint rejected the tenant's client id or secret (wrong, or revoked)."""

    fatal_for_tenant = True


class TokenUnavailableError(ServiceTitanError):
    """No access token could be had (the token endpoint failing or throttling past every retry)."""

    fatal_for_tenant = True


class RequestCancelled(ServiceTitanError):
    """The tenant's run is stopping (another dataset failed for the whole tenant): no more requests."""

    fatal_for_tenant = True


class AuthenticationError(ServiceTitanError):
    """The API refused our credentials (401) even after fetching a fresh token."""

    fatal_for_tenant = True


class MissingScopeError(ServiceTitanError):
    """403: the app lacks a scope for this endpoint, or the tenant has not granted it."""


class NotFoundError(ServiceTitanError):
    """404: the path does not exist for this tenant (a module the tenant does not have, or a wrong
    tenant id when every endpoint answers so)."""


class RequestError(ServiceTitanError):
    """400 (or another 4xx): ServiceTitan rejected the request's parameters."""


class RateLimitedError(ServiceTitanError):
    """429 from ServiceTitan, still there after every retry."""

    retryable = True


class ServerError(ServiceTitanError):
    """5xx from ServiceTitan, or no answer at all (timeout, dropped connection)."""

    retryable = True


class BadResponseError(ServiceTitanError):
    """The response was not the JSON the endpoint promises (truncated, invalid or misshapen)."""

    retryable = True


class UnusableResponseError(BadResponseError):
    """A response no retry can fix: larger than the size limit, nested too deep, not UTF-8."""

    retryable = False


class PagingLoopError(BadResponseError):
    """Paging that would not end: a list past its reported total or the page ceiling, or a page
    that says more is waiting but brings nothing."""

    retryable = False


class StuckCursorError(PagingLoopError):
    """An export feed keeps saying it has more data without moving its cursor (or repeats one)."""


class ConsecutiveFailuresError(ServiceTitanError):
    """Too many consecutive failed requests for this tenant: its requests are stopped for the run."""

    fatal_for_tenant = True


# Deprecated: the old name, from when the stop was called a circuit breaker. Removed in 0.3.
CircuitOpenError = ConsecutiveFailuresError
