"""``st-pipeline keys``: the encryption keys of the tenants' client secrets."""

from __future__ import annotations

import click

from st_pipeline.cli.app import main, open_registry
from st_pipeline.settings import load_settings
from st_pipeline.tenants.crypto import generate_key, key_id
from st_pipeline.tenants.registry import Change


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
    with open_registry(settings) as registry:
        report = registry.rotate_keys(change=Change("keys rotate"))
    click.echo(f"{report.rotated} client secret(s) re-encrypted under key {report.key_id}.")
    retired = sorted(k for k in registry.secret_box.key_ids if k != report.key_id)
    if retired:
        click.echo(f"No stored secret needs key(s) {', '.join(retired)} any more: remove them from the configuration.")
