"""Where a secret or token may be sent: ServiceTitan's hosts, or a custom location the deployment
opted into; plain http only to this machine."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials, TokenProvider
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import ConfigurationError
from st_pipeline.servicetitan.settings import ApiSettings, check_api_location, is_loopback_host


@pytest.mark.parametrize(
    ("url", "custom", "ok"),
    [
        ("https://api.servicetitan.io", False, True),
        ("https://auth-integration.servicetitan.io/connect/token", False, True),
        ("https://evil.example/connect/token", False, False),  # not ServiceTitan, no opt-in
        ("https://servicetitan.io.evil.example/connect/token", False, False),
        ("https://evil.example/connect/token", True, True),  # opted in, and https
        ("http://auth.servicetitan.io/connect/token", False, False),  # secrets never in clear
        ("http://evil.example/connect/token", True, False),
        ("http://127.0.0.1:8765/connect/token", True, True),
        ("http://localhost:8765", True, True),
        ("http://[::1]:8765", True, True),
        ("http://127.0.0.1:8765/connect/token", False, False),  # the loopback is still not ServiceTitan
        ("ftp://127.0.0.1/x", True, False),
        ("https://user:pw@api.servicetitan.io", False, False),
        ("api.servicetitan.io", False, False),
    ],
)
def test_where_a_secret_may_go(url: str, custom: bool, ok: bool) -> None:
    if ok:
        assert check_api_location(url, variable="SERVICETITAN_AUTH_URL", custom_allowed=custom) == url.rstrip("/")
    else:
        with pytest.raises(ConfigurationError, match="SERVICETITAN_AUTH_URL") as raised:
            check_api_location(url, variable="SERVICETITAN_AUTH_URL", custom_allowed=custom)
        assert "pw" not in str(raised.value)


def test_loopback_hosts() -> None:
    assert all(map(is_loopback_host, ["localhost", "127.0.0.1", "127.8.9.1", "::1", "[::1]"]))
    assert not any(map(is_loopback_host, ["", None, "10.0.0.1", "example.com", "127.0.0.1.example.com"]))


def test_the_client_refuses_to_carry_a_secret_in_clear_even_when_built_by_hand() -> None:
    credentials = TenantCredentials(1, "cid.x", SecretStr("cs1.x"))
    clear = ApiSettings(
        api_url="https://api.servicetitan.io", auth_url="http://10.1.2.3/connect/token", app_key=SecretStr("ak1.x")
    )
    with httpx.Client() as http:
        with pytest.raises(ConfigurationError, match="not https"):
            TokenProvider(credentials, clear.auth_url, http)
        with pytest.raises(ConfigurationError, match="not https"):
            ServiceTitanClient(
                ApiSettings("http://10.1.2.3", "https://auth.servicetitan.io/x", SecretStr("ak1.x")),
                credentials,
                http=http,
            )
