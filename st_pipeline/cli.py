"""The ``st-pipeline`` command: tenants, the simulator, the demo."""

from __future__ import annotations

import os
import sys

import click
from pydantic import SecretStr

from st_pipeline.servicetitan.errors import ServiceTitanError
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.tenants.crypto import SecretBox, SecretKeyError, generate_key
from st_pipeline.tenants.onboarding import add_tenant
from st_pipeline.tenants.registry import TenantRegistry


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
def main() -> None:
    """ServiceTitan → warehouse pipelines for many tenants (Dagster)."""


@main.command("secret-key")
def secret_key() -> None:
    """Print a new encryption key for ST_PIPELINE_SECRET_KEYS."""
    click.echo(generate_key())


@main.group()
def tenant() -> None:
    """Register and list ServiceTitan tenants."""


def _read_secret(client_secret_env: str | None) -> SecretStr:
    if client_secret_env:
        value = os.environ.get(client_secret_env)
        if not value:
            _fail(f"environment variable {client_secret_env} is not set or empty")
        return SecretStr(value or "")
    if sys.stdin.isatty():
        value = click.prompt("Client secret", hide_input=True)
    else:
        value = sys.stdin.readline()
    value = value.strip()
    if not value:
        _fail("no client secret given: pipe it on standard input or use --client-secret-env VAR")
    return SecretStr(value)


@tenant.command("add")
@click.option("--tenant-id", type=int, required=True, help="ServiceTitan tenant id (a number).")
@click.option("--name", required=True, help="A name to recognise the tenant by.")
@click.option("--client-id", required=True, help="The tenant's API client id (cid.…).")
@click.option(
    "--client-secret-env",
    metavar="VAR",
    help="Read the client secret from this environment variable instead of standard input.",
)
def tenant_add(tenant_id: int, name: str, client_id: str, client_secret_env: str | None) -> None:
    """Verify a tenant's credentials, store them encrypted and add its Dagster partition."""
    secret = _read_secret(client_secret_env)
    try:
        registry = TenantRegistry.from_url(secret_box=SecretBox.from_env())
        settings = ApiSettings.resolve()
        stored = add_tenant(
            registry, settings, tenant_id=tenant_id, name=name, client_id=client_id, client_secret=secret
        )
    except (ServiceTitanError, SecretKeyError) as exc:
        _fail(f"{exc}\nnothing was stored.")
        return
    click.echo(f"tenant {stored.tenant_id} ({stored.name}) verified and stored.")
    _add_partition(stored.tenant_id)


def _add_partition(tenant_id: int) -> None:
    if not os.environ.get("DAGSTER_HOME"):
        click.echo(
            "note: DAGSTER_HOME is not set, so no Dagster partition was added; set it to your "
            "Dagster instance directory and run this command again.",
            err=True,
        )
        return
    import dagster as dg

    from st_pipeline.defs.partitions import add_tenant_partition

    with dg.DagsterInstance.get() as instance:
        added = add_tenant_partition(instance, tenant_id)
    click.echo(f"Dagster partition {tenant_id} {'added' if added else 'already present'}.")


@tenant.command("reset-cursor")
@click.option("--tenant-id", type=int, required=True)
@click.option("--dataset", "datasets", multiple=True, help="Only this dataset (repeatable); default: all.")
def tenant_reset_cursor(tenant_id: int, datasets: tuple[str, ...]) -> None:
    """Forget saved cursors: the next sync of the tenant reads these datasets from the beginning."""
    from st_pipeline.sync.state import reset_cursors
    from st_pipeline.warehouse.engine import create_warehouse_engine

    removed = reset_cursors(create_warehouse_engine(), tenant_id, datasets or None)
    click.echo(f"{removed} cursor(s) of tenant {tenant_id} reset; the next sync reads them in full.")


@tenant.command("list")
def tenant_list() -> None:
    """List registered tenants (never their secrets)."""
    registry = TenantRegistry.from_url()
    tenants = registry.list()
    if not tenants:
        click.echo("no tenants registered; add one with `st-pipeline tenant add`")
        return
    click.echo(f"{'tenant id':>12}  {'enabled':7}  {'client id':30}  name")
    for t in tenants:
        click.echo(f"{t.tenant_id:>12}  {'yes' if t.enabled else 'no':7}  {t.client_id:30}  {t.name}")


@main.group()
def db() -> None:
    """The warehouse schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the warehouse (ST_PIPELINE_WAREHOUSE_URL) to the schema this version needs."""
    from st_pipeline.warehouse.engine import create_warehouse_engine, describe_url
    from st_pipeline.warehouse.schema import current_revision, upgrade

    engine = create_warehouse_engine()
    before = current_revision(engine)
    upgrade(engine)
    click.echo(f"warehouse {describe_url(engine)}: schema {before or 'empty'} → {current_revision(engine)}")


