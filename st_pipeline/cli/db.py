"""``st-pipeline db``: the schemas of the warehouse and the registry."""

from __future__ import annotations

import click

from st_pipeline.cli.app import main
from st_pipeline.database import open_engine
from st_pipeline.settings import load_settings


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
