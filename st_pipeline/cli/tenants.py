"""``st-pipeline tenant``: register, inspect, test, disable and remove tenants; their time zones and
Dagster partitions (their declared reports: ``declared_reports``)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from pydantic import SecretStr

from st_pipeline.cli.app import (
    main,
    no_tenants_message,
    open_registry,
    open_warehouse,
    set_time_zone_hint,
    tenant_option,
    time_zone_cell,
)
from st_pipeline.servicetitan.errors import ServiceTitanError
from st_pipeline.settings import Settings, load_settings
from st_pipeline.tenants import validation
from st_pipeline.tenants.crypto import SecretKeyError
from st_pipeline.tenants.registry import Change


@main.group()
def tenant() -> None:
    """Register, inspect, change and remove ServiceTitan tenants."""


def _read_secret(client_secret_env: str | None) -> SecretStr:
    if client_secret_env:
        value = os.environ.get(client_secret_env)
        if not value:
            raise click.UsageError(f"environment variable {client_secret_env} is not set or empty")
        return validation.client_secret(value)
    if sys.stdin.isatty():
        value = click.prompt("Client secret", hide_input=True)
    else:
        value = sys.stdin.readline()
    if not value.strip():
        raise click.UsageError("no client secret given: pipe it on standard input or use --client-secret-env VAR")
    return validation.client_secret(value)


_secret_env_option = click.option(
    "--client-secret-env",
    metavar="VAR",
    help="Read the client secret from this environment variable instead of standard input.",
)


@tenant.command("add")
@tenant_option()
@click.option("--name", required=True, help="A name to recognise the tenant by.")
@click.option("--client-id", required=True, help="The tenant's API client id (cid.…).")
@_secret_env_option
@click.option(
    "--time-zone",
    metavar="ZONE",
    help="The IANA time zone of the tenant's ServiceTitan calendar, like America/Los_Angeles (default: not set, "
    "days are UTC; `tenant set-time-zone` sets it later).",
)
def tenant_add(tenant_id: int, name: str, client_id: str, client_secret_env: str | None, time_zone: str | None) -> None:
    """Verify a new tenant's credentials, store them encrypted and add its Dagster partition."""
    from st_pipeline.tenants.onboarding import add_tenant

    settings = load_settings()
    name, client_id = validation.tenant_name(name), validation.client_id(client_id)
    time_zone = validation.validate_time_zone(time_zone) if time_zone is not None else None
    with open_registry(settings) as registry:
        registry.ensure_absent(tenant_id)
        registry.require_keys()
        secret = _read_secret(client_secret_env)
        try:
            stored = add_tenant(
                registry,
                settings.api(),
                tenant_id=tenant_id,
                name=name,
                client_id=client_id,
                client_secret=secret,
                change=Change("tenant add"),
                time_zone=time_zone,
            )
        except ServiceTitanError as exc:
            raise click.ClickException(f"{exc}; nothing was stored") from None
    click.echo(f"tenant {stored.tenant_id} ({validation.printable(stored.name)}) verified and stored.")
    if stored.time_zone is None:
        click.echo(
            f"note: no time zone given, so its days are UTC; set its own with {set_time_zone_hint(stored.tenant_id)}.",
            err=True,
        )
    else:
        click.echo(f"time zone {stored.time_zone}: its marts count days in it.")
    _partition(settings, stored.tenant_id, add=True)


@tenant.command("update-credentials")
@tenant_option()
@click.option("--client-id", help="A new client id (default: keep the current one).")
@_secret_env_option
def tenant_update_credentials(tenant_id: int, client_id: str | None, client_secret_env: str | None) -> None:
    """Verify new credentials of a registered tenant, then store them (a paused tenant resumes)."""
    from st_pipeline.tenants.onboarding import update_credentials

    settings = load_settings()
    client_id = validation.client_id(client_id) if client_id is not None else None
    with open_registry(settings) as registry:
        registry.get(tenant_id)
        registry.require_keys()
        secret = _read_secret(client_secret_env)
        try:
            stored = update_credentials(
                registry,
                settings.api(),
                tenant_id=tenant_id,
                client_secret=secret,
                client_id=client_id,
                change=Change("tenant update-credentials"),
            )
        except ServiceTitanError as exc:
            raise click.ClickException(f"{exc}; the stored credentials are unchanged") from None
    click.echo(f"tenant {stored.tenant_id}: new credentials verified and stored (client id {stored.client_id}).")


