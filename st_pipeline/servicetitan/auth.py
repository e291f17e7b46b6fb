"""OAuth 2.0 client-credentials tokens, one cached token per tenant.

ServiceTitan issues tokens for 900 seconds, issues no refresh tokens and throttles token
requests, so a token is fetched once and reused until shortly before it expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from st_pipeline.redaction import register_secret
from st_pipeline.servicetitan.errors import BadResponseError, InvalidClientError, ServiceTitanError
from st_pipeline.servicetitan.settings import assert_may_carry_secret

# Refresh this long before the advertised expiry, so a token never expires mid-request.
DEFAULT_REFRESH_MARGIN_S = 60.0


@dataclass(frozen=True)
class TenantCredentials:
    """A tenant's OAuth client. ``client_secret`` is a ``SecretStr``: it prints as stars."""

    tenant_id: int
    client_id: str
    client_secret: SecretStr


class TokenProvider:
    """Fetches and caches the access token of one tenant (thread-safe)."""

    def __init__(
        self,
        credentials: TenantCredentials,
        auth_url: str,
        http: httpx.Client,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
    ) -> None:
        assert_may_carry_secret(auth_url)
        register_secret(credentials.client_secret)
        self._credentials = credentials
        self._auth_url = auth_url
        self._http = http
        self._clock = clock
        self._refresh_margin_s = refresh_margin_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.token_requests = 0

    @property
    def tenant_id(self) -> int:
        return self._credentials.tenant_id

    def token(self) -> str:
        """A valid access token, fetched only when none is cached or it is about to expire."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._refresh_margin_s:
                self._token, lifetime = self._fetch()
                self._expires_at = self._clock() + lifetime
            return self._token

    def invalidate(self, rejected_token: str | None = None) -> None:
        """Forget the cached token (after a 401), unless another thread already replaced it."""
        with self._lock:
            if rejected_token is None or rejected_token == self._token:
                self._token = None

    def _fetch(self) -> tuple[str, float]:
        tenant_id = self._credentials.tenant_id
        self.token_requests += 1
        try:
            response = self._http.post(
                self._auth_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._credentials.client_id,
                    "client_secret": self._credentials.client_secret.get_secret_value(),
                },
            )
        except httpx.HTTPError as exc:
            raise ServiceTitanError(
                f"could not reach the token endpoint {self._auth_url}: {type(exc).__name__}; "
                "check SERVICETITAN_AUTH_URL / SERVICETITAN_ENVIRONMENT and the network",
                tenant_id=tenant_id,
                endpoint="token",
            ) from None
        if response.status_code in (400, 401):
            error = _json_field(response, "error") or f"HTTP {response.status_code}"
            raise InvalidClientError(
                f"the token endpoint rejected client id {self._credentials.client_id!r} ({error}); "
                "the client id or secret is wrong or was revoked — ask the tenant's ServiceTitan admin "
                "for new API credentials and store them with `st-pipeline tenant update-credentials "
                f"--tenant {tenant_id}`",
                tenant_id=tenant_id,
                endpoint="token",
            )
        if response.status_code != 200:
            raise ServiceTitanError(
                f"the token endpoint answered HTTP {response.status_code}",
                tenant_id=tenant_id,
                endpoint="token",
            )
        token = _json_field(response, "access_token")
        lifetime = _json_field(response, "expires_in")
        if not isinstance(token, str) or not isinstance(lifetime, (int, float)):
            raise BadResponseError(
                "the token endpoint's answer lacks access_token or expires_in",
                tenant_id=tenant_id,
                endpoint="token",
            )
        register_secret(token)
        return token, float(lifetime)


def _json_field(response: httpx.Response, name: str) -> object:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None
