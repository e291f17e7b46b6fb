"""``AlertManager``: deduplication, recovery, failing channels, secrets, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from st_pipeline.alerts import (
    Alert,
    AlertDeliveryError,
    AlertManager,
    AlertMessage,
    Channel,
    EmailChannel,
    JsonWebhookChannel,
    SlackWebhookChannel,
)
from st_pipeline.redaction import register_secret
from st_pipeline_tests.alerts.conftest import Clock, HttpReceiver, SmtpServer
from st_pipeline_tests.conftest import CANARY_SECRET

KEY = "run_failure:tenant=4101:asset=servicetitan/raw/crm/customers"
ALERT = Alert(
    incident_key=KEY,
    kind="run_failure",
    title="Sync failed for tenant 4101",
    reason="ServerError: HTTP 503 from crm/customers",
    tenant_id=4101,
    asset="servicetitan/raw/crm/customers",
    run_id="run-1",
)


class Everywhere:
    """Slack + JSON webhook on one receiver (told apart by path) and email to the SMTP server."""

    def __init__(self, receiver: HttpReceiver, smtp: SmtpServer) -> None:
        self.receiver, self.smtp = receiver, smtp
        self.channels: list[Channel] = [
            SlackWebhookChannel(receiver.url("/slack/T1/B1/xyz")),
            JsonWebhookChannel(receiver.url("/json")),
            EmailChannel(smtp.host, smtp.port, "st@example.test", ["oncall@example.test"]),
        ]

    def take(self) -> tuple[list[dict], list[dict], list[str]]:
        """(slack payloads, JSON payloads, email subjects) delivered since the last call."""
        posts = self.receiver.drain()
        slack = [p.json() for p in posts if p.path.startswith("/slack/")]
        json_docs = [p.json() for p in posts if p.path == "/json"]
        subjects = [str(m.message["Subject"]) for m in self.smtp.drain()]
        return slack, json_docs, subjects


@pytest.fixture()
def everywhere(receiver: HttpReceiver, smtp_server: SmtpServer) -> Everywhere:
    return Everywhere(receiver, smtp_server)


@pytest.fixture()
def manager(engine: sa.Engine, everywhere: Everywhere, clock: Clock) -> Iterator[AlertManager]:
    yield AlertManager(engine, everywhere.channels, clock=clock, ui_base_url="http://ui.example.test")


def test_one_alert_per_incident_and_one_recovery(manager: AlertManager, everywhere: Everywhere, clock: Clock) -> None:
    assert manager.open(ALERT) is True
    slack, docs, subjects = everywhere.take()
    assert len(slack) == 1 and subjects == ["[st_pipeline] Sync failed for tenant 4101"]
    [doc] = docs
    assert doc["event"] == "incident_opened"
    assert doc["link"] == "http://ui.example.test/runs/run-1"
    opened_at = clock.now

    clock.advance(minutes=5)
    assert manager.open(ALERT) is False
    assert everywhere.take() == ([], [], [])
    [incident] = manager.open_incidents()
    assert incident.opened_at == opened_at and incident.last_seen_at == clock.now and incident.notified

    clock.advance(minutes=5)
    assert manager.resolve(KEY, "run run-2 succeeded") is True
    slack, docs, subjects = everywhere.take()
    assert [s["text"] for s in slack] == ["resolved: Sync failed for tenant 4101"]
    assert subjects == ["[st_pipeline] resolved: Sync failed for tenant 4101"]
    [doc] = docs
    assert doc["event"] == "incident_resolved" and doc["reason"] == "run run-2 succeeded"
    assert doc["resolved_at"] == clock.now.isoformat() and doc["opened_at"] == opened_at.isoformat()
    assert manager.open_incidents() == []

    assert manager.resolve(KEY) is False
    assert manager.resolve("never-opened") is False
    assert everywhere.take() == ([], [], [])

    clock.advance(hours=1)
    assert manager.open(ALERT) is True
    slack, docs, subjects = everywhere.take()
    assert len(slack) == len(docs) == len(subjects) == 1
    assert docs[0]["opened_at"] == clock.now.isoformat()
    [incident] = manager.open_incidents()
    assert incident.resolved_at is None and incident.opened_at == clock.now


def test_open_incidents_by_kind_and_across_managers(
    engine: sa.Engine, manager: AlertManager, everywhere: Everywhere
) -> None:
    stale = Alert(
        incident_key="stale_tenant:tenant=4202",
        kind="stale_tenant",
        title="Tenant 4202 is stale",
        reason="no data for 26 h",
        tenant_id=4202,
    )
    manager.open(ALERT)
    manager.open(stale)
    assert [i.incident_key for i in manager.open_incidents()] == [KEY, stale.incident_key]
    assert [i.incident_key for i in manager.open_incidents("stale_tenant")] == [stale.incident_key]
    everywhere.take()

    # A second process (another manager on the same database) sees the open incident.
    other = AlertManager(engine, everywhere.channels)
    assert other.open(stale) is False
    assert other.resolve(stale.incident_key) is True
    assert manager.resolve(stale.incident_key) is False
    _, docs, _ = everywhere.take()
    assert [d["event"] for d in docs] == ["incident_resolved"]


def test_a_failing_channel_does_not_stop_the_others(
    engine: sa.Engine, everywhere: Everywhere, receiver: HttpReceiver, refused_port: int, clock: Clock
) -> None:
    class Broken:
        name = "broken"

        def send(self, message: AlertMessage) -> None:
            raise RuntimeError("channel bug")

    dead_webhook = JsonWebhookChannel(f"http://127.0.0.1:{refused_port}/dead/SECRETPATH")
    channels: list[Channel] = [dead_webhook, Broken(), *everywhere.channels]
    manager = AlertManager(engine, channels, clock=clock)
    with pytest.raises(AlertDeliveryError) as raised:
        manager.open(ALERT)
    error = raised.value
    assert error.channel_names == [dead_webhook.name, "broken"]
    assert "2 of 5 alert channels failed" in str(error) and "channel bug" in str(error)
    assert "SECRETPATH" not in str(error)
    slack, docs, subjects = everywhere.take()
    assert len(slack) == len(docs) == len(subjects) == 1
    [incident] = manager.open_incidents()
    assert incident.notified

    # Still open and announced: no repeat, not even to the channels that failed.
    assert manager.open(ALERT) is False
    assert everywhere.take() == ([], [], [])

    # Recovery goes out too, failures reported again after everyone was tried.
    with pytest.raises(AlertDeliveryError):
        manager.resolve(KEY)
    assert manager.open_incidents() == []
    assert len(everywhere.take()[1]) == 1


def test_an_incident_nobody_heard_of_is_retried(engine: sa.Engine, receiver: HttpReceiver, clock: Clock) -> None:
    manager = AlertManager(engine, [JsonWebhookChannel(receiver.url("/json"))], clock=clock)
    receiver.status = 503
    with pytest.raises(AlertDeliveryError, match="HTTP 503"):
        manager.open(ALERT)
    [incident] = manager.open_incidents()
    assert not incident.notified
    receiver.drain()

    receiver.status = 200
    clock.advance(minutes=1)
    assert manager.open(ALERT) is True
    [doc] = [p.json() for p in receiver.drain()]
    assert doc["opened_at"] == incident.opened_at.isoformat()
    assert manager.open(ALERT) is False
    assert receiver.drain() == []


def test_secrets_never_reach_any_channel(
    engine: sa.Engine, manager: AlertManager, everywhere: Everywhere, smtp_server: SmtpServer
) -> None:
    canary = "CANARY-alert-b7d1e0"
    register_secret(canary)
    register_secret(CANARY_SECRET)
    fernet_token = Fernet(Fernet.generate_key()).encrypt(b"x").decode()
    leaky = Alert(
        incident_key="auth_failure:tenant=4101",
        kind="auth_failure",
        title=f"Credentials revoked for tenant 4101 ({canary})",
        reason=(
            f"token request failed: client_secret={CANARY_SECRET}&client_id=cid.a; "
            f"headers Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln-CANARYTOKEN; "
            f"secret {canary}; stored {fernet_token}"
        ),
        tenant_id=4101,
        run_id="run-9",
    )
    manager.open(leaky)
    manager.resolve(leaky.incident_key, f"fixed, new password={canary}")
    posts = everywhere.receiver.drain()
    mails = smtp_server.drain()
    assert len(posts) == 4 and len(mails) == 2
    delivered = b"".join(p.body for p in posts) + b"".join(m.raw for m in mails)
    for secret in (canary, CANARY_SECRET, "CANARYTOKEN", fernet_token, "eyJhbGciOi"):
        assert secret.encode() not in delivered
    assert b"[redacted]" in delivered
    assert b"client_id=cid.a" in delivered  # the rest of the reason still reads
    stored = repr(manager.incident(leaky.incident_key))
    assert canary not in stored and CANARY_SECRET not in stored


def test_concurrent_opens_alert_once(engine: sa.Engine, manager: AlertManager, everywhere: Everywhere) -> None:
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list[bool] = []
    errors: list[BaseException] = []

    def report() -> None:
        try:
            barrier.wait(timeout=5)
            results.append(manager.open(ALERT))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=report) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert sorted(results) == [False] * (threads_n - 1) + [True]
    slack, docs, subjects = everywhere.take()
    assert len(slack) == len(docs) == len(subjects) == 1


def test_no_channels_and_bad_keys(engine: sa.Engine, clock: Clock) -> None:
    manager = AlertManager(engine, [], clock=clock)
    assert manager.open(ALERT) is False
    assert [i.incident_key for i in manager.open_incidents()] == [KEY]
    with pytest.raises(ValueError, match="incident_key"):
        manager.open(Alert(incident_key="", kind="x", title="t", reason="r"))
    with pytest.raises(ValueError, match="incident_key"):
        manager.open(Alert(incident_key="k" * 513, kind="x", title="t", reason="r"))