@tenant.command("set-time-zone")
@tenant_option()
@click.argument("zone", metavar="[ZONE]", required=False)
@click.option("--unset", is_flag=True, help="Forget the tenant's time zone instead: its days are UTC again.")
def tenant_set_time_zone(tenant_id: int, zone: str | None, unset: bool) -> None:
    """Set the IANA time zone of a tenant's ServiceTitan calendar (ZONE, like America/Los_Angeles), or --unset it.

    Its marts count days, weeks and months (and receivables' age) in this zone; its next model build
    rebuilds them. Hub timestamps stay UTC.
    """
    if unset and zone is not None:
        raise click.UsageError(f"give ZONE ({validation.printable(zone)}) or --unset, not both")
    if not unset and zone is None:
        raise click.UsageError("give ZONE (an IANA name such as America/Los_Angeles), or --unset to forget it")
    time_zone = validation.validate_time_zone(zone) if zone is not None else None
    settings = load_settings()
    with open_registry(settings) as registry:
        before = registry.get(tenant_id)
        after = registry.set_time_zone(tenant_id, time_zone, change=Change("tenant set-time-zone"))
    who = f"tenant {after.tenant_id} ({validation.printable(after.name)})"
    if before.time_zone == after.time_zone:
        click.echo(f"{who}: time zone already {time_zone_cell(after.time_zone)}; nothing changed.")
        return
    was = f"was {before.time_zone}" if before.time_zone is not None else "was not set"
    if after.time_zone is None:
        click.echo(f"{who}: time zone unset ({was}); its days are UTC. Its next model build rebuilds its marts in UTC.")
    else:
        click.echo(
            f"{who}: time zone {after.time_zone} ({was}). Its next model build rebuilds its marts in the new zone; "
            "hub timestamps stay UTC."
        )


@tenant.command("time-zones")
@click.argument("text", required=False)
def tenant_time_zones(text: str | None) -> None:
    """List the IANA time zone names `set-time-zone` accepts (only those containing TEXT, if given)."""
    names = validation.time_zone_names()
    if text:
        names = [name for name in names if text.casefold() in name.casefold()]
        if not names:
            raise click.ClickException(
                f"no IANA time zone name contains {validation.printable(text)!r}; search for a city "
                "(Los_Angeles, Berlin) or a region (America, Europe)"
            )
    click.echo("\n".join(names))


@tenant.command("list")
def tenant_list() -> None:
    """List registered tenants (never their secrets)."""
    settings = load_settings()
    with open_registry(settings) as registry:
        tenants = registry.list()
        rejected = registry.needing_credentials()
    if not tenants:
        click.echo(no_tenants_message(settings))
        return
    zone_width = max(len("time zone"), *(len(time_zone_cell(t.time_zone)) for t in tenants))
    click.echo(f"{'tenant id':>19}  {'state':18}  {'client id':30}  {'time zone':{zone_width}}  name")
    for t in tenants:
        state = "needs credentials" if t.tenant_id in rejected else ("enabled" if t.enabled else "disabled")
        click.echo(
            f"{t.tenant_id:>19}  {state:18}  {validation.printable(t.client_id):30}  "
            f"{time_zone_cell(t.time_zone):{zone_width}}  {validation.printable(t.name)}"
        )


