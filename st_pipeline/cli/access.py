"""``st-pipeline access``: per-tenant read access to a PostgreSQL warehouse."""

from __future__ import annotations

from typing import Any

import click

from st_pipeline.cli.app import main, open_registry, open_warehouse, tenant_option
from st_pipeline.settings import load_settings
from st_pipeline.tenants.registry import Change


@main.group()
def access() -> None:
    """Per-tenant read access to a PostgreSQL warehouse for BI roles (row-level security)."""


@access.command("grant")
@tenant_option()
@click.option("--role", required=True, help="An existing PostgreSQL role (a BI login or group).")
def access_grant(tenant_id: int, role: str) -> None:
    """Let ROLE read the rows of the tenant in every raw (and later hub and mart) table."""
    from st_pipeline.warehouse import access as warehouse_access

    _with_warehouse_and_audit(
        lambda engine: warehouse_access.grant(engine, role, tenant_id),
        "access grant",
        tenant_id,
        f"role {role!r} may read this tenant's rows",
    )
    click.echo(f"role {role} can read tenant {tenant_id}'s rows.")


@access.command("revoke")
@tenant_option(required=False, help="Only this tenant (default: every tenant of the role).")
@click.option("--role", required=True)
def access_revoke(tenant_id: int | None, role: str) -> None:
    """Take back ROLE's access to one tenant, or to all."""
    from st_pipeline.warehouse import access as warehouse_access

    removed = _with_warehouse_and_audit(
        lambda engine: warehouse_access.revoke(engine, role, tenant_id),
        "access revoke",
        tenant_id,
        f"role {role!r} access revoked",
    )
    click.echo(f"{removed} grant(s) of role {role} revoked.")


@access.command("list")
def access_list() -> None:
    """Which role reads which tenant."""
    from st_pipeline.warehouse import access as warehouse_access

    settings = load_settings()
    warehouse_access.require_postgresql(settings.warehouse_database_url)
    with open_warehouse(settings) as engine:
        grants = warehouse_access.grants(engine)
    if not grants:
        click.echo("no grants; `st-pipeline access grant --tenant ID --role ROLE` adds one")
        return
    click.echo(f"{'role':32} {'tenant id':>19}  granted (UTC)")
    for g in grants:
        click.echo(f"{g.role:32} {g.tenant_id:>19}  {g.granted_at:%Y-%m-%d %H:%M}")


def _with_warehouse_and_audit(action: Any, command: str, tenant_id: int | None, detail: str) -> Any:
    from st_pipeline.tenants.registry import write_audit
    from st_pipeline.warehouse.access import require_postgresql

    settings = load_settings()
    require_postgresql(settings.warehouse_database_url)
    with open_warehouse(settings) as engine:
        result = action(engine)
    with open_registry(settings) as registry, registry.engine.begin() as conn:
        write_audit(conn, Change(command), tenant_id, detail)
    return result
