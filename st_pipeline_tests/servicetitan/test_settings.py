"""Where the API is: explicit values, then SERVICETITAN_* variables, then production."""

from __future__ import annotations

import pytest

from st_pipeline.servicetitan.errors import ConfigurationError
from st_pipeline.servicetitan.settings import ApiSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SERVICETITAN_ENVIRONMENT", "SERVICETITAN_API_URL", "SERVICETITAN_AUTH_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVICETITAN_APP_KEY", "ak1.CANARY-app-key")


def test_production_is_the_default() -> None:
    settings = ApiSettings.resolve()
    assert settings.api_url == "https://api.servicetitan.io"
    assert settings.auth_url == "https://auth.servicetitan.io/connect/token"
    assert "CANARY" not in repr(settings)


def test_integration_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICETITAN_ENVIRONMENT", "integration")
    settings = ApiSettings.resolve()
    assert settings.api_url == "https://api-integration.servicetitan.io"
    assert settings.auth_url == "https://auth-integration.servicetitan.io/connect/token"


def test_explicit_urls_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICETITAN_ENVIRONMENT", "integration")
    monkeypatch.setenv("SERVICETITAN_API_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("SERVICETITAN_AUTH_URL", "http://127.0.0.1:9/connect/token")
    settings = ApiSettings.resolve()
    assert (settings.api_url, settings.auth_url) == ("http://127.0.0.1:9", "http://127.0.0.1:9/connect/token")


def test_missing_app_key_and_unknown_environment_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVICETITAN_APP_KEY")
    with pytest.raises(ConfigurationError, match="SERVICETITAN_APP_KEY"):
        ApiSettings.resolve()
    with pytest.raises(ConfigurationError, match="production"):
        ApiSettings.resolve(environment="staging", app_key="ak1.x")
