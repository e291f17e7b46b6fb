"""What every ``st-pipeline`` command shares: the root group, one-line errors, the tenant option, and
opening the registry and the warehouse."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from st_pipeline.database import DatabaseError
from st_pipeline.redaction import redact
from st_pipeline.servicetitan.errors import ServiceTitanError
from st_pipeline.settings import Settings, SettingsError
from st_pipeline.tenants import validation
from st_pipeline.tenants.crypto import SecretKeyError
from st_pipeline.tenants.registry import TenantExistsError, TenantRegistry, UnknownTenantError

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
        argv = renamed_options(list(sys.argv[1:] if args is None else args))
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


# Options renamed in a release, accepted under the old name (with a warning) until the next one.
RENAMED_OPTIONS = {"--tenant-id": "--tenant"}


def renamed_options(argv: list[str]) -> list[str]:
    """``argv`` with each renamed option under its new name, warning on standard error for each."""
    translated: list[str] = []
    for position, arg in enumerate(argv):
        if arg == "--":  # what follows is arguments, not options
            return translated + argv[position:]
        name, equals, value = arg.partition("=")
        if name in RENAMED_OPTIONS:
            click.echo(f"warning: {name} is deprecated and goes in 0.3; use {RENAMED_OPTIONS[name]}", err=True)
            arg = RENAMED_OPTIONS[name] + equals + value
        translated.append(arg)
    return translated


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


class TenantIdType(click.ParamType):
    name = "TENANT_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return validation.tenant_id(value)
        except validation.InvalidTenantInput as exc:
            self.fail(str(exc), param, ctx)


def tenant_option(required: bool = True, help: str = "ServiceTitan tenant id.") -> Any:  # noqa: A002
    """``--tenant ID``: the one name of the tenant option in every command."""
    return click.option("--tenant", "tenant_id", type=TenantIdType(), required=required, help=help)


@contextmanager
def open_registry(settings: Settings) -> Iterator[TenantRegistry]:
    registry = TenantRegistry.open(settings)
    try:
        yield registry
    finally:
        registry.close()


@contextmanager
def open_warehouse(settings: Settings) -> Iterator[Any]:
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


SET_TIME_ZONE_COMMAND = "st-pipeline tenant set-time-zone"


def time_zone_cell(time_zone: str | None) -> str:
    """A tenant's time zone in a table: its IANA name, or that it is not set and days are UTC."""
    return time_zone if time_zone is not None else "not set (UTC)"


def set_time_zone_hint(tenant_id: int | str) -> str:
    """How to set a tenant's time zone (``tenant_id`` may be a placeholder such as ``ID``)."""
    return f"`{SET_TIME_ZONE_COMMAND} --tenant {tenant_id} ZONE` (an IANA name such as America/Los_Angeles)"


def no_tenants_message(settings: Settings) -> str:
    """Say where the registry looked, so state kept elsewhere (another home, a database) is found."""
    where = (
        f"in {settings.home} (ST_PIPELINE_HOME; unset, the project's .st_pipeline or else ~/.st_pipeline)"
        if settings.local_mode
        else "in the registry database (ST_PIPELINE_REGISTRY_URL)"
    )
    return f"no tenants registered {where}; add one with `st-pipeline tenant add`"
