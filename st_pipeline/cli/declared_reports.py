"""``st-pipeline report``: declare, list, disable, enable and remove the ServiceTitan reports to
extract per tenant (``tenants.reports``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from st_pipeline.cli.app import main, open_registry, tenant_option
from st_pipeline.settings import load_settings
from st_pipeline.tenants import validation
from st_pipeline.tenants.registry import Change
from st_pipeline.tenants.reports import (
    MAX_WINDOW_DAYS,
    InvalidReportDeclaration,
    ReportDeclaration,
    ReportExistsError,
    UnknownReportError,
)


@main.group("report")
def report() -> None:
    """Declare which ServiceTitan reports to extract for a tenant."""


@contextmanager
def _clear_errors(nothing: str) -> Iterator[None]:
    """The registry's refusals as one-line errors, saying that ``nothing`` happened."""
    try:
        yield
    except (InvalidReportDeclaration, ReportExistsError, UnknownReportError) as exc:
        raise click.ClickException(f"{exc}; {nothing}") from None


def _name_option() -> Any:
    return click.option("--name", required=True, help="The report's name in this tenant (`report list` shows them).")


def _parameters(given: tuple[str, ...]) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise click.UsageError(
                f"--param takes NAME=VALUE (like BusinessUnitIds=1,2), got {validation.printable(item)[:70]!r}"
            )
        if name in parameters:
            raise click.UsageError(f"--param {validation.printable(name)[:70]} is given twice; give each once")
        parameters[name] = value
    return parameters


def describe(declaration: ReportDeclaration) -> str:
    """A declaration on one line: category, report id, parameters, window, and whether it is disabled."""
    shown = ", ".join(f"{key}={value}" for key, value in declaration.parameters.items()) or "no parameters"
    days = "1 day" if declaration.window_days == 1 else f"{declaration.window_days} days"
    state = "" if declaration.enabled else ", disabled"
    return (
        f"category {declaration.category}, report {declaration.report_id}, {validation.printable(shown)}, "
        f"window {days}{state}"
    )


@report.command("add")
@tenant_option()
@click.option(
    "--name",
    required=True,
    help="Our name of the report: lowercase letters, digits and underscores, starting with a letter (at most 40); "
    "its table is raw_report_<name>.",
)
@click.option("--category", required=True, help="The report's category id in ServiceTitan (like accounting).")
@click.option("--report", "report_id", required=True, type=int, help="The report's id in ServiceTitan.")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A fixed report parameter (repeatable), like BusinessUnitIds=1,2; From and To come from each run's period.",
)
@click.option(
    "--window-days",
    default=1,
    show_default=True,
    type=int,
    help=f"How many trailing days each scheduled run re-reads (1 to {MAX_WINDOW_DAYS}).",
)
@click.option("--replace", is_flag=True, help="Replace the tenant's declaration of the same name.")
def report_add(
    tenant_id: int,
    name: str,
    category: str,
    report_id: int,
    params: tuple[str, ...],
    window_days: int,
    replace: bool,
) -> None:
    """Declare a ServiceTitan report to extract for a tenant (enabled)."""
    parameters = _parameters(params)
    with open_registry(load_settings()) as registry, _clear_errors("nothing was stored"):
        replaced = replace and any(r.name == name for r in registry.reports(tenant_id))
        declared = registry.declare_report(
            tenant_id,
            name,
            category,
            report_id,
            parameters,
            window_days,
            change=Change("report add" + (" --replace" if replace else "")),
            replace=replace,
        )
    click.echo(
        f"tenant {declared.tenant_id}: report {declared.name} {'replaced' if replaced else 'declared'} "
        f"({describe(declared)}); its runs extract it into raw_report_{declared.name}. Its asset is "
        f"servicetitan/reports/{declared.name}: reload the code location (Deployment → Reload in the UI, or restart "
        "it) if the name is new."
    )


