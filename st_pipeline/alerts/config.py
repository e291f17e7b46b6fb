"""Channels and Dagster links from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

from st_pipeline.alerts.channels import Channel, is_http_url
from st_pipeline.alerts.errors import AlertConfigError
from st_pipeline.alerts.mail import EmailChannel
from st_pipeline.alerts.webhooks import JsonWebhookChannel, SlackWebhookChannel

SLACK_WEBHOOK_URL = "ST_PIPELINE_ALERT_SLACK_WEBHOOK_URL"
WEBHOOK_URL = "ST_PIPELINE_ALERT_WEBHOOK_URL"
SMTP_HOST = "ST_PIPELINE_ALERT_SMTP_HOST"
SMTP_PORT = "ST_PIPELINE_ALERT_SMTP_PORT"
SMTP_USER = "ST_PIPELINE_ALERT_SMTP_USER"
SMTP_PASSWORD = "ST_PIPELINE_ALERT_SMTP_PASSWORD"
SMTP_STARTTLS = "ST_PIPELINE_ALERT_SMTP_STARTTLS"
SMTP_CA_FILE = "ST_PIPELINE_ALERT_SMTP_CA_FILE"
EMAIL_FROM = "ST_PIPELINE_ALERT_EMAIL_FROM"
EMAIL_TO = "ST_PIPELINE_ALERT_EMAIL_TO"
UI_URL = "ST_PIPELINE_UI_URL"

DEFAULT_SMTP_PORT = 25
DEFAULT_UI_URL = "http://127.0.0.1:3000"

_EMAIL_ONLY = (SMTP_PORT, SMTP_USER, SMTP_PASSWORD, SMTP_STARTTLS, SMTP_CA_FILE, EMAIL_FROM, EMAIL_TO)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def channels_from_env(environ: Mapping[str, str] = os.environ) -> list[Channel]:
    """The channels the environment configures, in the order Slack, webhook, email.

    No variable set means no channel. A half-configured channel raises ``AlertConfigError``
    naming the variable to set or fix (never echoing a value).
    """

    def get(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    channels: list[Channel] = []
    for variable, channel_type in ((SLACK_WEBHOOK_URL, SlackWebhookChannel), (WEBHOOK_URL, JsonWebhookChannel)):
        url = get(variable)
        if url is None:
            continue
        if not is_http_url(url):
            raise AlertConfigError(f"{variable} must be an absolute http:// or https:// URL")
        channels.append(channel_type(url))

    host = get(SMTP_HOST)
    if host is None:
        stray = [name for name in _EMAIL_ONLY if get(name) is not None]
        if stray:
            raise AlertConfigError(f"{', '.join(stray)} set but {SMTP_HOST} is missing: set it to send email alerts")
        return channels

    sender = get(EMAIL_FROM)
    if sender is None:
        raise AlertConfigError(f"{EMAIL_FROM} is missing: email alerts need a sender address")
    recipients = [address.strip() for address in (get(EMAIL_TO) or "").split(",") if address.strip()]
    if not recipients:
        raise AlertConfigError(f"{EMAIL_TO} is missing: email alerts need comma-separated recipient addresses")
    user, password = get(SMTP_USER), environ.get(SMTP_PASSWORD) or None
    if user is not None and password is None:
        raise AlertConfigError(f"{SMTP_PASSWORD} is missing: {SMTP_USER} is set")
    if password is not None and user is None:
        raise AlertConfigError(f"{SMTP_USER} is missing: {SMTP_PASSWORD} is set")
    starttls, ca_file = _flag(SMTP_STARTTLS, get(SMTP_STARTTLS)), get(SMTP_CA_FILE)
    if ca_file is not None and not starttls:
        raise AlertConfigError(f"{SMTP_CA_FILE} is set but {SMTP_STARTTLS} is not: set it to true to use the CA")
    if ca_file is not None and not os.path.isfile(ca_file):
        raise AlertConfigError(f"{SMTP_CA_FILE}: no such file {ca_file!r}")
    channels.append(
        EmailChannel(
            host=host,
            port=_port(get(SMTP_PORT)),
            sender=sender,
            recipients=recipients,
            username=user,
            password=password,
            starttls=starttls,
            ca_file=ca_file,
        )
    )
    return channels


def dagster_run_link(run_id: str, base_url: str | None = None) -> str:
    """``<base>/runs/<run_id>``; the base is ``base_url``, else ``ST_PIPELINE_UI_URL``, else local."""
    base = base_url or os.environ.get(UI_URL, "").strip() or DEFAULT_UI_URL
    return f"{base.rstrip('/')}/runs/{quote(run_id, safe='')}"


def _port(value: str | None) -> int:
    if value is None:
        return DEFAULT_SMTP_PORT
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise AlertConfigError(f"{SMTP_PORT} must be a port number between 1 and 65535")
    return port


def _flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise AlertConfigError(f"{name} must be true or false")
