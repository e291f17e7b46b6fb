"""What an alert is (``Alert``) and what channels deliver (``AlertMessage``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal

from st_pipeline.redaction import redact

Event = Literal["incident_opened", "incident_resolved"]

INCIDENT_OPENED: Event = "incident_opened"
INCIDENT_RESOLVED: Event = "incident_resolved"

# Well-known kinds (``KINDS`` below); callers may use others.
RUN_FAILURE = "run_failure"
CHECK_FAILURE = "check_failure"
AUTH_FAILURE = "auth_failure"
STALE_TENANT = "stale_tenant"
SCOPE_MISSING = "scope_missing"
MODULE_MISSING = "module_missing"
REGISTRY_SHRANK = "registry_shrank"

# The kinds st_pipeline raises: what opens an incident of each, and what resolves it.
KINDS = {
    RUN_FAILURE: "a run of this code location failed; resolved by the tenant's next successful run",
    AUTH_FAILURE: "ServiceTitan rejected a tenant's credentials (its schedules skip it); resolved by a successful "
    "run after `st-pipeline tenant update-credentials`",
    CHECK_FAILURE: "asset checks fail for a tenant, every failing (asset, check) in one incident; resolved when "
    "they all pass",
    STALE_TENANT: "an enabled tenant has not synced successfully within ST_PIPELINE_FRESHNESS_SLA_HOURS; "
    "resolved by a successful sync",
    SCOPE_MISSING: "enabled datasets whose scope the tenant does not grant (403); resolved when none is left",
    MODULE_MISSING: "enabled datasets of modules the tenant does not have (404); resolved when none is left",
    REGISTRY_SHRANK: "the registry lists fewer than half as many tenants as there are partitions (the onboarding "
    "sensor changes nothing meanwhile); resolved when it lists them again",
}


@dataclass(frozen=True)
class Alert:
    """Something broken that a data engineer should hear about once.

    ``incident_key`` identifies the incident across repeated reports (e.g.
    ``"run_failure:tenant=123:asset=servicetitan/raw/crm/customers"``): while an incident with
    that key is open, reporting it again sends nothing.
    """

    incident_key: str
    kind: str
    title: str
    reason: str
    tenant_id: int | None = None
    asset: str | None = None
    run_id: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class AlertMessage:
    """One notification, as handed to every channel: an incident opening or resolving."""

    event: Event
    incident_key: str
    kind: str
    title: str
    reason: str
    tenant_id: int | None
    asset: str | None
    run_id: str | None
    link: str | None
    opened_at: datetime
    resolved_at: datetime | None = None

    @classmethod
    def opened(cls, alert: Alert, opened_at: datetime) -> AlertMessage:
        """The message announcing a new incident."""
        return cls(
            event=INCIDENT_OPENED,
            incident_key=alert.incident_key,
            kind=alert.kind,
            title=alert.title,
            reason=alert.reason,
            tenant_id=alert.tenant_id,
            asset=alert.asset,
            run_id=alert.run_id,
            link=alert.link,
            opened_at=opened_at,
        )

    @property
    def is_resolved(self) -> bool:
        """Whether this message announces a recovery."""
        return self.event == INCIDENT_RESOLVED

    @property
    def headline(self) -> str:
        """The title, prefixed with ``resolved:`` for a recovery."""
        return f"resolved: {self.title}" if self.is_resolved else self.title

    def redacted(self, secrets: Iterable[str] = ()) -> AlertMessage:
        """This message with every text field passed through ``redact``."""
        changes: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str) and field.name != "event":
                changes[field.name] = redact(value, secrets)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The generic JSON document (timestamps in ISO 8601, UTC)."""
        return {
            "event": self.event,
            "incident_key": self.incident_key,
            "kind": self.kind,
            "title": self.title,
            "reason": self.reason,
            "tenant_id": self.tenant_id,
            "asset": self.asset,
            "run_id": self.run_id,
            "link": self.link,
            "opened_at": self.opened_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }

    def details(self) -> list[tuple[str, str]]:
        """Labelled facts about the incident, the ones that are known, for plain-text renderings."""
        rows: list[tuple[str, str | None]] = [
            ("Kind", self.kind),
            ("Tenant", str(self.tenant_id) if self.tenant_id is not None else None),
            ("Asset", self.asset),
            ("Run", self.run_id),
            ("Incident", self.incident_key),
            ("Opened", self.opened_at.isoformat()),
            ("Resolved", self.resolved_at.isoformat() if self.resolved_at else None),
        ]
        return [(label, value) for label, value in rows if value]

    def text(self) -> str:
        """A plain-text rendering: headline, reason, details, link."""
        lines = [self.headline, "", self.reason, ""]
        lines += [f"{label}: {value}" for label, value in self.details()]
        if self.link:
            lines.append(f"Dagster: {self.link}")
        return "\n".join(lines)
