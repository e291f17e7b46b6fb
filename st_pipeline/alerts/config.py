"""Channels and Dagster links from the deployment's settings (``ST_PIPELINE_ALERT_*``, ``ST_PIPELINE_UI_URL``).

The variables are declared and validated in ``st_pipeline.settings``; this builds the channels.
"""

from __future__ import annotations

from urllib.parse import quote

from st_pipeline.alerts.channels import Channel
from st_pipeline.alerts.mail import EmailChannel
from st_pipeline.alerts.webhooks import JsonWebhookChannel, SlackWebhookChannel
from st_pipeline.settings import Settings


def channels_from_settings(settings: Settings) -> list[Channel]:
    """The configured channels, in the order Slack, webhook, email; none configured, none returned."""
    channels: list[Channel] = []
    if settings.alert_slack_webhook_url is not None:
        channels.append(SlackWebhookChannel(settings.alert_slack_webhook_url.get_secret_value()))
    if settings.alert_webhook_url is not None:
        channels.append(JsonWebhookChannel(settings.alert_webhook_url.get_secret_value()))
    if settings.alert_smtp_host is not None:
        assert settings.alert_email_from is not None  # settings checked the combination
        channels.append(
            EmailChannel(
                host=settings.alert_smtp_host,
                port=settings.alert_smtp_port,
                sender=settings.alert_email_from,
                recipients=list(settings.alert_email_to),
                username=settings.alert_smtp_user,
                password=settings.alert_smtp_password.get_secret_value() if settings.alert_smtp_password else None,
                starttls=settings.alert_smtp_starttls,
                ca_file=str(settings.alert_smtp_ca_file) if settings.alert_smtp_ca_file else None,
            )
        )
    return channels


def dagster_run_link(run_id: str, base_url: str) -> str:
    """``<base>/runs/<run_id>``."""
    return f"{base_url.rstrip('/')}/runs/{quote(run_id, safe='')}"
