"""Access tokens issued by the simulated ``/connect/token`` endpoint."""

from __future__ import annotations

import secrets
import threading

from st_pipeline.simulator.clock import SimClock


class TokenStore:
    """Opaque bearer tokens, each bound to one tenant and expiring on the simulator clock."""

    def __init__(self, clock: SimClock, lifetime_s: float) -> None:
        self._clock = clock
        self._lifetime_s = lifetime_s
        self._tokens: dict[str, tuple[int, float]] = {}  # token → (tenant id, expires at)
        self._issued: list[tuple[int, str]] = []  # every token ever issued, for tests that hunt for leaks
        self._lock = threading.Lock()

    def issue(self, tenant_id: int) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        with self._lock:
            if len(self._tokens) > 1000:
                self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (tenant_id, now + self._lifetime_s)
            self._issued.append((tenant_id, token))
        return token

    def issued(self, tenant_id: int | None = None) -> list[str]:
        """Every token issued so far (to one tenant, or to all), oldest first."""
        with self._lock:
            return [token for owner, token in self._issued if tenant_id in (None, owner)]

    def tenant_of(self, token: str) -> int | None:
        """The tenant a valid token belongs to; ``None`` if it is unknown, revoked or expired."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= self._clock.now():
            return None
        return entry[0]

    def expire(self, tenant_id: int | None = None) -> None:
        """Invalidate every token (of one tenant, or of all)."""
        with self._lock:
            if tenant_id is None:
                self._tokens.clear()
            else:
                self._tokens = {t: v for t, v in self._tokens.items() if v[0] != tenant_id}
