"""OAuth 2.0 client-credentials tokens, one cached token per tenant.

ServiceTitan issues tokens for 900 seconds, issues no refresh tokens and throttles token
requests, so a token is fetched once and reused until shortly before it expires. Token requests
are retried like API requests (429 with its ``Retry-After``, 5xx, dropped connections), within
the same bounds; a token that cannot be had after that ends the tenant's run, and every later
caller of the same provider gets that answer at once instead of trying again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson
from pydantic import SecretStr

from st_pipeline.redaction import register_secret
from st_pipeline.servicetitan.errors import (
    BadResponseError,
    ConfigurationError,
    ErrorContext,
    InvalidClientError,
    RateLimitedError,
    ServerError,
    ServiceTitanError,
    TokenUnavailableError,
)
from st_pipeline.servicetitan.http import ResponseTooLarge, read_limited, request_deadline, unhealable_cause
from st_pipeline.servicetitan.resilience import RetryableFailure, RetryPolicy, retry_after_s, with_retries
from st_pipeline.servicetitan.settings import assert_may_carry_secret

# Refresh this long before the advertised expiry, so a token never expires mid-request.
DEFAULT_REFRESH_MARGIN_S = 60.0
# A token answer is a few hundred bytes; anything near this is not one.
_MAX_TOKEN_RESPONSE_BYTES = 1 << 20


@dataclass(frozen=True)
class TenantCredentials:
    """A tenant's OAuth client. ``client_secret`` is a ``SecretStr``: it prints as stars."""

    tenant_id: int
    client_id: str
    client_secret: SecretStr


@dataclass(frozen=True)
class TokenRequestBounds:
    """How long and how often a token is asked for before the tenant's run gives up."""

    retry: RetryPolicy = RetryPolicy()
    request_deadline_s: float = 60.0
    max_retry_after_s: float = 300.0


class TokenProvider:
    """Fetches and caches the access token of one tenant (thread-safe)."""

    def __init__(
        self,
        credentials: TenantCredentials,
        auth_url: str,
        http: httpx.Client,
        *,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        bounds: TokenRequestBounds = TokenRequestBounds(),
    ) -> None:
        assert_may_carry_secret(auth_url)
        register_secret(credentials.client_secret)
        self._credentials = credentials
        self._auth_url = auth_url
        self._http = http
        self._clock = clock
        self._pause = pause
        self._refresh_margin_s = refresh_margin_s
        self._bounds = bounds
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._issued_at = 0.0
        self._failure: ServiceTitanError | None = None
        self.token_requests = 0
        self.token_retries = 0

    @property
    def tenant_id(self) -> int:
        return self._credentials.tenant_id

    def token(self, issued_after: float | None = None) -> str:
        """A valid access token, fetched only when none is cached, it is about to expire, or it was
        issued before ``issued_after`` (a request refused with 401 then gets a token issued after
        the refusal, not one another thread fetched just before it)."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            stale = issued_after is not None and self._issued_at < issued_after
            if self._token is None or stale or self._clock() >= self._expires_at - self._refresh_margin_s:
                issued_at = self._clock()
                try:
                    self._token, lifetime = with_retries(
                        self._fetch,
                        self._bounds.retry,
                        clock=self._clock,
                        pause=self._pause,
                        rng=self._rng,
                        on_retry=self._count_retry,
                    )
                except ServiceTitanError as exc:
                    self._failure = (
                        exc
                        if exc.fatal_for_tenant
                        else TokenUnavailableError(exc.detail, tenant_id=exc.tenant_id, endpoint=exc.endpoint)
                    )
                    raise self._failure from None
                self._expires_at = self._clock() + lifetime
                self._issued_at = issued_at
            return self._token

    def invalidate(self, rejected_token: str | None = None) -> None:
        """Forget the cached token (after a 401), unless another thread already replaced it."""
        with self._lock:
            if rejected_token is None or rejected_token == self._token:
                self._token = None

    def _count_retry(self) -> None:
        self.token_retries += 1

    def _fetch(self) -> tuple[str, float]:
        """One token request; ``RetryableFailure`` when another may succeed."""
        tenant_id = self._credentials.tenant_id
        where: ErrorContext = {"tenant_id": tenant_id, "endpoint": "token"}
        self.token_requests += 1
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret.get_secret_value(),
        }
        try:
            with request_deadline(self._bounds.request_deadline_s):
                with self._http.stream("POST", self._auth_url, data=form) as response:
                    status, headers = response.status_code, response.headers
                    content = read_limited(response, _MAX_TOKEN_RESPONSE_BYTES)
        except httpx.TransportError as exc:
            cause = unhealable_cause(exc)
            if cause is not None:
                raise ConfigurationError(
                    f"the token endpoint {self._auth_url} cannot be used: {cause}", **where
                ) from None
            raise RetryableFailure(
                ServerError(
                    f"no answer from the token endpoint {self._auth_url} ({type(exc).__name__}); check "
                    "SERVICETITAN_AUTH_URL / SERVICETITAN_ENVIRONMENT and the network",
                    **where,
                )
            ) from None
        except ResponseTooLarge:
            raise RetryableFailure(BadResponseError("the token endpoint sent an oversized answer", **where)) from None
        body = _json_object(content)
        if status in (400, 401):
            error = body.get("error") if isinstance(body.get("error"), str) else f"HTTP {status}"
            raise InvalidClientError(
                f"the token endpoint rejected client id {self._credentials.client_id!r} ({error}); "
                "the client id or secret is wrong or was revoked — ask the tenant's ServiceTitan admin "
                "for new API credentials and store them with `st-pipeline tenant update-credentials "
                f"--tenant {tenant_id}`",
                **where,
            )
        if status == 429:
            wait = retry_after_s(headers.get("Retry-After"), None)
            cap = self._bounds.max_retry_after_s
            if wait is not None and wait > cap:
                raise TokenUnavailableError(
                    f"the token endpoint asked to wait {wait:.0f} s, more than the {cap:.0f} s this client waits "
                    "(max_retry_after_s); the tenant's run stops here and the next run tries again",
                    **where,
                )
            raise RetryableFailure(RateLimitedError("the token endpoint is throttling (HTTP 429)", **where), wait)
        if status >= 500:
            raise RetryableFailure(ServerError(f"the token endpoint answered HTTP {status}", **where))
        if status != 200:
            raise TokenUnavailableError(f"the token endpoint answered HTTP {status}", **where)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool):
            raise RetryableFailure(
                BadResponseError("the token endpoint's answer lacks access_token or expires_in", **where)
            )
        register_secret(token)
        return token, float(lifetime)


def _json_object(content: bytes) -> dict[str, object]:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}
