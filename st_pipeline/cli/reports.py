"""``st-pipeline sync-log``, ``kpis`` and ``status``: what the syncs did, the KPIs, the fleet."""

from __future__ import annotations

from typing import Any

import click

from st_pipeline.cli.app import (
    main,
    no_tenants_message,
    open_registry,
    open_warehouse,
    set_time_zone_hint,
    tenant_option,
    time_zone_cell,
)
from st_pipeline.settings import load_settings
from st_pipeline.tenants import validation


@main.command("sync-log")
@tenant_option()
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, 1000), help="How many of the latest runs.")
@click.option("--run", "run_id", help="One run, by its Dagster run id.")
@click.option("--all", "show_all", is_flag=True, help="Also list the datasets where nothing changed.")
def sync_log(tenant_id: int, runs: int, run_id: str | None, show_all: bool) -> None:
    """What the latest sync of a tenant did: per-run totals, then its datasets (changed, failed, skipped)."""
    from st_pipeline.sync.state import SUCCEEDED, read_log

    with open_warehouse(load_settings()) as engine:
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
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: aligned, for people; csv (header key,label,value,unit,detail) and json (a list of objects): "
    "plain numbers, ratios as fractions, for scripts.",
)
def kpis(tenant_id: int, output: str) -> None:
    """A tenant's headline KPI figures, from the marts its last run built."""
    from st_pipeline.transform.frames import TableNotBuiltError
    from st_pipeline.transform.kpis import headline_kpis, kpi_table

    with open_warehouse(load_settings()) as engine:
        with engine.connect() as conn:
            try:
                figures = headline_kpis(conn, tenant_id)
            except TableNotBuiltError as exc:
                raise click.ClickException(f"no KPIs yet: {exc}") from None
    if output == "table":
        for line in kpi_table(figures):
            click.echo(line)
        return
    if output == "json":
        import json

        # JSON numbers: exact to 15 significant digits, so money to 4 decimals up to 100 billion.
        click.echo(json.dumps([{**_row(k), "value": _json_number(k.value)} for k in figures], indent=2))
        return
    import csv
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(_row(figures[0])), lineterminator="\n")
    writer.writeheader()
    writer.writerows({**_row(k), "value": "" if k.value is None else str(k.value)} for k in figures)
    click.echo(text.getvalue(), nl=False)


def _row(kpi: Any) -> dict[str, Any]:
    return {"key": kpi.key, "label": kpi.label, "value": kpi.value, "unit": kpi.unit, "detail": kpi.detail}


def _json_number(value: Any) -> int | float | None:
    if value is None or isinstance(value, int):
        return value
    return int(value) if value == value.to_integral_value() else float(value)


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects (ISO timestamps), for scripts.")
def status(as_json: bool) -> None:
    """The fleet on one screen: per tenant, its state, time zone, last success, staleness, failures, open incidents."""
    import json

    from st_pipeline.sync.fleet import fleet_status

    settings = load_settings()
    with open_registry(settings) as registry:
        with open_warehouse(settings) as engine:
            rows = fleet_status(registry, engine, settings.freshness_sla)
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    if not rows:
        click.echo(no_tenants_message(settings))
        return
    zone_width = max(len("time zone"), *(len(time_zone_cell(row.time_zone)) for row in rows))
    click.echo(
        f"{'tenant id':>19}  {'state':17}  {'last success (UTC)':18}  {'fresh':5}  "
        f"{'failing datasets':34}  {'open incidents':14}  {'time zone':{zone_width}}  name"
    )
    for row in rows:
        state = "needs credentials" if row.needs_credentials else ("enabled" if row.enabled else "disabled")
        last = f"{row.last_success:%Y-%m-%d %H:%M}" if row.last_success else "never synced"
        failing = _first_few(row.failing_datasets)
        click.echo(
            f"{row.tenant_id:>19}  {state:17}  {last:18}  {'STALE' if row.stale else 'ok':5}  "
            f"{failing:34}  {len(row.open_incidents):<14}  {time_zone_cell(row.time_zone):{zone_width}}  "
            f"{validation.printable(row.name)}"
        )
    sla = settings.freshness_sla.total_seconds() / 3600
    click.echo(
        f"\n{len(rows)} tenants; {sum(r.stale for r in rows)} stale (SLA {sla:g} h); "
        f"{sum(bool(r.failing_datasets) for r in rows)} with failing datasets; "
        f"{sum(len(r.open_incidents) for r in rows)} open incidents"
    )
    unzoned = [str(row.tenant_id) for row in rows if row.time_zone is None]
    if unzoned:
        shown = ", ".join(unzoned[:5]) + (f" +{len(unzoned) - 5}" if len(unzoned) > 5 else "")
        click.echo(
            f"{len(unzoned)} without a time zone, so their days are UTC ({shown}): "
            f"set each with {set_time_zone_hint('ID')}"
        )


def _first_few(keys: list[str], shown: int = 2) -> str:
    if not keys:
        return "-"
    more = f" +{len(keys) - shown}" if len(keys) > shown else ""
    return f"{len(keys)}: " + ", ".join(keys[:shown]) + more