@tenant.command("show")
@tenant_option()
def tenant_show(tenant_id: int) -> None:
    """One tenant: client id, state, time zone, encryption key, endpoint flags, declared reports, partition,
    latest changes."""
    from st_pipeline.cli.declared_reports import describe
    from st_pipeline.tenants.endpoint_selection import EndpointSelection

    settings = load_settings()
    with open_registry(settings) as registry:
        t = registry.get(tenant_id)
        rejected = registry.needing_credentials().get(tenant_id)
        try:
            key = registry.secret_key_id(tenant_id) or "none of the configured keys decrypts it"
        except SecretKeyError as exc:
            key = f"unknown ({exc})"
        flags = [
            f
            for f in EndpointSelection(registry.engine, settings.disabled_endpoints).flags()
            if f.tenant_id == tenant_id
        ]
        declared = registry.reports(tenant_id)
        history = registry.history(tenant_id, limit=5)
    rows = [
        ("name", validation.printable(t.name)),
        ("client id", validation.printable(t.client_id)),
        ("enabled", "yes" if t.enabled else "no (schedules skip it)"),
        (
            "time zone",
            t.time_zone or f"not set — days are UTC; set it with {set_time_zone_hint(t.tenant_id)}",
        ),
        ("credentials", f"rejected by ServiceTitan: {rejected}" if rejected else "not rejected"),
        ("secret key id", key),
        ("registered", f"{t.created_at:%Y-%m-%d %H:%M} UTC, updated {t.updated_at:%Y-%m-%d %H:%M} UTC"),
        (
            "endpoint flags",
            "; ".join(
                f"{f.target} {'enabled' if f.enabled else 'disabled'}" + (f" ({f.reason})" if f.reason else "")
                for f in flags
            )
            or "none",
        ),
        (
            "reports",
            "; ".join(f"{d.name} ({describe(d)})" for d in declared)
            or f"none declared; declare one with `st-pipeline report add --tenant {tenant_id} …`",
        ),
        ("partition", _partition_state(settings, tenant_id)),
    ]
    click.echo(f"tenant {t.tenant_id}")
    for label, value in rows:
        click.echo(f"  {label:15} {value}")
    click.echo("  latest changes:")
    for entry in history:
        click.echo(f"    {entry.at:%Y-%m-%d %H:%M:%S}  {entry.command:26} {entry.actor:16} {entry.detail}")


@tenant.command("test")
@tenant_option()
def tenant_test(tenant_id: int) -> None:
    """Fetch a token, read one page, and probe one endpoint per scope: report what is not granted."""
    from st_pipeline.servicetitan.catalogue import load_catalogue
    from st_pipeline.tenants.endpoint_selection import EndpointSelection
    from st_pipeline.tenants.onboarding import probe_tenant

    settings = load_settings()
    with open_registry(settings) as registry:
        credentials = registry.credentials(tenant_id)
        datasets = load_catalogue().extracted_datasets()
        decisions = EndpointSelection(registry.engine, settings.disabled_endpoints).decide(datasets, tenant_id)
    enabled = [d for d in datasets if decisions[d.key].enabled]
    report = probe_tenant(settings.api(), credentials, enabled)
    click.echo(
        f"tenant {tenant_id}: token issued; tenant id confirmed; {report.scopes_probed} scope sets probed "
        f"for {len(enabled)} enabled datasets."
    )
    for scope, keys_ in sorted(report.denied.items()):
        click.echo(f"  scope {scope} not granted: {', '.join(sorted(set(keys_)))}")
    if report.not_found:
        click.echo(f"  not available to this tenant (404): {', '.join(sorted(report.not_found))}")
    for key, error in sorted(report.errors.items()):
        click.echo(f"  {key}: {error}")
    if report.all_granted:
        click.echo("  every probed scope is granted.")
    else:
        click.echo(
            "  syncs skip these datasets; ask the tenant's admin for the scopes, or turn them off with "
            f"`st-pipeline endpoints disable TARGET --tenant {tenant_id}`."
        )


@tenant.command("disable")
@tenant_option()
@click.option("--reason", help="Why, kept in the audit trail.")
def tenant_disable(tenant_id: int, reason: str | None) -> None:
    """Stop syncing a tenant; its data, partition and credentials stay."""
    settings = load_settings()
    with open_registry(settings) as registry:
        registry.set_enabled(tenant_id, False, change=Change("tenant disable"), reason=reason)
    click.echo(
        f"tenant {tenant_id} disabled: schedules skip it; `st-pipeline tenant enable --tenant {tenant_id}` resumes."
    )


@tenant.command("enable")
@tenant_option()
def tenant_enable(tenant_id: int) -> None:
    """Sync a disabled tenant again."""
    settings = load_settings()
    with open_registry(settings) as registry:
        registry.set_enabled(tenant_id, True, change=Change("tenant enable"))
    click.echo(f"tenant {tenant_id} enabled.")


