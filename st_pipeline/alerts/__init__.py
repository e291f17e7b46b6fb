"""Alerting for data engineers: one alert per incident, a recovery message when it clears.

Plain Python (no Dagster): the Dagster layer's sensors call ``AlertManager.open`` while something
is broken and ``AlertManager.resolve`` once it works again. Channels: Slack incoming webhook,
generic JSON webhook, email (``channels_from_env``). Every outgoing text passes through
``redact``.
"""

from st_pipeline.alerts.channels import Channel
from st_pipeline.alerts.config import channels_from_env, dagster_run_link
from st_pipeline.alerts.errors import AlertConfigError, AlertDeliveryError, AlertError
from st_pipeline.alerts.incidents import Incident, incidents_table
from st_pipeline.alerts.mail import EmailChannel
from st_pipeline.alerts.manager import AlertManager
from st_pipeline.alerts.model import (
    AUTH_FAILURE,
    CHECK_FAILURE,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    RUN_FAILURE,
    STALE_TENANT,
    Alert,
    AlertMessage,
)
from st_pipeline.alerts.redaction import REDACTED, redact, register_secret
from st_pipeline.alerts.webhooks import JsonWebhookChannel, SlackWebhookChannel

__all__ = [
    "AUTH_FAILURE",
    "CHECK_FAILURE",
    "INCIDENT_OPENED",
    "INCIDENT_RESOLVED",
    "REDACTED",
    "RUN_FAILURE",
    "STALE_TENANT",
    "Alert",
    "AlertConfigError",
    "AlertDeliveryError",
    "AlertError",
    "AlertManager",
    "AlertMessage",
    "Channel",
    "EmailChannel",
    "Incident",
    "JsonWebhookChannel",
    "SlackWebhookChannel",
    "channels_from_env",
    "dagster_run_link",
    "incidents_table",
    "redact",
    "register_secret",
]
