"""The tenant registry: which ServiceTitan tenants we sync, with their encrypted credentials, time zones
and declared reports.

Every change (add, new credentials, time zone, disable, enable, remove, key rotation, a rejection of
the credentials by ServiceTitan, a report declared, replaced, disabled, enabled or removed) is
written together with its audit entry, in one transaction.
Secrets are decrypted only on request, and registered with the redactor when they are.
"""

from __future__ import annotations

import builtins
import getpass
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.database import describe_url, open_engine
from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.settings import Settings
from st_pipeline.tenants import reports as report_rules
from st_pipeline.tenants import validation
from st_pipeline.tenants.crypto import SecretBox, secret_box_from_settings
from st_pipeline.tenants.reports import ReportDeclaration, ReportExistsError, UnknownReportError
from st_pipeline.tenants.schema import ensure_registry_schema
from st_pipeline.tenants.tables import (
    audit_table,
    flags_table,
    reports_table,
    tenant_status_table,
    tenants_table,
)

REGISTRY_VARIABLE = "ST_PIPELINE_REGISTRY_URL"


class UnknownTenantError(KeyError):
    """The tenant id is not in the registry."""

    def __str__(self) -> str:
        return (
            f"tenant {self.args[0]} is not registered; add it with `st-pipeline tenant add` "
            "(`st-pipeline tenant list` shows the registered ones)"
        )


class TenantExistsError(ValueError):
    """``tenant add`` for an id that is already registered."""


def current_os_user() -> str:
    """Who runs this process, as the operating system knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class Change:
    """Who changes the registry, and through which command (for the audit trail)."""

    command: str
    actor: str = field(default_factory=current_os_user)


@dataclass(frozen=True)
class Tenant:
    """A registered tenant (without its secret).

    ``time_zone`` is the IANA name of the calendar the tenant's ServiceTitan reports in (its days,
    weeks and months); None when the operator has not set it, and then days are UTC.
    """

    tenant_id: int
    name: str
    client_id: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    time_zone: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One change of the registry."""

    at: datetime
    command: str
    tenant_id: int | None
    actor: str
    detail: str


@dataclass(frozen=True)
class RotationReport:
    """What ``rotate_keys`` did."""

    rotated: int
    key_id: str
    previous_key_ids: dict[str, int]  # key id → secrets it decrypted before the rotation