@main.command("sync-log")
@click.option("--tenant", "tenant_id", type=int, required=True)
@click.option("--limit", default=30, show_default=True)
def sync_log(tenant_id: int, limit: int) -> None:
    """What the latest syncs of a tenant did, newest first."""
    from st_pipeline.sync.state import read_log
    from st_pipeline.warehouse.engine import create_warehouse_engine

    rows = read_log(create_warehouse_engine(), tenant_id, limit=limit)
    if not rows:
        click.echo(f"no syncs logged for tenant {tenant_id}")
        return
    click.echo(f"{'started (UTC)':19}  {'dataset':40} {'status':11} {'records':>8} {'pages':>5} {'requests':>8} {'retries':>7} {'429s':>4}  cursor after / error")
    for row in rows:
        tail = row.error or row.cursor_after or ""
        click.echo(
            f"{row.started_at:%Y-%m-%d %H:%M:%S}  {row.dataset:40} {row.status:11} {row.records:>8} {row.pages:>5} "
            f"{row.requests:>8} {row.retries:>7} {row.throttled:>4}  {tail[:60]}"
        )


@main.group("endpoints", invoke_without_command=True)
@click.option("--tenant", "tenant_id", type=int, help="Show what is enabled for this tenant.")
@click.option("--module", help="Only this module.")
@click.pass_context
def endpoints(ctx: click.Context, tenant_id: int | None, module: str | None) -> None:
    """The endpoint catalogue: what is extracted, how, and whether it is enabled."""
    if ctx.invoked_subcommand is not None:
        return
    from st_pipeline.servicetitan.catalogue import load_catalogue
    from st_pipeline.tenants.endpoint_selection import EndpointSelection

    catalogue = load_catalogue()
    datasets = [d for d in catalogue.datasets.values() if module in (None, d.module)]
    selection = EndpointSelection(TenantRegistry.from_url().engine)
    decisions = selection.decide(datasets, tenant_id)
    click.echo(f"{'module':22} {'dataset':48} {'kind':7} {'cursor':20} enabled")
    for dataset in datasets:
        endpoint = dataset.extraction_endpoint
        decision = decisions[dataset.key]
        state = "yes" if decision.enabled else f"no — {decision.why}"
        click.echo(f"{dataset.module:22} {dataset.resource:48} {endpoint.kind:7} {endpoint.cursor_kind:20} {state}")
    extracted = catalogue.extracted_datasets()
    kinds = {kind: sum(d.extraction_endpoint.kind == kind for d in extracted) for kind in ("export", "list", "lookup")}
    enabled = sum(decisions[d.key].enabled for d in datasets)
    click.echo(
        f"\ncoverage: {len(extracted)} of {len(catalogue.datasets)} datasets extracted "
        f"({kinds['export']} export feeds, {kinds['list']} paged lists, {kinds['lookup']} lookups); "
        f"{len(catalogue.datasets) - len(extracted)} excluded with a reason; "
        f"{len(catalogue.per_parent_endpoints)} per-parent endpoints (notes, contacts of one record, …) not covered"
    )
    if tenant_id is not None or module is not None:
        click.echo(f"enabled here: {enabled} of {len(datasets)} shown")


def _set_flag(target: str, tenant_id: int | None, enabled: bool, reason: str | None) -> None:
    from st_pipeline.tenants.endpoint_selection import EndpointSelection, UnknownTargetError

    try:
        EndpointSelection(TenantRegistry.from_url().engine).set(
            target, enabled=enabled, tenant_id=tenant_id, reason=reason
        )
    except UnknownTargetError as exc:
        _fail(str(exc))
    who = f"tenant {tenant_id}" if tenant_id else "every tenant"
    click.echo(f"{target} {'enabled' if enabled else 'disabled'} for {who}.")


@endpoints.command("disable")
@click.argument("target")
@click.option("--tenant", "tenant_id", type=int, help="Only for this tenant (default: every tenant).")
@click.option("--reason", help="Why, shown by `st-pipeline endpoints`.")
def endpoints_disable(target: str, tenant_id: int | None, reason: str | None) -> None:
    """Stop extracting TARGET (a module like `payroll` or a dataset like `crm/leads`)."""
    _set_flag(target, tenant_id, False, reason)


@endpoints.command("enable")
@click.argument("target")
@click.option("--tenant", "tenant_id", type=int, help="Only for this tenant (default: every tenant).")
def endpoints_enable(target: str, tenant_id: int | None) -> None:
    """Extract TARGET again (overrides a broader disable)."""
    _set_flag(target, tenant_id, True, None)


@main.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same data.")
@click.option("--scale", default=1.0, show_default=True, type=float, help="Volume multiplier (1.0 ≈ 10k records).")
@click.option("--tenant", "tenant_ids", multiple=True, type=int, default=(1001,), show_default=True)
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


if __name__ == "__main__":
    main()
