"""The deployment's configuration: every variable typed and checked once, errors naming the variable
and never its value, secrets registered with the redactor as they are read."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from st_pipeline.redaction import redact
from st_pipeline.settings import Settings, SettingsError, load_settings
from st_pipeline.tenants.crypto import generate_key

CUSTOM = {
    "SERVICETITAN_ENVIRONMENT": "custom",
    "SERVICETITAN_API_URL": "http://127.0.0.1:8765/",
    "SERVICETITAN_AUTH_URL": "http://127.0.0.1:8765/connect/token",
    "SERVICETITAN_APP_KEY": "ak1.CANARY-app-key-61",
}


def test_defaults_are_production_and_local_files(tmp_path: Path) -> None:
    settings = load_settings({"SERVICETITAN_APP_KEY": "ak1.x", "ST_PIPELINE_HOME": str(tmp_path)})
    api = settings.api()
    assert (api.api_url, api.auth_url) == ("https://api.servicetitan.io", "https://auth.servicetitan.io/connect/token")
    assert settings.warehouse_database_url == f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert settings.registry_database_url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert settings.sync_cron == "0 * * * *" and settings.freshness_sla.total_seconds() == 6 * 3600


def test_home_is_the_projects_state_directory_found_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    outside, project = tmp_path / "elsewhere", tmp_path / "project"
    (project / "st_pipeline" / "defs").mkdir(parents=True)
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert load_settings({}).home == tmp_path / "user" / ".st_pipeline"
    (project / ".st_pipeline").mkdir()
    for directory in (project, project / "st_pipeline" / "defs"):
        monkeypatch.chdir(directory)
        assert load_settings({}).home == project / ".st_pipeline"
    assert load_settings({"ST_PIPELINE_HOME": str(outside)}).home == outside, "the variable wins"


def test_a_state_directory_that_is_not_this_users_own_directory_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    shared, project = tmp_path / "shared", tmp_path / "shared" / "project"
    project.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (project / ".st_pipeline").symlink_to(tmp_path / "elsewhere")
    (shared / ".st_pipeline").mkdir()
    os.chown(shared / ".st_pipeline", os.getuid() + 1, -1) if os.getuid() == 0 else None
    monkeypatch.chdir(project)
    expected = tmp_path / "user" / ".st_pipeline" if os.getuid() == 0 else shared / ".st_pipeline"
    assert load_settings({}).home == expected


def test_local_mode_uses_the_homes_key_file_and_dagster_instance(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    bare = load_settings({"ST_PIPELINE_HOME": str(home)})
    assert (bare.secret_keys_file, bare.dagster_home) == (None, None)
    (home / "secret.key").write_text(generate_key() + "\n")
    (home / "secret.key").chmod(0o600)
    (home / "dagster" / "dagster.yaml").write_text("")
    local = load_settings({"ST_PIPELINE_HOME": str(home)})
    assert (local.secret_keys_file, local.dagster_home) == (home / "secret.key", home / "dagster")
    assert local.encryption_keys()[0] == "ST_PIPELINE_SECRET_KEYS_FILE"
    explicit = load_settings(
        {
            "ST_PIPELINE_HOME": str(home),
            "ST_PIPELINE_SECRET_KEYS": generate_key(),
            "DAGSTER_HOME": str(tmp_path / "other"),
        }
    )
    assert (explicit.secret_keys_file, explicit.dagster_home) == (None, tmp_path / "other")
    deployed = load_settings(
        {
            "ST_PIPELINE_HOME": str(home),
            "ST_PIPELINE_WAREHOUSE_URL": "postgresql://db/w",
            "ST_PIPELINE_REGISTRY_URL": "postgresql://db/r",
        }
    )
    assert (deployed.secret_keys_file, deployed.dagster_home) == (None, None), "a deployment names its own"


def test_integration_and_custom_locations() -> None:
    integration = load_settings({"SERVICETITAN_ENVIRONMENT": "Integration", "SERVICETITAN_APP_KEY": "ak1.x"}).api()
    assert integration.auth_url == "https://auth-integration.servicetitan.io/connect/token"
    custom = load_settings(CUSTOM).api()
    assert (custom.api_url, custom.auth_url) == ("http://127.0.0.1:8765", "http://127.0.0.1:8765/connect/token")
    assert "CANARY" not in repr(custom) + repr(load_settings(CUSTOM))


@pytest.mark.parametrize(
    ("environ", "variable", "what"),
    [
        (
            {"SERVICETITAN_AUTH_URL": "https://collector.example/token"},
            "SERVICETITAN_AUTH_URL",
            "SERVICETITAN_ENVIRONMENT=custom",
        ),
        ({"SERVICETITAN_API_URL": "http://127.0.0.1:9/"}, "SERVICETITAN_API_URL", "not a ServiceTitan host"),
        ({**CUSTOM, "SERVICETITAN_AUTH_URL": "http://collector.example/token"}, "SERVICETITAN_AUTH_URL", "in clear"),
        ({**CUSTOM, "SERVICETITAN_API_URL": ""}, "SERVICETITAN_API_URL", "required"),
        ({"SERVICETITAN_ENVIRONMENT": "staging"}, "SERVICETITAN_ENVIRONMENT", "production"),
        ({"ST_PIPELINE_WAREHOUSE_URL": "not a url CANARY-pw"}, "ST_PIPELINE_WAREHOUSE_URL", "not a database URL"),
        ({"ST_PIPELINE_REGISTRY_URL": "mysql://u:CANARY-pw@h/db"}, "ST_PIPELINE_REGISTRY_URL", "supported"),
        ({"ST_PIPELINE_WAREHOUSE_URL": "postgresql://u:CANARY-pw@h/wh"}, "ST_PIPELINE_REGISTRY_URL", "local mode"),
        (
            {"ST_PIPELINE_WAREHOUSE_URL": "postgresql://h/x", "ST_PIPELINE_REGISTRY_URL": "postgresql://h/x"},
            "ST_PIPELINE_REGISTRY_URL",
            "another database",
        ),
        ({"ST_PIPELINE_FRESHNESS_SLA_HOURS": "six"}, "ST_PIPELINE_FRESHNESS_SLA_HOURS", "number"),
        ({"ST_PIPELINE_FRESHNESS_SLA_HOURS": "-1"}, "ST_PIPELINE_FRESHNESS_SLA_HOURS", "greater than or equal"),
        (
            {"ST_PIPELINE_ALERT_SMTP_PORT": "70000", "ST_PIPELINE_ALERT_SMTP_HOST": "h"},
            "ST_PIPELINE_ALERT_SMTP_PORT",
            "",
        ),
    ],
)
def test_a_wrong_variable_is_named_and_its_value_never_echoed(
    environ: dict[str, str], variable: str, what: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environ)
    message = str(raised.value)
    assert variable in message and what in message
    assert "CANARY" not in message and "\n" not in message


def test_a_missing_app_key_is_explained_when_the_api_is_needed() -> None:
    with pytest.raises(SettingsError, match="SERVICETITAN_APP_KEY is not set"):
        load_settings({}).api()


def test_secrets_read_are_known_to_the_redactor() -> None:
    settings = load_settings(
        {
            **CUSTOM,
            "SERVICETITAN_APP_KEY": "plain-app-key-canary-7731",
            "ST_PIPELINE_ALERT_SMTP_HOST": "smtp.example.test",
            "ST_PIPELINE_ALERT_EMAIL_FROM": "a@example.test",
            "ST_PIPELINE_ALERT_EMAIL_TO": "b@example.test",
            "ST_PIPELINE_ALERT_SMTP_USER": "alerts",
            "ST_PIPELINE_ALERT_SMTP_PASSWORD": "plain-smtp-pw-canary",
            "ST_PIPELINE_WAREHOUSE_URL": "postgresql://etl:plain-db-pw-canary@db/wh",
            "ST_PIPELINE_REGISTRY_URL": "postgresql://etl@db/registry",
        }
    )
    text = "plain-app-key-canary-7731 plain-smtp-pw-canary plain-db-pw-canary"
    assert redact(text) == "[redacted] [redacted] [redacted]"
    assert settings.alert_email_to == ("b@example.test",)


def test_keys_from_the_variable_or_a_private_file(tmp_path: Path) -> None:
    first, second = generate_key(), generate_key()
    assert load_settings({"ST_PIPELINE_SECRET_KEYS": f"{first}, {second}"}).encryption_keys() == (
        "ST_PIPELINE_SECRET_KEYS",
        [first, second],
    )
    key_file = tmp_path / "keys"
    key_file.write_text(f"{first}\n\n{second}\n")
    key_file.chmod(0o600)
    assert load_settings({"ST_PIPELINE_SECRET_KEYS_FILE": str(key_file)}).encryption_keys() == (
        "ST_PIPELINE_SECRET_KEYS_FILE",
        [first, second],
    )


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (b"KEY\n", 0o644, "can be read by other users (mode 644); make it private with `chmod 600"),
        (b"KEY\n", 0o640, "mode 640"),
        (b"\xff\xfe\x00garbage", 0o600, "is not UTF-8 text"),
        (b"\n \n", 0o600, "holds no key"),
    ],
)
def test_a_bad_key_file_is_refused_with_how_to_fix_it(tmp_path: Path, content: bytes, mode: int, message: str) -> None:
    key_file = tmp_path / "keys"
    key_file.write_bytes(content.replace(b"KEY", generate_key().encode()))
    key_file.chmod(mode)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings({"ST_PIPELINE_SECRET_KEYS_FILE": str(key_file)}).encryption_keys()
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings({"ST_PIPELINE_SECRET_KEYS_FILE": str(tmp_path / "missing")}).encryption_keys()
    with pytest.raises(SettingsError, match="st-pipeline keys generate"):
        load_settings({"ST_PIPELINE_HOME": str(tmp_path / "home")}).encryption_keys()


def test_every_variable_the_code_reads_is_declared() -> None:
    """No module reads the environment behind the settings' back."""
    root = Path(__file__).resolve().parents[1] / "st_pipeline"
    readers = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"os\.environ\b(?!\.update)|os\.getenv", line)
        and "client_secret_env" not in line  # the CLI reads the variable the user names for a secret
    ]
    assert readers == []
    assert set(Settings.variables()) >= {"SERVICETITAN_APP_KEY", "ST_PIPELINE_WAREHOUSE_URL", "DAGSTER_HOME"}
    assert all(Settings.variables().values())  # every variable says what it means
