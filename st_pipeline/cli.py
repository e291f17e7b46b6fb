"""The ``st-pipeline`` command: tenants and their keys, warehouse schema and access, the catalogue,
the simulator and the demo.

Every error is one line on standard error saying what went wrong and what to do, with a non-zero
exit status; never a traceback (``st-pipeline --traceback …`` shows one for a bug report) and
never a secret. Every command that changes a tenant writes an audit entry (``tenant history``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import SecretStr

from st_pipeline.database import DatabaseError, open_engine
from st_pipeline.redaction import redact
from st_pipeline.servicetitan.errors import ServiceTitanError
from st_pipeline.settings import Settings, SettingsError, load_settings
from st_pipeline.tenants import validation
from st_pipeline.tenants.crypto import SecretKeyError, generate_key, key_id
from st_pipeline.tenants.registry import Change, TenantExistsError, TenantRegistry, UnknownTenantError

# Errors a user can act on: printed as they are, one line.
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    SettingsError,
    SecretKeyError,
    ServiceTitanError,
    DatabaseError,
    UnknownTenantError,
    TenantExistsError,
    validation.InvalidTenantInput,
)


class _Cli(click.Group):
    """A click group whose errors are one line each (see the module docstring)."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            code = _error("aborted; nothing was changed")
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            code = _error(exc.format_message() + where, exc.exit_code)
        except click.ClickException as exc:
            code = _error(exc.format_message(), exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, redacted
            if "--traceback" in argv:
                raise
            message = (
                str(exc)
                if isinstance(exc, _EXPECTED_ERRORS + _more_expected_errors())
                else (f"unexpected {type(exc).__name__}: {exc} (run with --traceback for details)")
            )
            code = _error(message)
        sys.exit(code if isinstance(code, int) else 0)


def _more_expected_errors() -> tuple[type[BaseException], ...]:
    """Expected errors of the heavier modules, imported only when an error needs classifying."""
    from st_pipeline.tenants.endpoint_selection import UnknownTargetError
    from st_pipeline.warehouse.access import AccessError
    from st_pipeline.warehouse.schema import SchemaOutOfDateError

    return (UnknownTargetError, AccessError, SchemaOutOfDateError)


def _error(message: str, code: int = 1) -> int:
    line = " ".join(redact(message).split())
    click.echo(f"error: {line}", err=True)
    return code


class _TenantId(click.ParamType):
    name = "TENANT_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return validation.tenant_id(value)
        except validation.InvalidTenantInput as exc:
            self.fail(str(exc), param, ctx)


def tenant_option(required: bool = True, help: str = "ServiceTitan tenant id.") -> Any:  # noqa: A002
    """``--tenant ID``: the one name of the tenant option in every command."""
    return click.option("--tenant", "tenant_id", type=_TenantId(), required=required, help=help)


@contextmanager
def _registry(settings: Settings) -> Iterator[TenantRegistry]:
    registry = TenantRegistry.open(settings)
    try:
        yield registry
    finally:
        registry.close()


@contextmanager
def _warehouse(settings: Settings) -> Iterator[Any]:
    """The warehouse engine, its schema created if the database is empty (as a run would) or
    refused with what to do if it is behind or ahead of this version."""
    from st_pipeline.warehouse.engine import create_warehouse_engine, describe_url
    from st_pipeline.warehouse.schema import ensure_schema

    engine = create_warehouse_engine(settings.warehouse_database_url)
    try:
        ensure_schema(engine, where=describe_url(engine))
        yield engine
    finally:
        engine.dispose()


@click.group(cls=_Cli)
@click.option("--traceback", is_flag=True, help="Show the full traceback of an unexpected error.")
def main(traceback: bool) -> None:
    """ServiceTitan → warehouse pipelines for many tenants (Dagster)."""


# -- keys ----------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Encryption keys of the stored client secrets."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new encryption key (its id goes to standard error)."""
    key = generate_key()
    click.echo(key)
    click.echo(
        f"key id {key_id(key)}: put it first in ST_PIPELINE_SECRET_KEYS (or its file), keep the old keys after it, "
        "then run `st-pipeline keys rotate`",
        err=True,
    )


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored client secret under the first key, in one transaction."""
    settings = load_settings()
    with _registry(settings) as registry:
        report = registry.rotate_keys(change=Change("keys rotate"))
    click.echo(f"{report.rotated} client secret(s) re-encrypted under key {report.key_id}.")
    retired = sorted(k for k in registry.secret_box.key_ids if k != report.key_id)
    if retired:
        click.echo(f"No stored secret needs key(s) {', '.join(retired)} any more: remove them from the configuration.")


# -- tenants -------------------------------------------------------------------------------------


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
def tenant_add(tenant_id: int, name: str, client_id: str, client_secret_env: str | None) -> None:
    """Verify a new tenant's credentials, store them encrypted and add its Dagster partition."""
    from st_pipeline.tenants.onboarding import add_tenant

    settings = load_settings()
    name, client_id = validation.tenant_name(name), validation.client_id(client_id)
    with _registry(settings) as registry:
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
            )
        except ServiceTitanError as exc:
            raise click.ClickException(f"{exc}; nothing was stored") from None
    click.echo(f"tenant {stored.tenant_id} ({validation.printable(stored.name)}) verified and stored.")
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
    with _registry(settings) as registry:
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


