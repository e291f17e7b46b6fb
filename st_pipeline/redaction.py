"""Scrubbing secrets out of alert text.

``redact`` replaces, in this order, every known secret value (the ones passed in and the ones
registered process-wide with ``register_secret``, plus their URL-encoded forms) and then anything
that looks like a credential by its shape:

- ``Authorization: Bearer …`` / ``Basic …`` headers and bare ``Bearer …`` tokens;
- ``key=value`` or ``"key": "value"`` pairs whose key names a secret (``client_secret``,
  ``password``, ``access_token``, ``app_key``, ``api_key``, …);
- the password of a URL (``scheme://user:password@host``);
- Fernet tokens (``gAAAAA…``) and Fernet keys (43 base64url characters and ``=``);
- JSON Web Tokens (``eyJ….eyJ….…``), the shape of OAuth access tokens.

Each match becomes ``[redacted]``; the name of a header or key is kept so the text still reads.
Redacting twice gives the same text as redacting once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"

# Shorter values would shred ordinary words; no real credential is this short.
MIN_SECRET_LENGTH = 4

_SECRET_KEYS = (
    r"client[_-]?secret|password|passwd|pwd|secret|access[_-]?token|refresh[_-]?token|id[_-]?token"
    r"|api[_-]?key|app[_-]?key|st-app-key|private[_-]?key|secret[_-]?keys?"
)


def _keep_name(match: re.Match[str]) -> str:
    """Keep the header or key name (group 1) and the value's quotes; drop the value."""
    value = match.group("value")
    quote_char = value[0] if value[:1] in ("'", '"') and len(value) > 1 and value[-1] == value[0] else ""
    return f"{match.group(1)}{quote_char}{REDACTED}{quote_char}"


def _keep_scheme(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    return f"{match.group(1)}{scheme} {REDACTED}" if scheme else f"{match.group(1)}{REDACTED}"


_VALUE = r"(?P<value>\[redacted\]|\"[^\"]*\"|'[^']*'|[^\s\"'&,;}\]]+)"

_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Authorization header (any scheme), as "Authorization: Bearer x" or "authorization=x".
    (
        re.compile(
            r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?P<scheme>bearer|basic|token|digest)\s+)?"
            r"(?:\[redacted\]|[^\s\"',;}]+)"
        ),
        _keep_scheme,
    ),
    # A bare bearer token anywhere else.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    # key=value, key: value, "key": "value" where the key names a secret (also inside a longer
    # name such as ST_PIPELINE_SECRET_KEYS).
    (re.compile(rf"(?i)((?<![A-Za-z0-9])(?:{_SECRET_KEYS})[\"']?\s*[:=]\s*){_VALUE}"), _keep_name),
    # The password in scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s/@]+@"), r"\1" + REDACTED + "@"),
    # Fernet tokens: version byte 0x80 and a 64-bit timestamp, base64url → "gAAAAA…".
    (re.compile(r"\bgAAAAA[A-Za-z0-9_\-]{40,}={0,2}"), REDACTED),
    # Fernet keys: 32 bytes in base64url.
    (re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{43}=(?![A-Za-z0-9_\-=])"), REDACTED),
    # JSON Web Tokens.
    (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), REDACTED),
)


@runtime_checkable
class _HasSecretValue(Protocol):
    def get_secret_value(self) -> str: ...


_registry_lock = threading.Lock()
_registered: set[str] = set()


def _plain(value: str | _HasSecretValue | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, _HasSecretValue):
        return value.get_secret_value()
    return str(value)


def register_secret(value: str | _HasSecretValue | None) -> None:
    """Remember a secret value so that ``redact`` removes it from every later alert.

    Accepts plain strings and ``SecretStr``-like objects. ``None``, empty strings and values
    shorter than ``MIN_SECRET_LENGTH`` characters are ignored.
    """
    plain = _plain(value)
    if plain is None or len(plain) < MIN_SECRET_LENGTH:
        return
    with _registry_lock:
        _registered.add(plain)


def registered_secret_count() -> int:
    """How many secret values are registered (never the values themselves)."""
    with _registry_lock:
        return len(_registered)


def _variants(secret: str) -> set[str]:
    variants = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
    return {v for v in variants if len(v) >= MIN_SECRET_LENGTH}


def redact(text: str, secrets: Iterable[str | _HasSecretValue | None] = ()) -> str:
    """``text`` with every given or registered secret and every credential-like string replaced."""
    if not text:
        return text
    with _registry_lock:
        known = set(_registered)
    for secret in secrets:
        plain = _plain(secret)
        if plain is not None and len(plain) >= MIN_SECRET_LENGTH:
            known.add(plain)
    values: set[str] = set()
    for secret in known:
        values |= _variants(secret)
    # Longest first, so that a secret containing another is removed whole.
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
