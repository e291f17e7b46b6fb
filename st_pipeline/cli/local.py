"""``st-pipeline simulator`` and ``demo``: the embedded ServiceTitan and the demo."""

from __future__ import annotations

import sys

import click

from st_pipeline.cli.app import TenantIdType, main


@main.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same data.")
@click.option("--scale", default=1.0, show_default=True, type=float, help="Volume multiplier (1.0 ≈ 10k records).")
@click.option("--tenant", "tenant_ids", multiple=True, type=TenantIdType(), default=(1001,), show_default=True)
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