class TenantRegistry:
    """Reads and writes registered tenants."""

    def __init__(self, engine: sa.Engine, secret_box: SecretBox | Callable[[], SecretBox] | None = None) -> None:
        """Use the registry database of ``engine``: an empty one gets its tables (``tenants.schema``);
        one whose schema is not this code's raises ``SchemaOutOfDateError`` (run ``st-pipeline db upgrade``)."""
        self.engine = engine
        self._secret_box = secret_box
        ensure_registry_schema(engine, describe_url(engine))

    @classmethod
    def open(cls, settings: Settings) -> TenantRegistry:
        """The registry of ``settings``; keys are read only when a secret is encrypted or decrypted."""
        engine = open_engine(settings.registry_database_url, variable=REGISTRY_VARIABLE)
        return cls(engine, lambda: secret_box_from_settings(settings))

    def close(self) -> None:
        self.engine.dispose()

    def require_keys(self) -> None:
        """Load the encryption keys now (``SecretKeyError`` if unusable), before any network call."""
        self.secret_box  # noqa: B018 - loading is the point

    @property
    def secret_box(self) -> SecretBox:
        if self._secret_box is None:
            raise RuntimeError("this registry was opened without encryption keys")
        if not isinstance(self._secret_box, SecretBox):
            self._secret_box = self._secret_box()
        return self._secret_box

    # -- lifecycle ----------------------------------------------------------------------------

    def ensure_absent(self, tenant_id: int) -> None:
        """``TenantExistsError`` if ``tenant_id`` is registered (checked before verifying new credentials)."""
        with self.engine.connect() as conn:
            existing = _row(conn, tenant_id)
        if existing is not None:
            raise _exists(existing)

    def add(
        self,
        tenant_id: int,
        name: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        change: Change,
        enabled: bool = True,
        time_zone: str | None = None,
    ) -> Tenant:
        """Register a new tenant; ``TenantExistsError`` if the id is taken (nothing is replaced).

        ``time_zone``: an IANA name (``validation.validate_time_zone``); None leaves it unset (days in UTC).
        """
        tenant_id = validation.tenant_id(tenant_id)
        name, client_id = validation.tenant_name(name), validation.client_id(client_id)
        time_zone = validation.validate_time_zone(time_zone) if time_zone is not None else None
        encrypted = self.secret_box.encrypt(client_secret)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            existing = _row(conn, tenant_id)
            if existing is not None:
                raise _exists(existing)
            conn.execute(
                tenants_table.insert().values(
                    tenant_id=tenant_id,
                    name=name,
                    client_id=client_id,
                    client_secret_encrypted=encrypted,
                    enabled=enabled,
                    created_at=now,
                    updated_at=now,
                    time_zone=time_zone,
                )
            )
            write_audit(
                conn,
                change,
                tenant_id,
                f"registered {name!r} with client id {client_id}, {_describe_zone(time_zone)}"
                + ("" if enabled else ", disabled"),
            )
        return self.get(tenant_id)

    def update_credentials(
        self, tenant_id: int, client_secret: SecretStr, *, change: Change, client_id: str | None = None
    ) -> Tenant:
        """Store new credentials (and client id, if given); clears a "needs credentials" flag."""
        before = self.get(tenant_id)
        client_id = validation.client_id(client_id) if client_id is not None else before.client_id
        encrypted = self.secret_box.encrypt(client_secret)
        with self.engine.begin() as conn:
            conn.execute(
                tenants_table.update()
                .where(tenants_table.c.tenant_id == tenant_id)
                .values(
                    client_id=client_id,
                    client_secret_encrypted=encrypted,
                    updated_at=datetime.now(UTC),
                )
            )
            conn.execute(tenant_status_table.delete().where(tenant_status_table.c.tenant_id == tenant_id))
            moved = f"client id {before.client_id} → {client_id}" if client_id != before.client_id else "same client id"
            write_audit(conn, change, tenant_id, f"new client secret, {moved}")
        return self.get(tenant_id)

    def set_time_zone(self, tenant_id: int, time_zone: str | None, *, change: Change) -> Tenant:
        """Set the tenant's IANA time zone (None: unset it, days are UTC again), with an audit entry.

        The name is checked first (``InvalidTenantInput``; nothing is stored). Setting the zone it
        already has changes nothing and writes no audit entry.
        """
        time_zone = validation.validate_time_zone(time_zone) if time_zone is not None else None
        with self.engine.begin() as conn:
            row = _row(conn, tenant_id)
            if row is None:
                raise UnknownTenantError(tenant_id)
            if row.time_zone != time_zone:
                conn.execute(
                    tenants_table.update()
                    .where(tenants_table.c.tenant_id == tenant_id)
                    .values(time_zone=time_zone, updated_at=datetime.now(UTC))
                )
                was = f"was {row.time_zone}" if row.time_zone is not None else "was not set"
                now = f"time zone {time_zone}" if time_zone is not None else "time zone unset, days are UTC"
                write_audit(conn, change, tenant_id, f"{now} ({was})")
        return self.get(tenant_id)

    def set_enabled(self, tenant_id: int, enabled: bool, *, change: Change, reason: str | None = None) -> Tenant:
        """Enable or disable a tenant: schedules skip a disabled one; its data and partition stay."""
        self.get(tenant_id)
        with self.engine.begin() as conn:
            conn.execute(
                tenants_table.update()
                .where(tenants_table.c.tenant_id == tenant_id)
                .values(
                    enabled=enabled,
                    updated_at=datetime.now(UTC),
                )
            )
            note = f": {validation.printable(reason)}" if reason else ""
            write_audit(conn, change, tenant_id, ("enabled" if enabled else "disabled") + note)
        return self.get(tenant_id)

    def remove(self, tenant_id: int, *, change: Change, note: str = "") -> Tenant:
        """Forget a tenant: credentials, status, endpoint flags and declared reports go; its audit trail stays."""
        tenant = self.get(tenant_id)
        with self.engine.begin() as conn:
            # Its reports first: on PostgreSQL their foreign key would take them anyway, SQLite does not enforce it.
            for table in (reports_table, tenants_table, tenant_status_table, flags_table):
                conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
            write_audit(
                conn,
                change,
                tenant_id,
                f"removed {tenant.name!r} (credentials, status, endpoint flags and declared reports){note}",
            )
        return tenant

    def flag_needs_credentials(self, tenant_id: int, reason: str, *, change: Change) -> None:
        """ServiceTitan rejected the tenant's credentials: schedules skip it until new ones are stored."""
        with self.engine.begin() as conn:
            conn.execute(tenant_status_table.delete().where(tenant_status_table.c.tenant_id == tenant_id))
            conn.execute(
                tenant_status_table.insert().values(
                    tenant_id=tenant_id,
                    needs_credentials=True,
                    reason=reason,
                    updated_at=datetime.now(UTC),
                )
            )
            write_audit(conn, change, tenant_id, "credentials rejected by ServiceTitan; syncs paused")

    def rotate_keys(self, *, change: Change) -> RotationReport:
        """Re-encrypt every stored secret under the first key, in one transaction.

        Every secret is decrypted before anything is written: if one cannot be, ``SecretKeyError``
        names its tenant and nothing is rewritten.
        """
        box = self.secret_box
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(tenants_table.c.tenant_id, tenants_table.c.client_secret_encrypted).order_by(
                    tenants_table.c.tenant_id
                )
            ).all()
            previous: dict[str, int] = {}
            rotated = []
            for row in rows:
                kid = box.key_id_of(row.client_secret_encrypted)
                token = box.rotate(row.client_secret_encrypted, tenant_id=row.tenant_id)
                previous[kid or "?"] = previous.get(kid or "?", 0) + 1
                rotated.append({"tid": row.tenant_id, "token": token})
            if rotated:
                conn.execute(
                    tenants_table.update()
                    .where(tenants_table.c.tenant_id == sa.bindparam("tid"))
                    .values(client_secret_encrypted=sa.bindparam("token")),
                    rotated,
                )
            write_audit(
                conn, change, None, f"{len(rotated)} client secret(s) re-encrypted under key {box.primary_key_id}"
            )
        return RotationReport(rotated=len(rotated), key_id=box.primary_key_id, previous_key_ids=previous)

    # -- declared reports ---------------------------------------------------------------------

    def declare_report(
        self,
        tenant_id: int,
        name: str,
        category: str,
        report_id: int,
        parameters: Mapping[str, str] | None = None,
        window_days: int = 1,
        enabled: bool = True,
        *,
        change: Change,
        replace: bool = False,
    ) -> ReportDeclaration:
        """Declare a ServiceTitan report to extract for a registered tenant, with an audit entry.

        Every field is checked first (``reports.InvalidReportDeclaration``; nothing is stored). A
        declaration of a name the tenant already has raises ``ReportExistsError`` unless
        ``replace``: then it takes the old one's place (a new ``created_at``).
        """
        name = report_rules.validate_report_name(name)
        category = report_rules.validate_category(category)
        report_id = report_rules.validate_report_id(report_id)
        checked = report_rules.validate_parameters(parameters)
        window_days = report_rules.validate_window_days(window_days)
        values = {
            "category": category,
            "report_id": report_id,
            "parameters": json.dumps(checked, sort_keys=True),
            "window_days": window_days,
            "enabled": enabled,
            "created_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            if _row(conn, tenant_id) is None:
                raise UnknownTenantError(tenant_id)
            old = _report_row(conn, tenant_id, name)
            what = _describe_report(category, report_id, checked, window_days, enabled)
            if old is None:
                conn.execute(reports_table.insert().values(tenant_id=tenant_id, name=name, **values))
                write_audit(conn, change, tenant_id, f"declared report {name}: {what}")
            elif not replace:
                raise ReportExistsError(
                    f"tenant {tenant_id} already declares a report named {name} "
                    f"({_describe_report_row(old)}); replace it with `st-pipeline report add … --replace`, "
                    f"or pick another name"
                )
            else:
                conn.execute(
                    reports_table.update()
                    .where(reports_table.c.tenant_id == tenant_id, reports_table.c.name == name)
                    .values(**values)
                )
                write_audit(
                    conn, change, tenant_id, f"replaced report {name}: {what} (was {_describe_report_row(old)})"
                )
        return self.report(tenant_id, name)

    def reports(self, tenant_id: int | None = None, *, enabled_only: bool = False) -> builtins.list[ReportDeclaration]:
        """The declared reports of one tenant (``UnknownTenantError`` if it is not registered) or of
        every tenant, sorted by tenant id then name; ``enabled_only``: without the disabled ones."""
        query = reports_table.select().order_by(reports_table.c.tenant_id, reports_table.c.name)
        if tenant_id is not None:
            query = query.where(reports_table.c.tenant_id == tenant_id)
        if enabled_only:
            query = query.where(reports_table.c.enabled.is_(True))
        with self.engine.connect() as conn:
            if tenant_id is not None and _row(conn, tenant_id) is None:
                raise UnknownTenantError(tenant_id)
            return [_declaration(row) for row in conn.execute(query)]

    def report(self, tenant_id: int, name: str) -> ReportDeclaration:
        """One declared report; ``UnknownReportError`` (naming the tenant's reports) if there is none."""
        with self.engine.connect() as conn:
            return _declaration(_existing_report(conn, tenant_id, name))

    def remove_report(self, tenant_id: int, name: str, *, change: Change) -> ReportDeclaration:
        """Forget a declared report, with an audit entry; returns what was declared. Its warehouse
        table, if a run made one, stays."""
        with self.engine.begin() as conn:
            row = _existing_report(conn, tenant_id, name)
            conn.execute(
                reports_table.delete().where(reports_table.c.tenant_id == tenant_id, reports_table.c.name == name)
            )
            write_audit(conn, change, tenant_id, f"removed report {name} (was {_describe_report_row(row)})")
        return _declaration(row)

    def set_report_enabled(self, tenant_id: int, name: str, enabled: bool, *, change: Change) -> ReportDeclaration:
        """Enable or disable a declared report (a disabled one is kept but not extracted), with an
        audit entry; asking for the state it has changes nothing and writes none."""
        with self.engine.begin() as conn:
            row = _existing_report(conn, tenant_id, name)
            if row.enabled != enabled:
                conn.execute(
                    reports_table.update()
                    .where(reports_table.c.tenant_id == tenant_id, reports_table.c.name == name)
                    .values(enabled=enabled)
                )
                write_audit(conn, change, tenant_id, f"report {name} {'enabled' if enabled else 'disabled'}")
        return self.report(tenant_id, name)

    # -- reads --------------------------------------------------------------------------------

    def needing_credentials(self) -> dict[int, str]:
        """Tenants whose credentials were rejected, with why."""
        with self.engine.connect() as conn:
            rows = conn.execute(tenant_status_table.select().where(tenant_status_table.c.needs_credentials.is_(True)))
            return {row.tenant_id: row.reason or "" for row in rows}

    def get(self, tenant_id: int) -> Tenant:
        with self.engine.connect() as conn:
            row = _row(conn, tenant_id)
        if row is None:
            raise UnknownTenantError(tenant_id)
        return _tenant(row)

    def list(self, *, enabled_only: bool = False) -> list[Tenant]:
        query = tenants_table.select().order_by(tenants_table.c.tenant_id)
        if enabled_only:
            query = query.where(tenants_table.c.enabled.is_(True))
        with self.engine.connect() as conn:
            return [_tenant(row) for row in conn.execute(query)]

    def credentials(self, tenant_id: int) -> TenantCredentials:
        """The tenant's OAuth client, secret decrypted into a ``SecretStr`` (and registered for redaction)."""
        with self.engine.connect() as conn:
            row = _row(conn, tenant_id)
        if row is None:
            raise UnknownTenantError(tenant_id)
        return TenantCredentials(
            tenant_id=row.tenant_id,
            client_id=row.client_id,
            client_secret=self.secret_box.decrypt(row.client_secret_encrypted, tenant_id=row.tenant_id),
        )

    def secret_key_id(self, tenant_id: int) -> str | None:
        """The id of the configured key that decrypts the tenant's stored secret (None: no key does)."""
        with self.engine.connect() as conn:
            row = _row(conn, tenant_id)
        if row is None:
            raise UnknownTenantError(tenant_id)
        return self.secret_box.key_id_of(row.client_secret_encrypted)

    def history(self, tenant_id: int | None = None, *, limit: int = 50) -> builtins.list[AuditEntry]:
        """The latest audit entries (of one tenant, or all), newest first."""
        query = audit_table.select().order_by(audit_table.c.audit_id.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(audit_table.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [
                AuditEntry(at=row.at, command=row.command, tenant_id=row.tenant_id, actor=row.actor, detail=row.detail)
                for row in conn.execute(query)
            ]


def write_audit(conn: sa.Connection, change: Change, tenant_id: int | None, detail: str) -> None:
    """An audit entry, inside the caller's transaction (the change and its entry commit together)."""
    conn.execute(
        audit_table.insert().values(
            at=datetime.now(UTC),
            command=change.command[:100],
            tenant_id=tenant_id,
            actor=validation.printable(change.actor)[:200],
            detail=validation.printable(detail),
        )
    )


def _exists(row: sa.Row) -> TenantExistsError:
    return TenantExistsError(
        f"tenant {row.tenant_id} is already registered ({validation.printable(row.name)}); change its "
        f"credentials with `st-pipeline tenant update-credentials --tenant {row.tenant_id}`"
    )


def _describe_zone(time_zone: str | None) -> str:
    return f"time zone {time_zone}" if time_zone is not None else "time zone not set (days are UTC)"


def _row(conn: sa.Connection, tenant_id: int) -> sa.Row | None:
    return conn.execute(tenants_table.select().where(tenants_table.c.tenant_id == tenant_id)).first()


def _report_row(conn: sa.Connection, tenant_id: int, name: str) -> sa.Row | None:
    return conn.execute(
        reports_table.select().where(reports_table.c.tenant_id == tenant_id, reports_table.c.name == name)
    ).first()


def _existing_report(conn: sa.Connection, tenant_id: int, name: str) -> sa.Row:
    """The report's row; ``UnknownTenantError`` or ``UnknownReportError`` (naming the tenant's reports)."""
    if _row(conn, tenant_id) is None:
        raise UnknownTenantError(tenant_id)
    row = _report_row(conn, tenant_id, name)
    if row is not None:
        return row
    names = conn.execute(
        sa.select(reports_table.c.name).where(reports_table.c.tenant_id == tenant_id).order_by(reports_table.c.name)
    ).scalars()
    declared = ", ".join(names)
    listed = (
        f"its reports are {declared}" if declared else "it declares none; declare one with `st-pipeline report add`"
    )
    raise UnknownReportError(
        f"tenant {tenant_id} has no report named {validation.printable(str(name))[:70]!r}; {listed} "
        f"(`st-pipeline report list --tenant {tenant_id}`)"
    )


def _describe_report(
    category: str, report_id: int, parameters: Mapping[str, str], window_days: int, enabled: bool
) -> str:
    shown = ", ".join(f"{key}={value}" for key, value in parameters.items()) or "no parameters"
    days = "1 day" if window_days == 1 else f"{window_days} days"
    return f"category {category}, report {report_id}, {shown}, window {days}" + ("" if enabled else ", disabled")


def _describe_report_row(row: sa.Row) -> str:
    return _describe_report(row.category, row.report_id, json.loads(row.parameters), row.window_days, row.enabled)


def _declaration(row: sa.Row) -> ReportDeclaration:
    return ReportDeclaration(
        tenant_id=row.tenant_id,
        name=row.name,
        category=row.category,
        report_id=row.report_id,
        parameters=dict(json.loads(row.parameters)),
        window_days=row.window_days,
        enabled=row.enabled,
        created_at=row.created_at,
    )


def _tenant(row: sa.Row) -> Tenant:
    return Tenant(
        tenant_id=row.tenant_id,
        name=row.name,
        client_id=row.client_id,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
        time_zone=row.time_zone,
    )
