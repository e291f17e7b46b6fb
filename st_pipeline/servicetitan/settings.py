"""Where the ServiceTitan API lives and which application key to present.

Resolved from explicit values first, then the environment:

``SERVICETITAN_ENVIRONMENT``  ``production`` (default) or ``integration``
``SERVICETITAN_API_URL``      API base URL, overrides the environment's
``SERVICETITAN_AUTH_URL``     token URL (``…/connect/token``), overrides the environment's
``SERVICETITAN_APP_KEY``      the application key sent as ``ST-App-Key``
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import SecretStr

from st_pipeline.servicetitan.errors import ConfigurationError

ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "production": ("https://api.servicetitan.io", "https://auth.servicetitan.io/connect/token"),
    "integration": (
        "https://api-integration.servicetitan.io",
        "https://auth-integration.servicetitan.io/connect/token",
    ),
}


@dataclass(frozen=True)
class ApiSettings:
    """Resolved API location and application key."""

    api_url: str
    auth_url: str
    app_key: SecretStr

    @classmethod
    def resolve(
        cls,
        *,
        environment: str | None = None,
        api_url: str | None = None,
        auth_url: str | None = None,
        app_key: str | None = None,
    ) -> ApiSettings:
        """Fill every value not given from the environment variables described above."""
        environment = (environment or os.environ.get("SERVICETITAN_ENVIRONMENT") or "production").lower()
        if environment not in ENVIRONMENTS:
            raise ConfigurationError(
                f"SERVICETITAN_ENVIRONMENT must be one of {sorted(ENVIRONMENTS)}, got {environment!r}"
            )
        default_api, default_auth = ENVIRONMENTS[environment]
        key = app_key or os.environ.get("SERVICETITAN_APP_KEY")
        if not key:
            raise ConfigurationError(
                "no ServiceTitan application key: set SERVICETITAN_APP_KEY to the app key of your "
                "ServiceTitan developer-portal application"
            )
        return cls(
            api_url=(api_url or os.environ.get("SERVICETITAN_API_URL") or default_api).rstrip("/"),
            auth_url=auth_url or os.environ.get("SERVICETITAN_AUTH_URL") or default_auth,
            app_key=SecretStr(key),
        )
