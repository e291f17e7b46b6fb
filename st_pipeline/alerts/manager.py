"""``AlertManager``: one alert per incident, one recovery message when it clears."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.alerts.channels import Channel
from st_pipeline.alerts.config import dagster_run_link
from st_pipeline.alerts.errors import AlertDeliveryError
from st_pipeline.alerts.incidents import INCIDENT_KEY_MAX_LENGTH, Incident, incidents_table, metadata
from st_pipeline.alerts.model import INCIDENT_RESOLVED, Alert, AlertMessage
from st_pipeline.redaction import redact

log = logging.getLogger(__name__)

DEFAULT_RECOVERY_REASON = "The condition has cleared."


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class AlertManager:
    """Records incidents in ``st_alert_incidents`` and notifies channels on open and resolve.

    - ``open`` notifies only when no incident with the key is open; repeats only touch
      ``last_seen_at``. An incident whose opening reached no channel at all is retried on the
      next ``open`` (nobody has heard of it yet).
    - ``resolve`` notifies once, when it closes an open incident.
    - Every channel is tried; failures are collected into one ``AlertDeliveryError`` raised after
      the incident is recorded.

    Calls are serialized within the process (a lock), and the table writes are conditional so
    that two processes sharing the database do not both claim the same incident. Titles and
    reasons are redacted before they are stored or sent. With SQLite, use a file database (an
    in-memory one is private to each thread).
    """

    def __init__(
        self,
        engine: sa.Engine,
        channels: Sequence[Channel],
        clock: Callable[[], datetime] = utc_now,
        ui_base_url: str | None = None,
    ) -> None:
        self.engine = engine
        self.channels = list(channels)
        self._clock = clock
        self._ui_base_url = ui_base_url
        self._lock = threading.RLock()
        metadata.create_all(engine)

    def open(self, alert: Alert) -> bool:
        """Record ``alert``'s incident; notify every channel if it is new. Returns whether it notified.

        Without ``alert.link`` but with a ``run_id``, the link is the run's page in the Dagster UI.
        Raises ``AlertDeliveryError`` (after recording the incident) if any channel failed.
        """
        if not alert.incident_key or len(alert.incident_key) > INCIDENT_KEY_MAX_LENGTH:
            raise ValueError(f"incident_key must have 1 to {INCIDENT_KEY_MAX_LENGTH} characters")
        alert = self._prepared(alert)
        with self._lock:
            now = self._now()
            incident = self._claim(alert, now)
            if incident is None:
                return False
            delivered, failures = self._deliver(AlertMessage.opened(alert, incident.opened_at))
            if delivered:
                with self.engine.begin() as conn:
                    conn.execute(
                        incidents_table.update()
                        .where(
                            incidents_table.c.incident_key == alert.incident_key,
                            incidents_table.c.opened_at == incident.opened_at,
                        )
                        .values(notified=True)
                    )
        _raise_failures(failures, len(self.channels), f"incident {alert.incident_key!r} opened")
        return delivered > 0

    def resolve(self, incident_key: str, message: str | None = None) -> bool:
        """Close the open incident ``incident_key`` and send a recovery message; no-op if none is open.

        ``message`` explains the recovery (default: the condition has cleared). Returns whether a
        message was sent; raises ``AlertDeliveryError`` (after closing) if any channel failed.
        """
        with self._lock:
            now = self._now()
            with self.engine.begin() as conn:
                closed = conn.execute(
                    incidents_table.update()
                    .where(incidents_table.c.incident_key == incident_key, incidents_table.c.resolved_at.is_(None))
                    .values(resolved_at=now, last_seen_at=now)
                ).rowcount
                if not closed:
                    return False
                row = conn.execute(incidents_table.select().where(incidents_table.c.incident_key == incident_key)).one()
            incident = Incident.from_row(row)
            recovery = AlertMessage(
                event=INCIDENT_RESOLVED,
                incident_key=incident.incident_key,
                kind=incident.kind,
                title=incident.title,
                reason=message or DEFAULT_RECOVERY_REASON,
                tenant_id=incident.tenant_id,
                asset=incident.asset,
                run_id=incident.run_id,
                link=incident.link,
                opened_at=incident.opened_at,
                resolved_at=now,
            )
            delivered, failures = self._deliver(recovery)
        _raise_failures(failures, len(self.channels), f"incident {incident_key!r} resolved")
        return delivered > 0

    def open_incidents(self, kind: str | None = None) -> list[Incident]:
        """Open incidents, oldest first, optionally only those of one ``kind``."""
        query = incidents_table.select().where(incidents_table.c.resolved_at.is_(None))
        if kind is not None:
            query = query.where(incidents_table.c.kind == kind)
        query = query.order_by(incidents_table.c.opened_at, incidents_table.c.incident_key)
        with self.engine.connect() as conn:
            return [Incident.from_row(row) for row in conn.execute(query)]

    def incident(self, incident_key: str) -> Incident | None:
        """The latest incident with this key, open or resolved, or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(incidents_table.select().where(incidents_table.c.incident_key == incident_key)).first()
        return Incident.from_row(row) if row is not None else None

    # -- internals ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the alert manager's clock must return timezone-aware datetimes")
        return now

    def _prepared(self, alert: Alert) -> Alert:
        link = alert.link
        if link is None and alert.run_id and self._ui_base_url:
            link = dagster_run_link(alert.run_id, self._ui_base_url)
        return Alert(
            incident_key=alert.incident_key,
            kind=alert.kind,
            title=redact(alert.title),
            reason=redact(alert.reason),
            tenant_id=alert.tenant_id,
            asset=alert.asset,
            run_id=alert.run_id,
            link=redact(link) if link else None,
        )

    def _claim(self, alert: Alert, now: datetime) -> Incident | None:
        """Record the alert; the incident to notify about, or ``None`` if it is already known."""
        for _ in range(2):
            try:
                return self._try_claim(alert, now)
            except sa.exc.IntegrityError:
                # Another process inserted the same key between our update and insert: retry,
                # which now finds its row.
                continue
        raise RuntimeError(f"could not record incident {alert.incident_key!r}")  # pragma: no cover

    def _try_claim(self, alert: Alert, now: datetime) -> Incident | None:
        key = incidents_table.c.incident_key == alert.incident_key
        incident = Incident(
            incident_key=alert.incident_key,
            kind=alert.kind,
            tenant_id=alert.tenant_id,
            asset=alert.asset,
            run_id=alert.run_id,
            title=alert.title,
            reason=alert.reason,
            link=alert.link,
            opened_at=now,
            last_seen_at=now,
            resolved_at=None,
            notified=False,
        )
        fresh = {name: value for name, value in asdict(incident).items() if name != "incident_key"}
        with self.engine.begin() as conn:
            seen = conn.execute(
                incidents_table.update().where(key, incidents_table.c.resolved_at.is_(None)).values(last_seen_at=now)
            ).rowcount
            if seen:
                row = conn.execute(incidents_table.select().where(key)).one()
                existing = Incident.from_row(row)
                # Already announced: stay quiet. Never announced (every channel failed): retry.
                return None if existing.notified else existing
            reopened = conn.execute(
                incidents_table.update().where(key, incidents_table.c.resolved_at.is_not(None)).values(**fresh)
            ).rowcount
            if not reopened:
                conn.execute(incidents_table.insert().values(incident_key=alert.incident_key, **fresh))
        return incident

    def _deliver(self, message: AlertMessage) -> tuple[int, list[tuple[str, str]]]:
        """Send to every channel; (how many delivered, [(channel name, reason)] of the failures)."""
        message = message.redacted()
        delivered = 0
        failures: list[tuple[str, str]] = []
        for channel in self.channels:
            name = _channel_name(channel)
            try:
                channel.send(message)
            except AlertDeliveryError as exc:
                failures.append((name, redact(str(exc))))
            except Exception as exc:  # a broken channel must not silence the others
                failures.append((name, f"{type(exc).__name__}: {redact(str(exc))}"))
            else:
                delivered += 1
        for name, reason in failures:
            log.warning(
                "alert channel %s failed to deliver %s for %r: %s", name, message.event, message.incident_key, reason
            )
        return delivered, failures


def _channel_name(channel: Channel) -> str:
    try:
        return str(channel.name)
    except Exception:  # pragma: no cover - a channel without a usable name
        return type(channel).__name__


def _raise_failures(failures: list[tuple[str, str]], total: int, what: str) -> None:
    if not failures:
        return
    names = ", ".join(name for name, _ in failures)
    details = "; ".join(reason if reason.startswith(name) else f"{name}: {reason}" for name, reason in failures)
    raise AlertDeliveryError(
        redact(f"{what}, but {len(failures)} of {total} alert channels failed ({names}): {details}"), failures
    )