@tenant.command("list")
def tenant_list() -> None:
    """List registered tenants (never their secrets)."""
    settings = load_settings()
    with _registry(settings) as registry:
        tenants = registry.list()
        rejected = registry.needing_credentials()
    if not tenants:
        click.echo(_no_tenants(settings))
        return
    click.echo(f"{'tenant id':>19}  {'state':18}  {'client id':30}  name")
    for t in tenants:
        state = "needs credentials" if t.tenant_id in rejected else ("enabled" if t.enabled else "disabled")
        click.echo(
            f"{t.tenant_id:>19}  {state:18}  {validation.printable(t.client_id):30}  {validation.printable(t.name)}"
        )


@tenant.command("show")
@tenant_option()
def tenant_show(tenant_id: int) -> None:
    """One tenant: client id, state, encryption key, endpoint flags, partition, latest changes."""
    from st_pipeline.tenants.endpoint_selection import EndpointSelection

    settings = load_settings()
    with _registry(settings) as registry:
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
        history = registry.history(tenant_id, limit=5)
    rows = [
        ("name", validation.printable(t.name)),
        ("client id", validation.printable(t.client_id)),
        ("enabled", "yes" if t.enabled else "no (schedules skip it)"),
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
    with _registry(settings) as registry:
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
    with _registry(settings) as registry:
        registry.set_enabled(tenant_id, False, change=Change("tenant disable"), reason=reason)
    click.echo(
        f"tenant {tenant_id} disabled: schedules skip it; `st-pipeline tenant enable --tenant {tenant_id}` resumes."
    )


@tenant.command("enable")
@tenant_option()
def tenant_enable(tenant_id: int) -> None:
    """Sync a disabled tenant again."""
    settings = load_settings()
    with _registry(settings) as registry:
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
    with _registry(settings) as registry:
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
            with _warehouse(settings) as engine:
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
    with _registry(settings) as registry:
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
    with _warehouse(settings) as engine:
        removed = reset_cursors(engine, tenant_id, datasets or None)
    with _registry(settings) as registry, registry.engine.begin() as conn:
        write_audit(
            conn,
            Change("tenant reset-cursor"),
            tenant_id,
            f"{removed} cursor(s) reset: {', '.join(datasets) or 'all datasets'}",
        )
    click.echo(f"{removed} cursor(s) of tenant {tenant_id} reset; the next sync reads them in full.")


def _no_tenants(settings: Settings) -> str:
    """Say where the registry looked, so state kept elsewhere (another home, a database) is found."""
    where = (
        f"in {settings.home} (ST_PIPELINE_HOME; unset, the project's .st_pipeline or else ~/.st_pipeline)"
        if settings.local_mode
        else "in the registry database (ST_PIPELINE_REGISTRY_URL)"
    )
    return f"no tenants registered {where}; add one with `st-pipeline tenant add`"


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


# -- warehouse -----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The schemas of the warehouse and the registry."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the warehouse and the registry to the schemas this version needs.

    An empty database is also created by its first use; one that is behind is upgraded only here.
    A registry made before it had migrations is verified and adopted.
    """
    from st_pipeline.tenants.registry import REGISTRY_VARIABLE
    from st_pipeline.tenants.schema import upgrade_registry
    from st_pipeline.warehouse.engine import WAREHOUSE_VARIABLE, describe_url
    from st_pipeline.warehouse.schema import upgrade

    settings = load_settings()
    for label, url, variable, apply in (
        ("warehouse", settings.warehouse_database_url, WAREHOUSE_VARIABLE, upgrade),
        ("registry", settings.registry_database_url, REGISTRY_VARIABLE, upgrade_registry),
    ):
        engine = open_engine(url, variable=variable)
        try:
            done = apply(engine)
            click.echo(f"{label} {describe_url(engine)}: schema {done.describe()}")
        finally:
            engine.dispose()


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
    with _warehouse(settings) as engine:
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
    with _warehouse(settings) as engine:
        result = action(engine)
    with _registry(settings) as registry, registry.engine.begin() as conn:
        write_audit(conn, Change(command), tenant_id, detail)
    return result


@main.command("sync-log")
@tenant_option()
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, 1000), help="How many of the latest runs.")
@click.option("--run", "run_id", help="One run, by its Dagster run id.")
@click.option("--all", "show_all", is_flag=True, help="Also list the datasets where nothing changed.")
def sync_log(tenant_id: int, runs: int, run_id: str | None, show_all: bool) -> None:
    """What the latest sync of a tenant did: per-run totals, then its datasets (changed, failed, skipped)."""
    from st_pipeline.sync.state import SUCCEEDED, read_log

    with _warehouse(load_settings()) as engine:
        rows = read_log(engine, tenant_id, runs=runs, run_id=run_id)
    if not rows:
        click.echo(f"no syncs logged for tenant {tenant_id}" + (f" in run {run_id}" if run_id else ""))
        return
    by_run: dict[str, list[Any]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
    for number, (run, run_rows) in enumerate(by_run.items()):
        if number:
            click.echo("")
        statuses: dict[str, int] = {}
        for row in run_rows:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        began = min(row.started_at for row in run_rows)
        ended = max((row.ended_at for row in run_rows if row.ended_at), default=None)
        took = f", {(ended - began).total_seconds():.1f} s" if ended else ", still running"
        total = {
            name: sum(getattr(row, name) for row in run_rows)
            for name in ("records", "rows_written", "requests", "retries", "throttled")
        }
        click.echo(
            f"run {run} — {began:%Y-%m-%d %H:%M:%S} UTC{took}; {len(run_rows)} datasets: "
            + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
            + f"; {total['records']} records, {total['rows_written']} rows written, {total['requests']} requests, "
            f"{total['retries']} retries, {total['throttled']} 429s"
        )
        shown = [row for row in run_rows if show_all or row.status != SUCCEEDED or row.rows_written or row.quarantined]
        if shown:
            click.echo(
                f"  {'dataset':44} {'status':11} {'records':>8} {'written':>8} {'requests':>8} "
                f"{'retries':>7} {'429s':>4} {'seconds':>7}  cursor after / error"
            )
        for row in sorted(shown, key=lambda r: r.dataset):
            tail = row.error or row.cursor_after or ""
            seconds = f"{row.duration_s:.2f}" if row.duration_s is not None else "-"
            click.echo(
                f"  {row.dataset:44} {row.status:11} {row.records:>8} {row.rows_written:>8} {row.requests:>8} "
                f"{row.retries:>7} {row.throttled:>4} {seconds:>7}  {tail[:70]}"
            )
        if len(shown) < len(run_rows):
            click.echo(f"  {len(run_rows) - len(shown)} datasets succeeded without changes (--all lists them)")


@main.command("kpis")
@tenant_option()
def kpis(tenant_id: int) -> None:
    """A tenant's headline KPI figures, from the marts its last run built."""
    import sqlalchemy as sa

    from st_pipeline.transform.kpis import headline_kpis

    with _warehouse(load_settings()) as engine:
        if "mart_job_conversion" not in sa.inspect(engine).get_table_names():
            raise click.ClickException("no marts built yet: run the servicetitan_sync job for the tenant first")
        with engine.connect() as conn:
            figures = headline_kpis(conn, tenant_id)
    for label, value in figures.items():
        click.echo(f"{label:34} {value}")


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects (ISO timestamps), for scripts.")
def status(as_json: bool) -> None:
    """The fleet on one screen: per tenant, its state, last success, staleness, failures, open incidents."""
    import json

    from st_pipeline.sync.fleet import fleet_status

    settings = load_settings()
    with _registry(settings) as registry:
        with _warehouse(settings) as engine:
            rows = fleet_status(registry, engine, settings.freshness_sla)
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    if not rows:
        click.echo(_no_tenants(settings))
        return
    click.echo(
        f"{'tenant id':>19}  {'state':17}  {'last success (UTC)':18}  {'fresh':5}  "
        f"{'failing datasets':34}  {'open incidents':14}  name"
    )
    for row in rows:
        state = "needs credentials" if row.needs_credentials else ("enabled" if row.enabled else "disabled")
        last = f"{row.last_success:%Y-%m-%d %H:%M}" if row.last_success else "never synced"
        failing = _first_few(row.failing_datasets)
        click.echo(
            f"{row.tenant_id:>19}  {state:17}  {last:18}  {'STALE' if row.stale else 'ok':5}  "
            f"{failing:34}  {len(row.open_incidents):<14}  {validation.printable(row.name)}"
        )
    sla = settings.freshness_sla.total_seconds() / 3600
    click.echo(
        f"\n{len(rows)} tenants; {sum(r.stale for r in rows)} stale (SLA {sla:g} h); "
        f"{sum(bool(r.failing_datasets) for r in rows)} with failing datasets; "
        f"{sum(len(r.open_incidents) for r in rows)} open incidents"
    )


def _first_few(keys: list[str], shown: int = 2) -> str:
    if not keys:
        return "-"
    more = f" +{len(keys) - shown}" if len(keys) > shown else ""
    return f"{len(keys)}: " + ", ".join(keys[:shown]) + more


# -- catalogue -----------------------------------------------------------------------------------


@main.group("endpoints", invoke_without_command=True)
@tenant_option(required=False, help="Show what is enabled for this tenant.")
@click.option("--module", help="Only this module.")
@click.pass_context
def endpoints(ctx: click.Context, tenant_id: int | None, module: str | None) -> None:
    """The endpoint catalogue: what is extracted, how, and whether it is enabled."""
    if ctx.invoked_subcommand is not None:
        return
    from st_pipeline.servicetitan.catalogue import load_catalogue
    from st_pipeline.tenants.endpoint_selection import EndpointSelection

    settings = load_settings()
    catalogue = load_catalogue()
    datasets = [d for d in catalogue.datasets.values() if module in (None, d.module)]
    with _registry(settings) as registry:
        decisions = EndpointSelection(registry.engine, settings.disabled_endpoints).decide(datasets, tenant_id)
    click.echo(f"{'module':22} {'dataset':48} {'kind':7} {'cursor':20} enabled")
    for dataset in datasets:
        endpoint = dataset.extraction_endpoint
        decision = decisions[dataset.key]
        state = "yes" if decision.enabled else f"no — {decision.why}"
        click.echo(f"{dataset.module:22} {dataset.resource:48} {endpoint.kind:7} {endpoint.cursor_kind:20} {state}")
    enabled = sum(decisions[d.key].enabled for d in datasets)
    click.echo(f"\ncoverage: {catalogue.coverage().summary()}")
    if tenant_id is not None or module is not None:
        click.echo(f"enabled here: {enabled} of {len(datasets)} shown")


def _set_flag(target: str, tenant_id: int | None, enabled: bool, reason: str | None) -> None:
    from st_pipeline.tenants.endpoint_selection import EndpointSelection

    settings = load_settings()
    command = f"endpoints {'enable' if enabled else 'disable'}"
    with _registry(settings) as registry:
        EndpointSelection(registry.engine, settings.disabled_endpoints).set(
            target, enabled=enabled, tenant_id=tenant_id, reason=reason, change=Change(command)
        )
    who = f"tenant {tenant_id}" if tenant_id is not None else "every tenant"
    click.echo(f"{target} {'enabled' if enabled else 'disabled'} for {who}.")


@endpoints.command("disable")
@click.argument("target")
@tenant_option(required=False, help="Only for this tenant (default: every tenant).")
@click.option("--reason", help="Why, shown by `st-pipeline endpoints`.")
def endpoints_disable(target: str, tenant_id: int | None, reason: str | None) -> None:
    """Stop extracting TARGET (a module like `payroll` or a dataset like `crm/leads`)."""
    _set_flag(target, tenant_id, False, reason)


@endpoints.command("enable")
@click.argument("target")
@tenant_option(required=False, help="Only for this tenant (default: every tenant).")
def endpoints_enable(target: str, tenant_id: int | None) -> None:
    """Extract TARGET again (overrides a broader disable)."""
    _set_flag(target, tenant_id, True, None)


# -- simulator and demo --------------------------------------------------------------------------


@main.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same data.")
@click.option("--scale", default=1.0, show_default=True, type=float, help="Volume multiplier (1.0 ≈ 10k records).")
@click.option("--tenant", "tenant_ids", multiple=True, type=_TenantId(), default=(1001,), show_default=True)
def simulator(host: str, port: int, seed: int, scale: float, tenant_ids: tuple[int, ...]) -> None:
    """Serve a ServiceTitan API simulator on HOST:PORT until interrupted."""
    from st_pipeline.simulator import Simulator, SimulatorConfig

    tenants = [SimulatorConfig.demo_tenant(t, seed=seed) for t in tenant_ids]
    config = SimulatorConfig(tenants=tenants, seed=seed, scale=scale)
    sim = Simulator(config, host=host, port=port).start()
    click.echo(f"ServiceTitan simulator on {sim.url} (token URL {sim.auth_url}), app key {config.app_key}")
    for t in tenants:
        # Simulator-only credentials, derived from the seed; they open nothing real.
        click.echo(f"  tenant {t.tenant_id}: client id {t.client_id}, client secret {t.client_secret}")
    try:
        sim.serve_forever()
    finally:
        sim.stop()


@main.command("demo")
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--scale", default=1.0, show_default=True, type=float)
def demo(port: int, scale: float) -> None:
    """Simulator → tenant → Dagster materialization → warehouse, then compare counts."""
    from st_pipeline.demo import run_demo

    sys.exit(run_demo(port=port, scale=scale))


def run() -> None:
    """The ``st-pipeline`` console command: what it writes (state, Dagster's files) is private."""
    os.umask(0o077)
    main()


if __name__ == "__main__":
    run()
