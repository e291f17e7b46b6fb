"""Per-tenant read access for BI logins: PostgreSQL row-level security on every tenant table.

``grant(engine, role, tenant_id)`` records (role, tenant) in ``st_tenant_access`` and makes sure
that every table of the warehouse schema with a ``tenant_id`` column (raw, quarantine, sync state
and log, and every table added later):

- has row-level security on, with the policy ``st_tenant_rows``: a role sees the rows of the
  tenants granted to it, or to a role it is a member of;
- can be read (``SELECT``) by every role holding a grant.

``st_tenant_access`` itself shows each role only its own grants. The pipeline's login owns the
tables and is not subject to the policies; a superuser or a ``BYPASSRLS`` role would see
everything, so they cannot be granted. Tables created later are secured when they are created
(``ensure_raw_tables``) and by ``st-pipeline db upgrade``. The registry lives in another database
and grants nothing to anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.warehouse.tables import tenant_access_table, tenant_table_names

POLICY = "st_tenant_rows"
OWN_GRANTS_POLICY = "st_own_grants"
# Which tenants the current role may see: its grants and those of the roles it belongs to. Joining
# pg_roles skips grants of roles dropped since (pg_has_role would raise for an unknown name).
_VISIBLE_TENANTS = (
    "SELECT a.tenant_id FROM {access} a JOIN pg_catalog.pg_roles r ON r.rolname = a.role_name "
    "WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')"
)
MAX_ROLE_NAME = 63  # PostgreSQL's identifier limit


class AccessError(RuntimeError):
    """A grant cannot be made: not PostgreSQL, unknown role, a role that bypasses the policies."""


@dataclass(frozen=True)
class Grant:
    role: str
    tenant_id: int
    granted_at: datetime


def require_postgresql(target: sa.Engine | str) -> None:
    """``AccessError`` unless ``target`` (an engine or a URL) is PostgreSQL."""
    backend = target.dialect.name if isinstance(target, sa.Engine) else sa.make_url(target).get_backend_name()
    if backend != "postgresql":
        raise AccessError(
            "per-tenant access needs a PostgreSQL warehouse (row-level security); a SQLite warehouse is "
            "one file, protected by its owner-only file mode"
        )


def grant(engine: sa.Engine, role: str, tenant_id: int) -> None:
    """Let ``role`` read the rows of ``tenant_id`` in every tenant table."""
    require_postgresql(engine)
    role = _role_name(role)
    with engine.begin() as conn:
        found = conn.execute(
            sa.text("SELECT rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = :role"), {"role": role}
        ).first()
        if found is None:
            raise AccessError(f"role {role!r} does not exist; create it first (CREATE ROLE … LOGIN PASSWORD …)")
        if found.rolsuper or found.rolbypassrls:
            raise AccessError(f"role {role!r} is a superuser or has BYPASSRLS, so it would see every tenant")
        if conn.execute(sa.text("SELECT current_user")).scalar_one() == role:
            raise AccessError(f"role {role!r} is the pipeline's own login, which owns the tables")
        exists = conn.execute(
            sa.select(tenant_access_table.c.role_name).where(
                tenant_access_table.c.role_name == role, tenant_access_table.c.tenant_id == tenant_id
            )
        ).first()
        if exists is None:
            conn.execute(
                tenant_access_table.insert().values(role_name=role, tenant_id=tenant_id, granted_at=datetime.now(UTC))
            )
        secure_tables(conn)


def revoke(engine: sa.Engine, role: str, tenant_id: int | None = None) -> int:
    """Take back ``role``'s access to one tenant (or all); returns how many grants went.

    A role left without grants also loses ``SELECT`` on the tables.
    """
    require_postgresql(engine)
    role = _role_name(role)
    access = tenant_access_table.c
    with engine.begin() as conn:
        query = tenant_access_table.delete().where(access.role_name == role)
        if tenant_id is not None:
            query = query.where(access.tenant_id == tenant_id)
        removed = conn.execute(query).rowcount
        left = conn.execute(sa.select(sa.func.count()).where(access.role_name == role)).scalar_one()
        exists = conn.execute(sa.text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :r"), {"r": role}).first()
        if not left and exists is not None:
            quoted = _quote(conn, role)
            for table in [*tenant_table_names(conn), tenant_access_table.name]:
                conn.execute(sa.text(f"REVOKE SELECT ON {_quote(conn, table)} FROM {quoted}"))
    return removed


def grants(engine: sa.Engine) -> list[Grant]:
    """Every grant, by role then tenant."""
    require_postgresql(engine)
    access = tenant_access_table.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tenant_access_table).order_by(access.role_name, access.tenant_id))
        return [Grant(role=row.role_name, tenant_id=row.tenant_id, granted_at=row.granted_at) for row in rows]


def secure_tables(conn: sa.Connection) -> int:
    """Row-level security and grants on every tenant table (idempotent); returns how many were newly secured.

    A no-op on anything but PostgreSQL, and before the schema has its grants table.
    """
    if conn.dialect.name != "postgresql" or not sa.inspect(conn).has_table(tenant_access_table.name):
        return 0  # SQLite has no row-level security; before `db upgrade`, there is nothing to grant yet
    access = _quote(conn, tenant_access_table.name)
    roles = list(
        conn.execute(
            sa.text(
                f"SELECT DISTINCT a.role_name FROM {access} a JOIN pg_catalog.pg_roles r ON r.rolname = a.role_name "
                "ORDER BY a.role_name"
            )
        ).scalars()
    )
    tables = tenant_table_names(conn)
    secured = 0
    for table in tables:
        secured += _secure(conn, table, POLICY, f"tenant_id IN ({_VISIBLE_TENANTS.format(access=access)})")
    _secure(
        conn,
        tenant_access_table.name,
        OWN_GRANTS_POLICY,
        "role_name IN (SELECT r.rolname FROM pg_catalog.pg_roles r "
        "WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))",
    )
    if roles:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        names = ", ".join(_quote(conn, role) for role in roles)
        conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {_quote(conn, schema)} TO {names}"))
        for table in [*tables, tenant_access_table.name]:
            conn.execute(sa.text(f"GRANT SELECT ON {_quote(conn, table)} TO {names}"))
    return secured


def _secure(conn: sa.Connection, table: str, policy: str, condition: str) -> int:
    state = conn.execute(
        sa.text(
            "SELECT c.relrowsecurity, EXISTS (SELECT 1 FROM pg_catalog.pg_policies p WHERE p.schemaname = n.nspname "
            "AND p.tablename = c.relname AND p.policyname = :policy) AS has_policy "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = :table"
        ),
        {"table": table, "policy": policy},
    ).one()
    quoted = _quote(conn, table)
    if not state.has_policy:
        conn.execute(sa.text(f"CREATE POLICY {policy} ON {quoted} FOR SELECT USING ({condition})"))
    if not state.relrowsecurity:
        conn.execute(sa.text(f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY"))
        return 1
    return 0


def _role_name(role: str) -> str:
    role = role.strip()
    if not role or len(role) > MAX_ROLE_NAME or not role.isprintable():
        raise AccessError(f"a role name is 1 to {MAX_ROLE_NAME} printable characters")
    return role


def _quote(conn: sa.Connection, identifier: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(identifier)
