"""``channels_from_settings`` and ``dagster_run_link``; the alert variables are checked by the settings."""

from __future__ import annotations

import pytest

from st_pipeline.alerts import (
    EmailChannel,
    JsonWebhookChannel,
    SlackWebhookChannel,
    channels_from_settings,
    dagster_run_link,
)
from st_pipeline.settings import SettingsError, load_settings

SLACK = "https://hooks.slack.example/services/T1/B1/SECRETPART"
EMAIL = {
    "ST_PIPELINE_ALERT_SMTP_HOST": "smtp.example.test",
    "ST_PIPELINE_ALERT_EMAIL_FROM": "st@example.test",
    "ST_PIPELINE_ALERT_EMAIL_TO": "a@example.test, b@example.test,",
}


def _channels(environ: dict[str, str]) -> list:
    return channels_from_settings(load_settings(environ))


def test_nothing_configured_means_no_channels() -> None:
    assert _channels({}) == []
    assert _channels({"ST_PIPELINE_ALERT_SLACK_WEBHOOK_URL": "  "}) == []


def test_every_channel() -> None:
    env = {
        "ST_PIPELINE_ALERT_SLACK_WEBHOOK_URL": SLACK,
        "ST_PIPELINE_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        **EMAIL,
        "ST_PIPELINE_ALERT_SMTP_PORT": "587",
        "ST_PIPELINE_ALERT_SMTP_USER": "alerts",
        "ST_PIPELINE_ALERT_SMTP_PASSWORD": "pw-CANARY-3c",
        "ST_PIPELINE_ALERT_SMTP_STARTTLS": "true",
    }
    slack, webhook, email = _channels(env)
    assert isinstance(slack, SlackWebhookChannel) and isinstance(webhook, JsonWebhookChannel)
    assert slack.name == "slack (https://hooks.slack.example)"
    assert "SECRETPART" not in repr(slack)
    assert isinstance(email, EmailChannel)
    assert (email.host, email.port, email.sender) == ("smtp.example.test", 587, "st@example.test")
    assert email.recipients == ["a@example.test", "b@example.test"]
    assert email.username == "alerts" and email.starttls is True
    assert "pw-CANARY-3c" not in repr(email)


def test_email_defaults() -> None:
    [email] = _channels(EMAIL)
    assert isinstance(email, EmailChannel)
    assert email.port == 25 and email.starttls is False and email.username is None


def test_email_with_a_private_ca() -> None:
    [email] = _channels({**EMAIL, "ST_PIPELINE_ALERT_SMTP_STARTTLS": "yes", "ST_PIPELINE_ALERT_SMTP_CA_FILE": __file__})
    assert isinstance(email, EmailChannel)
    assert email.starttls is True and email.ca_file == __file__


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({**EMAIL, "ST_PIPELINE_ALERT_EMAIL_TO": ""}, "ST_PIPELINE_ALERT_EMAIL_TO"),
        ({**EMAIL, "ST_PIPELINE_ALERT_EMAIL_TO": " , "}, "ST_PIPELINE_ALERT_EMAIL_TO"),
        ({k: v for k, v in EMAIL.items() if k != "ST_PIPELINE_ALERT_EMAIL_FROM"}, "ST_PIPELINE_ALERT_EMAIL_FROM"),
        ({"ST_PIPELINE_ALERT_EMAIL_TO": "a@example.test"}, "ST_PIPELINE_ALERT_SMTP_HOST"),
        ({**EMAIL, "ST_PIPELINE_ALERT_SMTP_USER": "alerts"}, "ST_PIPELINE_ALERT_SMTP_PASSWORD"),
        ({**EMAIL, "ST_PIPELINE_ALERT_SMTP_PASSWORD": "pw-CANARY-3c"}, "ST_PIPELINE_ALERT_SMTP_USER"),
        ({**EMAIL, "ST_PIPELINE_ALERT_SMTP_PORT": "smtp"}, "ST_PIPELINE_ALERT_SMTP_PORT"),
        ({**EMAIL, "ST_PIPELINE_ALERT_SMTP_STARTTLS": "maybe"}, "ST_PIPELINE_ALERT_SMTP_STARTTLS"),
        ({**EMAIL, "ST_PIPELINE_ALERT_SMTP_CA_FILE": __file__}, "ST_PIPELINE_ALERT_SMTP_STARTTLS"),
        (
            {**EMAIL, "ST_PIPELINE_ALERT_SMTP_STARTTLS": "1", "ST_PIPELINE_ALERT_SMTP_CA_FILE": "/nonexistent/ca.pem"},
            "ST_PIPELINE_ALERT_SMTP_CA_FILE",
        ),
        ({"ST_PIPELINE_ALERT_SMTP_CA_FILE": __file__}, "ST_PIPELINE_ALERT_SMTP_HOST"),
        ({"ST_PIPELINE_ALERT_SLACK_WEBHOOK_URL": "hooks.example/SECRETPART"}, "ST_PIPELINE_ALERT_SLACK_WEBHOOK_URL"),
        ({"ST_PIPELINE_ALERT_WEBHOOK_URL": "ftp://x/SECRETPART"}, "ST_PIPELINE_ALERT_WEBHOOK_URL"),
    ],
)
def test_misconfiguration_names_the_variable(env: dict[str, str], missing: str) -> None:
    with pytest.raises(SettingsError, match=missing) as raised:
        load_settings(env)
    assert "SECRETPART" not in str(raised.value) and "CANARY" not in str(raised.value)


def test_dagster_run_link() -> None:
    assert dagster_run_link("abc-123", "https://dagster.example.test/prefix/") == (
        "https://dagster.example.test/prefix/runs/abc-123"
    )
    assert dagster_run_link("a/b", "http://ui:3000") == "http://ui:3000/runs/a%2Fb"
    assert load_settings({}).ui_url == "http://127.0.0.1:3000"
