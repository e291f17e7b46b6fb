"""The tenant registry: which ServiceTitan tenants we sync, with their encrypted credentials.

Kept in its own database (``ST_PIPELINE_REGISTRY_URL``, default a SQLite file in
``ST_PIPELINE_HOME``) so that no credential, even encrypted, lands in the warehouse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.home import sqlite_url
from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.tenants.crypto import SecretBox

metadata = sa.MetaData()

tenants_table = sa.Table(
    "st_tenants",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("client_id", sa.String(200), nullable=False),
    sa.Column("client_secret_encrypted", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


# Operational state of a tenant, apart from its credentials: set when ServiceTitan rejects them.
tenant_status_table = sa.Table(
    "st_tenant_status",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("needs_credentials", sa.Boolean, nullable=False, default=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


class UnknownTenantError(KeyError):
    """The tenant id is not in the registry."""

    def __str__(self) -> str:
        return f"tenant {self.args[0]} is not registered; add it with `st-pipeline tenant add`"


@dataclass(frozen=True)
class Tenant:
    """A registered tenant (without its secret)."""

    tenant_id: int
    name: str
    client_id: str
    enabled: bool
    created_at: datetime


def default_registry_url() -> str:
    return os.environ.get("ST_PIPELINE_REGISTRY_URL") or sqlite_url("registry.db")


class TenantRegistry:
    """Reads and writes registered tenants; decrypts secrets only on request."""

    def __init__(self, engine: sa.Engine, secret_box: SecretBox | None = None) -> None:
        self.engine = engine
        self._secret_box = secret_box
        metadata.create_all(engine)

    @classmethod
    def from_url(cls, url: str | None = None, secret_box: SecretBox | None = None) -> TenantRegistry:
        return cls(sa.create_engine(url or default_registry_url()), secret_box)

    @property
    def secret_box(self) -> SecretBox:
        if self._secret_box is None:
            self._secret_box = SecretBox.from_env()
        return self._secret_box

    def save(self, tenant_id: int, name: str, client_id: str, client_secret: SecretStr, enabled: bool = True) -> Tenant:
        """Insert or replace a tenant and its credentials."""
        now = datetime.now(UTC)
        values = {
            "name": name,
            "client_id": client_id,
            "client_secret_encrypted": self.secret_box.encrypt(client_secret),
            "enabled": enabled,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            updated = conn.execute(
                tenants_table.update().where(tenants_table.c.tenant_id == tenant_id).values(**values)
            ).rowcount
            if not updated:
                conn.execute(tenants_table.insert().values(tenant_id=tenant_id, created_at=now, **values))
            # New credentials clear a "needs credentials" flag.
            conn.execute(tenant_status_table.delete().where(tenant_status_table.c.tenant_id == tenant_id))
        return self.get(tenant_id)

    def flag_needs_credentials(self, tenant_id: int, reason: str) -> None:
        """ServiceTitan rejected the tenant's credentials: schedules skip it until `tenant add`."""
        with self.engine.begin() as conn:
            conn.execute(tenant_status_table.delete().where(tenant_status_table.c.tenant_id == tenant_id))
            conn.execute(
                tenant_status_table.insert().values(
                    tenant_id=tenant_id, needs_credentials=True, reason=reason, updated_at=datetime.now(UTC)
                )
            )

    def needing_credentials(self) -> dict[int, str]:
        """Tenants whose credentials were rejected, with why."""
        with self.engine.connect() as conn:
            rows = conn.execute(tenant_status_table.select().where(tenant_status_table.c.needs_credentials.is_(True)))
            return {row.tenant_id: row.reason or "" for row in rows}

    def get(self, tenant_id: int) -> Tenant:
        with self.engine.connect() as conn:
            row = conn.execute(tenants_table.select().where(tenants_table.c.tenant_id == tenant_id)).first()
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
        """The tenant's OAuth client, secret decrypted into a ``SecretStr``."""
        with self.engine.connect() as conn:
            row = conn.execute(tenants_table.select().where(tenants_table.c.tenant_id == tenant_id)).first()
        if row is None:
            raise UnknownTenantError(tenant_id)
        return TenantCredentials(
            tenant_id=row.tenant_id,
            client_id=row.client_id,
            client_secret=self.secret_box.decrypt(row.client_secret_encrypted),
        )


def _tenant(row: sa.Row) -> Tenant:
    return Tenant(
        tenant_id=row.tenant_id,
        name=row.name,
        client_id=row.client_id,
        enabled=row.enabled,
        created_at=row.created_at,
    )
