"""Deployment configuration: every environment variable st_pipeline reads, in one typed place.

``load_settings()`` reads the process environment (a command, a run worker, a sensor tick of the
code server), validates it and says which variable is wrong without echoing its value. Where data,
secrets and tokens go (ServiceTitan URLs, the app key, encryption keys, warehouse and registry
URLs, alert endpoints) is decided here and only here: none of it is a Dagster resource field, so
nothing a run's config or tags can set changes it.

Every secret value read here is registered with the redactor the moment it is loaded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from st_pipeline.redaction import register_secret
from st_pipeline.servicetitan.errors import ConfigurationError
from st_pipeline.servicetitan.settings import CUSTOM_ENVIRONMENT, ENVIRONMENTS, ApiSettings, check_api_location

SUPPORTED_DATABASES = ("sqlite", "postgresql")


class SettingsError(ValueError):
    """A variable is missing or wrong; the message names it and says what to do (never its value)."""


def _variable(alias: str, default: Any = None, description: str = "", **kwargs: Any) -> Any:
    return Field(default, alias=alias, description=description, **kwargs)


class Settings(BaseModel):
    """The deployment's configuration, one field per environment variable (the field's alias)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=False, validate_default=True)

    # -- ServiceTitan ----------------------------------------------------------------------------
    servicetitan_environment: Literal["production", "integration", "custom"] = _variable(
        "SERVICETITAN_ENVIRONMENT", "production",
        "`production` or `integration` (ServiceTitan's URLs), or `custom` to allow the two URLs below",
    )
    servicetitan_api_url: str | None = _variable(
        "SERVICETITAN_API_URL", None, "API base URL; only with `SERVICETITAN_ENVIRONMENT=custom` (or a ServiceTitan host)"
    )
    servicetitan_auth_url: str | None = _variable(
        "SERVICETITAN_AUTH_URL", None, "token URL; only with `SERVICETITAN_ENVIRONMENT=custom` (or a ServiceTitan host)"
    )
    servicetitan_app_key: SecretStr | None = _variable(
        "SERVICETITAN_APP_KEY", None, "your application key, sent as `ST-App-Key` (required to sync)"
    )

    # -- state -------------------------------------------------------------------------------------
    home: Path = _variable(
        "ST_PIPELINE_HOME", Path("~/.st_pipeline"), "local state directory (owner-only)"
    )
    warehouse_url: str | None = _variable(
        "ST_PIPELINE_WAREHOUSE_URL", None, "SQLAlchemy URL of the warehouse (default: `warehouse.db` in the home)"
    )
    registry_url: str | None = _variable(
        "ST_PIPELINE_REGISTRY_URL", None, "SQLAlchemy URL of the tenant registry (default: `registry.db` in the home)"
    )
    secret_keys: SecretStr | None = _variable(
        "ST_PIPELINE_SECRET_KEYS", None,
        "comma-separated Fernet keys encrypting tenant client secrets; the first encrypts, all decrypt",
    )
    secret_keys_file: Path | None = _variable(
        "ST_PIPELINE_SECRET_KEYS_FILE", None, "a file (mode 600) holding those keys, one per line"
    )
    dagster_home: Path | None = _variable(
        "DAGSTER_HOME", None, "the Dagster instance directory (the CLI adds and removes tenant partitions there)"
    )

    # -- what runs, and when -------------------------------------------------------------------
    disabled_endpoints: tuple[str, ...] = _variable(
        "ST_PIPELINE_DISABLED_ENDPOINTS", (), "modules or datasets not extracted unless a flag enables them"
    )
    sync_cron: str = _variable("ST_PIPELINE_SYNC_CRON", "0 * * * *", "when the sync schedule runs")
    reconcile_cron: str = _variable("ST_PIPELINE_RECONCILE_CRON", "30 2 * * *", "when the reconciliation schedule runs")
    freshness_cron: str = _variable("ST_PIPELINE_FRESHNESS_CRON", "15 * * * *", "when the freshness checks run")
    freshness_sla_hours: float = _variable(
        "ST_PIPELINE_FRESHNESS_SLA_HOURS", 6.0, "a dataset or tenant not synced successfully for this long is stale",
        ge=0,
    )
    sync_log_retention_days: float = _variable(
        "ST_PIPELINE_SYNC_LOG_RETENTION_DAYS", 90.0, "sync-log rows older than this are deleted by the maintenance job",
        gt=0,
    )
    run_retention_days: float = _variable(
        "ST_PIPELINE_RUN_RETENTION_DAYS", 90.0,
        "finished Dagster runs (and their event logs) older than this are deleted by the maintenance job", gt=0,
    )
    maintenance_cron: str = _variable(
        "ST_PIPELINE_MAINTENANCE_CRON", "45 3 * * *", "when the maintenance job (sync-log and run retention) runs"
    )

    # -- alerts ------------------------------------------------------------------------------------
    alert_slack_webhook_url: SecretStr | None = _variable(
        "ST_PIPELINE_ALERT_SLACK_WEBHOOK_URL", None, "Slack incoming webhook"
    )
    alert_webhook_url: SecretStr | None = _variable("ST_PIPELINE_ALERT_WEBHOOK_URL", None, "generic JSON webhook")
    alert_smtp_host: str | None = _variable("ST_PIPELINE_ALERT_SMTP_HOST", None, "SMTP relay for email alerts")
    alert_smtp_port: int = _variable("ST_PIPELINE_ALERT_SMTP_PORT", 25, "SMTP port", ge=1, le=65535)
    alert_smtp_user: str | None = _variable("ST_PIPELINE_ALERT_SMTP_USER", None, "SMTP login")
    alert_smtp_password: SecretStr | None = _variable("ST_PIPELINE_ALERT_SMTP_PASSWORD", None, "SMTP password")
    alert_smtp_starttls: bool = _variable("ST_PIPELINE_ALERT_SMTP_STARTTLS", False, "upgrade the SMTP connection to TLS")
    alert_smtp_ca_file: Path | None = _variable(
        "ST_PIPELINE_ALERT_SMTP_CA_FILE", None, "PEM bundle to trust instead of the system CAs (needs STARTTLS)"
    )
    alert_email_from: str | None = _variable("ST_PIPELINE_ALERT_EMAIL_FROM", None, "sender address of email alerts")
    alert_email_to: tuple[str, ...] = _variable(
        "ST_PIPELINE_ALERT_EMAIL_TO", (), "comma-separated recipients of email alerts"
    )
    ui_url: str = _variable("ST_PIPELINE_UI_URL", "http://127.0.0.1:3000", "base of the Dagster run links in alerts")

    # -- parsing -----------------------------------------------------------------------------------

    @field_validator("servicetitan_environment", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("disabled_endpoints", "alert_email_to", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("home", "secret_keys_file", "dagster_home", "alert_smtp_ca_file", mode="after")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("warehouse_url", "registry_url", mode="after")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = sa.make_url(value)
        except sa.exc.ArgumentError:
            raise ValueError(
                "is not a database URL (e.g. postgresql://user@host:5432/db or sqlite:////path/file.db)"
            ) from None
        if url.get_backend_name() not in SUPPORTED_DATABASES:
            raise ValueError(f"names a {url.get_backend_name()} database; supported: {', '.join(SUPPORTED_DATABASES)}")
        register_secret(url.password)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Local mode (SQLite files in the home) is neither URL set. A deployment that sets one has
        # left local mode, and a missing other one must stop it rather than open an empty SQLite
        # file: an empty registry would look like a fleet without tenants.
        if (self.warehouse_url is None) != (self.registry_url is None):
            missing = "ST_PIPELINE_REGISTRY_URL" if self.registry_url is None else "ST_PIPELINE_WAREHOUSE_URL"
            given = "ST_PIPELINE_WAREHOUSE_URL" if self.registry_url is None else "ST_PIPELINE_REGISTRY_URL"
            raise _Invalid(
                f"{missing} is not set but {given} is: outside local mode both databases must be named "
                "(unset both for local SQLite files in ST_PIPELINE_HOME)"
            )
        if self.registry_url is not None and self.registry_url == self.warehouse_url:
            raise _Invalid(
                "ST_PIPELINE_REGISTRY_URL must name another database than ST_PIPELINE_WAREHOUSE_URL: the "
                "registry holds credentials, the warehouse is read by BI logins"
            )
        custom = self.servicetitan_environment == CUSTOM_ENVIRONMENT
        for variable, url in (
            ("SERVICETITAN_API_URL", self.servicetitan_api_url),
            ("SERVICETITAN_AUTH_URL", self.servicetitan_auth_url),
        ):
            if url is None:
                if custom:
                    raise _Invalid(f"{variable} is required with SERVICETITAN_ENVIRONMENT={CUSTOM_ENVIRONMENT}")
                continue
            try:
                check_api_location(url, variable=variable, custom_allowed=custom)
            except ConfigurationError as exc:
                raise _Invalid(exc.detail) from None
        self._check_alerts()
        for secret in (self.servicetitan_app_key, self.secret_keys, self.alert_slack_webhook_url,
                       self.alert_webhook_url, self.alert_smtp_password):
            register_secret(secret)
        return self

    def _check_alerts(self) -> None:
        for variable, url in (
            ("ST_PIPELINE_ALERT_SLACK_WEBHOOK_URL", self.alert_slack_webhook_url),
            ("ST_PIPELINE_ALERT_WEBHOOK_URL", self.alert_webhook_url),
        ):
            if url is not None and not _is_http_url(url.get_secret_value()):
                raise _Invalid(f"{variable} must be an absolute http:// or https:// URL")
        email_only = {
            "ST_PIPELINE_ALERT_SMTP_USER": self.alert_smtp_user,
            "ST_PIPELINE_ALERT_SMTP_PASSWORD": self.alert_smtp_password,
            "ST_PIPELINE_ALERT_SMTP_CA_FILE": self.alert_smtp_ca_file,
            "ST_PIPELINE_ALERT_EMAIL_FROM": self.alert_email_from,
            "ST_PIPELINE_ALERT_EMAIL_TO": self.alert_email_to or None,
        }
        if self.alert_smtp_host is None:
            stray = [name for name, value in email_only.items() if value is not None]
            if stray:
                raise _Invalid(
                    f"{', '.join(stray)} set but ST_PIPELINE_ALERT_SMTP_HOST is missing: set it to send email alerts"
                )
            return
        if self.alert_email_from is None:
            raise _Invalid("ST_PIPELINE_ALERT_EMAIL_FROM is missing: email alerts need a sender address")
        if not self.alert_email_to:
            raise _Invalid("ST_PIPELINE_ALERT_EMAIL_TO is missing: email alerts need comma-separated recipient addresses")
        if (self.alert_smtp_user is None) != (self.alert_smtp_password is None):
            missing, given = (
                ("ST_PIPELINE_ALERT_SMTP_PASSWORD", "ST_PIPELINE_ALERT_SMTP_USER")
                if self.alert_smtp_password is None
                else ("ST_PIPELINE_ALERT_SMTP_USER", "ST_PIPELINE_ALERT_SMTP_PASSWORD")
            )
            raise _Invalid(f"{missing} is missing: {given} is set")
        if self.alert_smtp_ca_file is not None:
            if not self.alert_smtp_starttls:
                raise _Invalid(
                    "ST_PIPELINE_ALERT_SMTP_CA_FILE is set but ST_PIPELINE_ALERT_SMTP_STARTTLS is not: "
                    "set it to true to use the CA"
                )
            if not self.alert_smtp_ca_file.is_file():
                raise _Invalid(f"ST_PIPELINE_ALERT_SMTP_CA_FILE: no such file {str(self.alert_smtp_ca_file)!r}")

    # -- derived values ------------------------------------------------------------------------------

    def api(self) -> ApiSettings:
        """Where the API is and the app key; ``SettingsError`` if the app key is missing."""
        if self.servicetitan_app_key is None:
            raise SettingsError(
                "SERVICETITAN_APP_KEY is not set: set it to the app key of your ServiceTitan "
                "developer-portal application"
            )
        if self.servicetitan_environment == CUSTOM_ENVIRONMENT:
            assert self.servicetitan_api_url is not None and self.servicetitan_auth_url is not None
            return ApiSettings(
                api_url=self.servicetitan_api_url.rstrip("/"),
                auth_url=self.servicetitan_auth_url,
                app_key=self.servicetitan_app_key,
            )
        default = ApiSettings.for_environment(self.servicetitan_environment, self.servicetitan_app_key)
        return ApiSettings(
            api_url=(self.servicetitan_api_url or default.api_url).rstrip("/"),
            auth_url=self.servicetitan_auth_url or default.auth_url,
            app_key=self.servicetitan_app_key,
        )

    @property
    def local_mode(self) -> bool:
        """No database URL configured: the warehouse and registry are SQLite files in the home."""
        return self.warehouse_url is None and self.registry_url is None

    @property
    def warehouse_database_url(self) -> str:
        """The warehouse URL, or the SQLite file in the home directory."""
        return self.warehouse_url or f"sqlite:///{self.home / 'warehouse.db'}"

    @property
    def registry_database_url(self) -> str:
        """The registry URL, or the SQLite file in the home directory."""
        return self.registry_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def freshness_sla(self) -> timedelta:
        return timedelta(hours=self.freshness_sla_hours)

    @property
    def sync_log_retention(self) -> timedelta:
        return timedelta(days=self.sync_log_retention_days)

    @property
    def run_retention(self) -> timedelta:
        return timedelta(days=self.run_retention_days)

    def encryption_keys(self) -> tuple[str, list[str]]:
        """(the variable they came from, the keys, first one first); ``SettingsError`` if none is usable.

        A key file must be readable by its owner only: a key anyone on the machine can read
        protects nothing.
        """
        if self.secret_keys is not None:
            variable, raw = "ST_PIPELINE_SECRET_KEYS", self.secret_keys.get_secret_value()
        elif self.secret_keys_file is not None:
            variable, raw = "ST_PIPELINE_SECRET_KEYS_FILE", _read_key_file(self.secret_keys_file)
        else:
            raise SettingsError(
                "no encryption key for tenant credentials: set ST_PIPELINE_SECRET_KEYS to a Fernet key "
                "(create one with `st-pipeline keys generate`) or ST_PIPELINE_SECRET_KEYS_FILE to a file holding it"
            )
        keys = [key.strip() for key in raw.replace("\n", ",").split(",") if key.strip()]
        if not keys:
            raise SettingsError(f"{variable} holds no key; create one with `st-pipeline keys generate`")
        for key in keys:
            register_secret(key)
        return variable, keys

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every variable this project reads, with what it means (for documentation and its test)."""
        return {field.alias: field.description or "" for field in cls.model_fields.values() if field.alias}


class _Invalid(ValueError):
    """A cross-field rule failed; its message is complete (it already names the variable)."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration from ``environ`` (default: the process environment).

    Empty values count as unset. Raises ``SettingsError`` naming the first wrong variable.
    """
    environ = os.environ if environ is None else environ
    aliases = {field.alias for field in Settings.model_fields.values()}
    given = {name: value.strip() for name, value in environ.items() if name in aliases and value.strip()}
    try:
        return Settings.model_validate(given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One line naming the variable; pydantic's own text would echo the value."""
    error = exc.errors(include_input=False, include_url=False)[0]
    context = error.get("ctx") or {}
    cause = context.get("error")
    if isinstance(cause, _Invalid):
        return str(cause)
    variable = str(error["loc"][0]) if error.get("loc") else "configuration"
    if isinstance(cause, ValueError):
        return f"{variable} {cause}"
    return f"{variable}: {error['msg']}"


def _is_http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _read_key_file(path: Path) -> str:
    variable = "ST_PIPELINE_SECRET_KEYS_FILE"
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise SettingsError(f"{variable}: {path} is not a file")
        if mode & 0o077:
            raise SettingsError(
                f"{variable}: {path} can be read by other users (mode {stat.S_IMODE(mode):03o}); "
                f"make it private with `chmod 600 {path}`"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}: {path} is not UTF-8 text; it must hold Fernet keys, one per line") from None
