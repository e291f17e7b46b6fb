"""Registry schema versions (Alembic, shipped in the package): create, check, upgrade, adopt.

The rules are those of ``st_pipeline.schema_versions``: an empty registry is created at the head
revision when it is first opened (``ensure_registry_schema``, called by ``TenantRegistry``); one
that is behind or ahead of this code is refused until ``st-pipeline db upgrade``.

Registries made before the registry had migrations (its four tables made by SQLAlchemy's
``create_all``, no version table) are adopted by ``st-pipeline db upgrade``: their tables are
compared with those of revision 0001, then the registry is stamped at 0001 and upgraded from there.
Until then, opening such a registry is refused with a message saying so.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from st_pipeline.schema_versions import UPGRADE_COMMAND, SchemaOutOfDateError, Upgrade, VersionedSchema

__all__ = [
    "REGISTRY_HEAD_REVISION",
    "REGISTRY_REVISIONS",
    "REGISTRY_SCHEMA",
    "VERSION_TABLE",
    "ensure_registry_schema",
    "upgrade_registry",
]

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "st_pipeline_registry_version"
# Every migration, oldest first: append each new one (test_registry checks this against Alembic).
REGISTRY_REVISIONS = ("0001", "0002", "0003")
REGISTRY_HEAD_REVISION = REGISTRY_REVISIONS[-1]

# What the registry looked like before it had migrations — and what 0001 creates: table → columns
# (primary key first), and the one index. Later columns and tables (0002: st_tenants.time_zone;
# 0003: st_tenant_reports) are not here: an adopted registry is stamped at 0001 and gets them from
# the migrations after it.
_UNVERSIONED_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "st_tenants": (
        ("tenant_id",),
        ("name", "client_id", "client_secret_encrypted", "enabled", "created_at", "updated_at"),
    ),
    "st_tenant_status": (("tenant_id",), ("needs_credentials", "reason", "updated_at")),
    "st_endpoint_flags": (("tenant_id", "target"), ("enabled", "reason", "updated_at")),
    "st_audit_log": (("audit_id",), ("at", "command", "tenant_id", "actor", "detail")),
}
_UNVERSIONED_INDEX = ("st_audit_log", "ix_st_audit_log_tenant", ("tenant_id", "at"))
ADOPTED_REVISION = "0001"


def _is_ours(name: str) -> bool:
    return name in _UNVERSIONED_TABLES


def _adopt(conn: sa.Connection, where: str) -> str:
    """Verify that the tables are those a registry had before migrations; the revision to stamp."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    problems: list[str] = []
    for table, (key, others) in _UNVERSIONED_TABLES.items():
        if table not in present:
            problems.append(f"{table} is missing")
            continue
        columns = {column["name"] for column in inspector.get_columns(table)}
        primary_key = tuple(inspector.get_pk_constraint(table)["constrained_columns"])
        if columns != set(key + others) or set(primary_key) != set(key):
            problems.append(
                f"{table} has columns {', '.join(sorted(columns))} (primary key {', '.join(primary_key) or 'none'}), "
                f"expected {', '.join(sorted(key + others))} (primary key {', '.join(key)})"
            )
    table, index, index_columns = _UNVERSIONED_INDEX
    if table in present and not any(
        found["name"] == index and tuple(found["column_names"]) == index_columns
        for found in inspector.get_indexes(table)
    ):
        problems.append(f"index {index} on {table} ({', '.join(index_columns)}) is missing")
    if problems:
        raise SchemaOutOfDateError(
            f"the registry {where} has no schema version ({VERSION_TABLE}) and its tables are not those of an "
            f"st_pipeline registry, so it was not adopted: {'; '.join(problems)}. Check that "
            "ST_PIPELINE_REGISTRY_URL points at the registry; if it does, repair those tables (or restore a "
            f"backup) and run {UPGRADE_COMMAND} again. Nothing was changed."
        )
    return ADOPTED_REVISION


REGISTRY_SCHEMA = VersionedSchema(
    label="registry",
    variable="ST_PIPELINE_REGISTRY_URL",
    migrations=MIGRATIONS,
    version_table=VERSION_TABLE,
    revisions=REGISTRY_REVISIONS,
    owns_table=_is_ours,
    adopt=_adopt,
)


def ensure_registry_schema(engine: sa.Engine, where: str) -> bool:
    """Create an empty registry's schema (True if this call did); otherwise require the head revision.

    A registry behind, ahead, or made before migrations raises ``SchemaOutOfDateError``, unchanged.
    """
    return REGISTRY_SCHEMA.ensure(engine, where)


def upgrade_registry(engine: sa.Engine, revision: str = "head") -> Upgrade:
    """Bring the registry to ``revision``, adopting one made before migrations (see the module docstring)."""
    return REGISTRY_SCHEMA.upgrade(engine, revision)
