"""``st-pipeline endpoints``: the catalogue, and turning modules and datasets off and on."""

from __future__ import annotations

import click

from st_pipeline.cli.app import main, open_registry, tenant_option
from st_pipeline.settings import load_settings
from st_pipeline.tenants.registry import Change


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
    with open_registry(settings) as registry:
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
    with open_registry(settings) as registry:
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