@report.command("list")
@tenant_option(required=False, help="Only this tenant (default: every tenant).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects (ISO timestamps), for scripts.")
def report_list(tenant_id: int | None, as_json: bool) -> None:
    """List the declared reports, by tenant and name."""
    import json

    with open_registry(load_settings()) as registry:
        declarations = registry.reports(tenant_id)
    if as_json:
        click.echo(json.dumps([_as_json(d) for d in declarations], indent=2))
        return
    if not declarations:
        whose = f"tenant {tenant_id}" if tenant_id is not None else "any tenant"
        click.echo(f"no reports declared for {whose}; declare one with `st-pipeline report add`")
        return
    name_width = max(len("name"), *(len(d.name) for d in declarations))
    category_width = max(len("category"), *(len(d.category) for d in declarations))
    click.echo(
        f"{'tenant id':>19}  {'name':{name_width}}  {'state':8}  {'category':{category_width}}  {'report':>19}  "
        f"{'window':>6}  parameters"
    )
    for d in declarations:
        shown = " ".join(f"{key}={value}" for key, value in d.parameters.items()) or "-"
        click.echo(
            f"{d.tenant_id:>19}  {d.name:{name_width}}  {'enabled' if d.enabled else 'disabled':8}  "
            f"{d.category:{category_width}}  {d.report_id:>19}  {str(d.window_days) + 'd':>6}  "
            f"{validation.printable(shown)}"
        )


def _as_json(declaration: ReportDeclaration) -> dict[str, Any]:
    return {
        "tenant_id": declaration.tenant_id,
        "name": declaration.name,
        "category": declaration.category,
        "report_id": declaration.report_id,
        "parameters": declaration.parameters,
        "window_days": declaration.window_days,
        "enabled": declaration.enabled,
        "created_at": declaration.created_at.isoformat(),
    }


@report.command("remove")
@tenant_option()
@_name_option()
def report_remove(tenant_id: int, name: str) -> None:
    """Forget a declared report: its runs stop extracting it (rows already extracted stay)."""
    with open_registry(load_settings()) as registry, _clear_errors("nothing was removed"):
        removed = registry.remove_report(tenant_id, name, change=Change("report remove"))
    click.echo(
        f"tenant {tenant_id}: report {removed.name} removed (was {describe(removed)}); "
        "rows already extracted stay in the warehouse."
    )


@report.command("disable")
@tenant_option()
@_name_option()
def report_disable(tenant_id: int, name: str) -> None:
    """Stop extracting a declared report; its declaration stays (`report enable` resumes it)."""
    _set_enabled(tenant_id, name, False)


@report.command("enable")
@tenant_option()
@_name_option()
def report_enable(tenant_id: int, name: str) -> None:
    """Extract a disabled report again."""
    _set_enabled(tenant_id, name, True)


def _set_enabled(tenant_id: int, name: str, enabled: bool) -> None:
    word = "enabled" if enabled else "disabled"
    with open_registry(load_settings()) as registry, _clear_errors("nothing was changed"):
        before = registry.report(tenant_id, name)
        registry.set_report_enabled(tenant_id, name, enabled, change=Change(f"report {word[:-1]}"))
    if before.enabled == enabled:
        click.echo(f"tenant {tenant_id}: report {name} already {word}; nothing changed.")
    elif enabled:
        click.echo(f"tenant {tenant_id}: report {name} enabled; its next runs extract it.")
    else:
        click.echo(
            f"tenant {tenant_id}: report {name} disabled: runs skip it; "
            f"`st-pipeline report enable --tenant {tenant_id} --name {name}` resumes it."
        )


@report.command("reset")
@tenant_option()
@_name_option()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def report_reset(tenant_id: int, name: str, yes: bool) -> None:
    """Drop a tenant's stored rows of a report (every day), e.g. after its definition changed; the next
    runs (or a backfill) read them again under the new definition."""
    from st_pipeline.cli.app import open_warehouse
    from st_pipeline.sync.reports import reset_report

    settings = load_settings()
    with open_registry(settings) as registry, _clear_errors("nothing was dropped"):
        declared = registry.report(tenant_id, name)
    if not yes:
        click.confirm(f"drop every stored row of report {declared.name} of tenant {tenant_id}?", abort=True)
    with open_warehouse(settings) as engine:
        dropped = reset_report(engine, tenant_id, declared.name)
    click.echo(
        f"tenant {tenant_id}: {dropped} rows of report {declared.name} dropped; backfill "
        f"servicetitan/reports/{declared.name} for the days you need them again."
    )
