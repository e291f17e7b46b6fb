"""Where the ServiceTitan API lives, which application key to present, and where a secret may go.

``ApiSettings`` is the resolved value the client uses; it is built by ``st_pipeline.settings``
from the deployment's environment. The rules that keep a client secret or token from leaving for
somewhere it should not go live here, beside the API they protect:

- ServiceTitan's own hosts (production, integration) are always allowed; any other host only
  when the deployment opts in with ``SERVICETITAN_ENVIRONMENT=custom`` (the simulator does);
- a secret or token travels over plain ``http://`` only to this machine (a loopback address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from st_pipeline.servicetitan.errors import ConfigurationError

ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "production": ("https://api.servicetitan.io", "https://auth.servicetitan.io/connect/token"),
    "integration": (
        "https://api-integration.servicetitan.io",
        "https://auth-integration.servicetitan.io/connect/token",
    ),
}
# The opt-in for any other API location (a simulator, a proxy of the deployment's own).
CUSTOM_ENVIRONMENT = "custom"
SERVICETITAN_DOMAIN = "servicetitan.io"


@dataclass(frozen=True)
class ApiSettings:
    """Resolved API location and application key."""

    api_url: str
    auth_url: str
    app_key: SecretStr

    @classmethod
    def for_environment(cls, environment: str, app_key: SecretStr) -> ApiSettings:
        """ServiceTitan's own URLs of ``production`` or ``integration``."""
        api_url, auth_url = ENVIRONMENTS[environment]
        return cls(api_url=api_url, auth_url=auth_url, app_key=app_key)


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback IP address."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_servicetitan_host(host: str | None) -> bool:
    """Whether ``host`` is ServiceTitan's (``servicetitan.io`` or one of its subdomains)."""
    host = (host or "").lower().rstrip(".")
    return host == SERVICETITAN_DOMAIN or host.endswith("." + SERVICETITAN_DOMAIN)


def check_api_location(url: str, *, variable: str, custom_allowed: bool) -> str:
    """``url`` without a trailing slash if a secret or token may be sent there; else ``ConfigurationError``.

    The message names ``variable`` and the host, never anything after it (a path may hold a secret).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigurationError(f"{variable} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigurationError(f"{variable} must be an absolute https:// URL")
    if parts.username or parts.password:
        raise ConfigurationError(f"{variable} must not carry a user name or password")
    if not custom_allowed and not is_servicetitan_host(host):
        raise ConfigurationError(
            f"{variable} points at {host}, which is not a ServiceTitan host; set "
            f"SERVICETITAN_ENVIRONMENT={CUSTOM_ENVIRONMENT} to allow another API location on purpose"
        )
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigurationError(
            f"{variable} uses plain http:// to {host}; credentials and tokens would travel in clear — "
            "use https:// (plain http is accepted only for this machine, e.g. a local simulator)"
        )
    return url.rstrip("/")


def assert_may_carry_secret(url: str) -> None:
    """Last line of defence before a request carries a secret: https, or http to this machine."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        return
    raise ConfigurationError(f"refusing to send credentials to {parts.scheme}://{parts.hostname}: not https")
