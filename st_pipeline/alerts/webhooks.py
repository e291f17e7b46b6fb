"""HTTP channels: a Slack incoming webhook and a generic JSON webhook."""

from __future__ import annotations

from typing import Any

import httpx

from st_pipeline.alerts.channels import is_http_url, public_origin
from st_pipeline.alerts.errors import AlertDeliveryError
from st_pipeline.alerts.model import AlertMessage
from st_pipeline.redaction import redact, register_secret

# Slack refuses section texts longer than this.
_SLACK_SECTION_LIMIT = 3000
# How much of an error response body is worth quoting.
_BODY_EXCERPT = 200


class _WebhookChannel:
    """POSTs a JSON document to a URL whose path is treated as a secret."""

    kind = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not is_http_url(url):
            raise ValueError(f"{self.kind} URL must be an absolute http(s) URL (got something else)")
        self._url = url
        self._timeout = timeout
        # The whole URL is a credential for Slack and for most generic webhooks.
        register_secret(url)

    @property
    def name(self) -> str:
        """``<kind> (<scheme://host:port>)``: the target without its secret path."""
        return f"{self.kind} ({public_origin(self._url)})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({public_origin(self._url)}/…)"

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        """The JSON document sent for ``message``."""
        raise NotImplementedError

    def send(self, message: AlertMessage) -> None:
        """POST the payload; any transport error or non-2xx status raises ``AlertDeliveryError``."""
        document = self.payload(message.redacted())
        try:
            response = httpx.post(self._url, json=document, timeout=self._timeout)
        except httpx.HTTPError as exc:
            # httpx messages may quote the URL: describe the failure ourselves, without chaining.
            raise AlertDeliveryError(
                f"{self.name}: {type(exc).__name__}: {self._scrub(str(exc)) or 'request failed'}"
            ) from None
        if not response.is_success:
            excerpt = self._scrub(response.text[:_BODY_EXCERPT].strip())
            detail = f": {excerpt}" if excerpt else ""
            raise AlertDeliveryError(f"{self.name}: HTTP {response.status_code}{detail}")

    def _scrub(self, text: str) -> str:
        path = httpx.URL(self._url).raw_path.decode("ascii", "replace")
        text = text.replace(self._url, public_origin(self._url))
        if len(path) > 1:
            text = text.replace(path, "/…")
        return redact(text)


class SlackWebhookChannel(_WebhookChannel):
    """A Slack incoming webhook: ``{"text": …, "blocks": [section]}``."""

    kind = "slack"

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        """Plain-text fallback plus one markdown section."""
        icon = ":white_check_mark:" if message.is_resolved else ":rotating_light:"
        lines = [f"{icon} *{_escape(message.headline)}*", _escape(message.reason)]
        lines += [f"*{label}:* {_escape(value)}" for label, value in message.details()]
        if message.link:
            lines.append(f"<{_escape(message.link)}|Open the run in Dagster>")
        markdown = "\n".join(lines)
        if len(markdown) > _SLACK_SECTION_LIMIT:
            markdown = markdown[: _SLACK_SECTION_LIMIT - 1] + "…"
        return {
            "text": message.headline,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": markdown}}],
        }


class JsonWebhookChannel(_WebhookChannel):
    """A generic webhook: the document of ``AlertMessage.to_dict``."""

    kind = "webhook"

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        """``event``, the incident's fields, ``opened_at`` and ``resolved_at``."""
        return message.to_dict()


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
