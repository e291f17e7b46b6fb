"""Alerting for data engineers: one alert per incident, a recovery message when it clears.

Plain Python (no Dagster): the Dagster layer's sensors call ``AlertManager.open`` while something
is broken and ``AlertManager.resolve`` once it works again. Channels: Slack incoming webhook,
generic JSON webhook, email (``channels_from_settings``). Every outgoing text passes through
``st_pipeline.redaction.redact``.
"""

from st_pipeline.alerts.channels import Channel
from st_pipeline.alerts.config import channels_from_settings, dagster_run_link
from st_pipeline.alerts.errors import AlertDeliveryError, AlertError
from st_pipeline.alerts.failing_checks import CheckVerdict, FailingCheck, FailingChecks
from st_pipeline.alerts.incidents import Incident, incidents_table
from st_pipeline.alerts.mail import EmailChannel
from st_pipeline.alerts.manager import AlertManager
from st_pipeline.alerts.model import (
    AUTH_FAILURE,
    CHECK_FAILURE,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    MODULE_MISSING,
    REGISTRY_SHRANK,
    RUN_FAILURE,
    SCOPE_MISSING,
    STALE_TENANT,
    Alert,
    AlertMessage,
)
from st_pipeline.alerts.webhooks import JsonWebhookChannel, SlackWebhookChannel

__all__ = [
    "AUTH_FAILURE",
    "CHECK_FAILURE",
    "INCIDENT_OPENED",
    "INCIDENT_RESOLVED",
    "REGISTRY_SHRANK",
    "RUN_FAILURE",
    "MODULE_MISSING",
    "SCOPE_MISSING",
    "STALE_TENANT",
    "CheckVerdict",
    "FailingCheck",
    "FailingChecks",
    "Alert",
    "AlertDeliveryError",
    "AlertError",
    "AlertManager",
    "AlertMessage",
    "Channel",
    "EmailChannel",
    "Incident",
    "JsonWebhookChannel",
    "SlackWebhookChannel",
    "channels_from_settings",
    "dagster_run_link",
    "incidents_table",
]