@tenant.command("remove")
@tenant_option()
@click.option("--purge-data", is_flag=True, help="Also delete every warehouse row of the tenant.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation of --purge-data.")
def tenant_remove(tenant_id: int, purge_data: bool, yes: bool) -> None:
    """Remove a tenant's credentials and partition; its warehouse data stays unless --purge-data."""
    from st_pipeline.warehouse.tables import purge_tenant

    settings = load_settings()
    with open_registry(settings) as registry:
        t = registry.get(tenant_id)
        note = ""
        if purge_data:
            if not yes:
                if not sys.stdin.isatty():
                    raise click.UsageError(
                        f"--purge-data deletes every warehouse row of tenant {tenant_id} and cannot be undone: "
                        "confirm in a terminal or add --yes"
                    )
                click.confirm(
                    f"Delete every warehouse row of tenant {tenant_id} ({validation.printable(t.name)})? "
                    "This cannot be undone",
                    abort=True,
                )
            with open_warehouse(settings) as engine:
                deleted = purge_tenant(engine, tenant_id)
            note = f"; {sum(deleted.values())} warehouse rows deleted from {len(deleted)} tables"
        registry.remove(tenant_id, change=Change("tenant remove" + (" --purge-data" if purge_data else "")), note=note)
    click.echo(f"tenant {tenant_id} ({validation.printable(t.name)}) removed{note or '; its warehouse data stays'}.")
    _partition(settings, tenant_id, add=False)


@tenant.command("history")
@tenant_option(required=False, help="Only this tenant (default: every change).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def tenant_history(tenant_id: int | None, limit: int) -> None:
    """The audit trail: credential, lifecycle, flag and key changes, newest first."""
    settings = load_settings()
    with open_registry(settings) as registry:
        entries = registry.history(tenant_id, limit=limit)
    if not entries:
        click.echo("no changes recorded")
        return
    click.echo(f"{'when (UTC)':19}  {'tenant':>19}  {'command':26} {'by':16} what")
    for entry in entries:
        who = "" if entry.tenant_id is None else str(entry.tenant_id)
        click.echo(f"{entry.at:%Y-%m-%d %H:%M:%S}  {who:>19}  {entry.command:26} {entry.actor:16} {entry.detail}")


@tenant.command("reset-cursor")
@tenant_option()
@click.option("--dataset", "datasets", multiple=True, help="Only this dataset (repeatable); default: all.")
def tenant_reset_cursor(tenant_id: int, datasets: tuple[str, ...]) -> None:
    """Forget saved cursors: the next sync of the tenant reads these datasets from the beginning."""
    from st_pipeline.sync.state import reset_cursors
    from st_pipeline.tenants.registry import write_audit

    settings = load_settings()
    with open_warehouse(settings) as engine:
        removed = reset_cursors(engine, tenant_id, datasets or None)
    with open_registry(settings) as registry, registry.engine.begin() as conn:
        write_audit(
            conn,
            Change("tenant reset-cursor"),
            tenant_id,
            f"{removed} cursor(s) reset: {', '.join(datasets) or 'all datasets'}",
        )
    click.echo(f"{removed} cursor(s) of tenant {tenant_id} reset; the next sync reads them in full.")


def _dagster_instance(settings: Settings) -> Any:
    """The Dagster instance of ``DAGSTER_HOME`` (or the home's own, in local mode: see settings)."""
    import dagster as dg

    assert settings.dagster_home is not None
    return dg.DagsterInstance.from_config(str(settings.dagster_home))


def _partition(settings: Settings, tenant_id: int, *, add: bool) -> None:
    if settings.dagster_home is None:
        click.echo(
            f"note: DAGSTER_HOME is not set, so no Dagster partition was {'added' if add else 'removed'}; "
            f"the onboarding sensor {'adds' if add else 'removes'} it, or set DAGSTER_HOME and run this again.",
            err=True,
        )
        return
    from st_pipeline.defs.partitions import add_tenant_partition, remove_tenant_partition

    with _dagster_instance(settings) as instance:
        if add:
            changed = add_tenant_partition(instance, tenant_id)
            click.echo(f"Dagster partition {tenant_id} {'added' if changed else 'already present'}.")
        else:
            changed = remove_tenant_partition(instance, tenant_id)
            click.echo(f"Dagster partition {tenant_id} {'removed' if changed else 'was not present'}.")


def _partition_state(settings: Settings, tenant_id: int) -> str:
    if settings.dagster_home is None:
        return "unknown (DAGSTER_HOME is not set)"
    from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME

    with _dagster_instance(settings) as instance:
        present = instance.has_dynamic_partition(TENANT_PARTITIONS_NAME, str(tenant_id))
    return "present" if present else "missing (the onboarding sensor adds it for an enabled tenant)"
