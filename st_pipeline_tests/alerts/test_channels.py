"""Slack, JSON webhook and email channels against real local receivers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from st_pipeline.alerts import (
    INCIDENT_RESOLVED,
    Alert,
    AlertDeliveryError,
    AlertMessage,
    EmailChannel,
    JsonWebhookChannel,
    SlackWebhookChannel,
)
from st_pipeline_tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER, Certificates, HttpReceiver, SmtpServer

OPENED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
RESOLVED = datetime(2025, 3, 4, 6, 0, 0, tzinfo=UTC)
SLACK_PATH = "/services/T0000/B0000/SLACKPATHSECRET"

ALERT = Alert(
    incident_key="run_failure:tenant=4101:asset=servicetitan/raw/crm/customers",
    kind="run_failure",
    title="Sync failed for tenant 4101",
    reason="ServerError: HTTP 503 from crm/customers after 8 attempts",
    tenant_id=4101,
    asset="servicetitan/raw/crm/customers",
    run_id="5e1c2f0a-0f6c-4a7e-9b51-52e2c1d7e0aa",
    link="http://127.0.0.1:3000/runs/5e1c2f0a-0f6c-4a7e-9b51-52e2c1d7e0aa",
)


def _opened() -> AlertMessage:
    return AlertMessage.opened(ALERT, OPENED)


def _resolved() -> AlertMessage:
    return replace(_opened(), event=INCIDENT_RESOLVED, reason="run succeeded", resolved_at=RESOLVED)


def test_slack_payload(receiver: HttpReceiver) -> None:
    SlackWebhookChannel(receiver.url(SLACK_PATH)).send(_opened())
    got = receiver.next()
    assert got.path == SLACK_PATH
    assert got.headers["Content-Type"] == "application/json"
    payload = got.json()
    assert payload["text"] == ALERT.title
    [block] = payload["blocks"]
    assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    markdown = block["text"]["text"]
    assert f"*{ALERT.title}*" in markdown
    assert ALERT.reason in markdown
    assert f"<{ALERT.link}|Open the run in Dagster>" in markdown
    assert "*Tenant:* 4101" in markdown

    SlackWebhookChannel(receiver.url(SLACK_PATH)).send(_resolved())
    assert receiver.next().json()["text"] == f"resolved: {ALERT.title}"


def test_json_webhook_payload(receiver: HttpReceiver) -> None:
    channel = JsonWebhookChannel(receiver.url("/hooks/alerts"))
    channel.send(_opened())
    channel.send(_resolved())
    opened, resolved = receiver.next().json(), receiver.next().json()
    assert opened == {
        "event": "incident_opened",
        "incident_key": ALERT.incident_key,
        "kind": "run_failure",
        "title": ALERT.title,
        "reason": ALERT.reason,
        "tenant_id": 4101,
        "asset": ALERT.asset,
        "run_id": ALERT.run_id,
        "link": ALERT.link,
        "opened_at": "2025-03-04T05:06:07+00:00",
        "resolved_at": None,
    }
    assert resolved["event"] == "incident_resolved"
    assert resolved["reason"] == "run succeeded"
    assert resolved["resolved_at"] == "2025-03-04T06:00:00+00:00"


def test_http_error_is_reported_without_the_secret_path(receiver: HttpReceiver) -> None:
    receiver.status = 500
    channel = SlackWebhookChannel(receiver.url(SLACK_PATH))
    with pytest.raises(AlertDeliveryError, match="HTTP 500") as raised:
        channel.send(_opened())
    message = str(raised.value)
    assert "SLACKPATHSECRET" not in message and "/services" not in message
    assert receiver.base_url in message
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert "SLACKPATHSECRET" not in repr(channel) + channel.name


def test_connection_failure_is_reported_without_the_secret_path(refused_port: int) -> None:
    channel = JsonWebhookChannel(f"http://127.0.0.1:{refused_port}/hook/WEBHOOKPATHSECRET?token=abc")
    with pytest.raises(AlertDeliveryError, match="ConnectError") as raised:
        channel.send(_opened())
    assert "WEBHOOKPATHSECRET" not in str(raised.value)
    assert "token=abc" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # httpx's error is not shown


def test_email(smtp_server: SmtpServer) -> None:
    channel = EmailChannel(smtp_server.host, smtp_server.port, "st@example.test", ["a@example.test", "b@example.test"])
    channel.send(_opened())
    mail = smtp_server.next()
    assert mail.mail_from == "st@example.test"
    assert mail.rcpt_tos == ["a@example.test", "b@example.test"]
    assert mail.message["Subject"] == f"[st_pipeline] {ALERT.title}"
    assert mail.message["To"] == "a@example.test, b@example.test"
    assert mail.message.get_content_type() == "text/plain"
    body = mail.body
    assert ALERT.reason in body
    assert f"Dagster: {ALERT.link}" in body
    assert "Tenant: 4101" in body

    channel.send(_resolved())
    mail = smtp_server.next()
    assert mail.message["Subject"] == f"[st_pipeline] resolved: {ALERT.title}"
    assert "run succeeded" in mail.body


def test_email_with_login(smtp_server: SmtpServer) -> None:
    host, port = smtp_server.host, smtp_server.port
    channel = EmailChannel(host, port, "st@example.test", ["a@example.test"], SMTP_USER, SMTP_PASSWORD)
    channel.send(_opened())
    assert smtp_server.next().rcpt_tos == ["a@example.test"]


def test_email_failures_name_the_server_never_the_password(smtp_server: SmtpServer, refused_port: int) -> None:
    wrong = "wrong-pass-CANARY-55aa"
    channel = EmailChannel(smtp_server.host, smtp_server.port, "st@example.test", ["a@example.test"], SMTP_USER, wrong)
    with pytest.raises(AlertDeliveryError, match="SMTPAuthenticationError") as raised:
        channel.send(_opened())
    assert wrong not in str(raised.value) and wrong not in repr(channel)
    assert raised.value.__cause__ is None

    with pytest.raises(AlertDeliveryError, match="STARTTLS"):
        no_tls = EmailChannel(smtp_server.host, smtp_server.port, "st@example.test", ["a@example.test"], starttls=True)
        no_tls.send(_opened())
    with pytest.raises(AlertDeliveryError, match=f"email \\(127.0.0.1:{refused_port}\\)"):
        EmailChannel("127.0.0.1", refused_port, "st@example.test", ["a@example.test"]).send(_opened())
    assert smtp_server.drain() == []


def test_email_over_starttls_with_a_private_ca(tls_smtp_server: SmtpServer, certificates: Certificates) -> None:
    server = tls_smtp_server
    channel = EmailChannel(
        server.host,
        server.port,
        "st@example.test",
        ["a@example.test"],
        SMTP_USER,
        SMTP_PASSWORD,
        starttls=True,
        ca_file=str(certificates.ca_file),
    )
    channel.send(_opened())
    mail = server.next()
    assert mail.over_tls and mail.rcpt_tos == ["a@example.test"]
    assert mail.message["Subject"] == f"[st_pipeline] {ALERT.title}"


def test_email_refuses_an_untrusted_certificate_and_never_logs_in_in_the_clear(tls_smtp_server: SmtpServer) -> None:
    server = tls_smtp_server
    untrusted = EmailChannel(
        server.host, server.port, "st@example.test", ["a@example.test"], SMTP_USER, SMTP_PASSWORD, starttls=True
    )  # the system CAs do not know the test CA
    with pytest.raises(AlertDeliveryError, match="CERTIFICATE_VERIFY_FAILED") as raised:
        untrusted.send(_opened())
    assert SMTP_PASSWORD not in str(raised.value)
    plain = EmailChannel(server.host, server.port, "st@example.test", ["a@example.test"], SMTP_USER, SMTP_PASSWORD)
    with pytest.raises(AlertDeliveryError, match="AUTH") as raised:  # AUTH is only offered after STARTTLS
        plain.send(_opened())
    assert SMTP_PASSWORD not in str(raised.value)
    assert server.drain() == []


def test_email_subject_stays_one_line(smtp_server: SmtpServer) -> None:
    alert = Alert(incident_key="k", kind="check_failure", title="bad\r\nBcc: x@example.test", reason="r")
    EmailChannel(smtp_server.host, smtp_server.port, "st@example.test", ["a@example.test"]).send(
        AlertMessage.opened(alert, OPENED)
    )
    mail = smtp_server.next()
    assert mail.rcpt_tos == ["a@example.test"]
    assert mail.message["Subject"] == "[st_pipeline] bad Bcc: x@example.test"
    assert mail.message["Bcc"] is None
