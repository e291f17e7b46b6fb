"""Schemas manage themselves safely, on SQLite and the real PostgreSQL.

An empty warehouse or registry gets its schema on first use, once even when two first uses race;
one that is behind or ahead of the code is refused with what to do and left exactly as it was;
``st-pipeline db upgrade`` brings both to the head, keeps their data, and adopts a registry made
before the registry had migrations; a registry of an older revision (before tenants had time zones)
is upgraded with its tenants, their zones not set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from pydantic import SecretStr

from st_pipeline.cli import main
from st_pipeline.database import open_engine
from st_pipeline.defs.resources import WarehouseResource
from st_pipeline.schema_versions import SchemaOutOfDateError, VersionedSchema
from st_pipeline.settings import load_settings
from st_pipeline.tenants.endpoint_selection import EndpointSelection
from st_pipeline.tenants.registry import TenantRegistry
from st_pipeline.tenants.schema import (
    REGISTRY_HEAD_REVISION,
    REGISTRY_REVISIONS,
    REGISTRY_SCHEMA,
    ensure_registry_schema,
    upgrade_registry,
)
from st_pipeline.tenants.tables import metadata as registry_metadata
from st_pipeline.tenants.tables import tenants_table
from st_pipeline.warehouse.schema import HEAD_REVISION, WAREHOUSE_SCHEMA, current_revision, ensure_schema, upgrade
from st_pipeline.warehouse.tables import CONTROL_TABLES
from st_pipeline_tests.support import TEST_CHANGE

Urls = tuple[str, str]  # (warehouse, registry)


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(request: pytest.FixtureRequest, local_env: Path, monkeypatch: pytest.MonkeyPatch) -> Urls:
    """An empty warehouse and an empty registry, named by the deployment's variables."""
    if request.param == "sqlite":
        warehouse, registry = f"sqlite:///{local_env / 'warehouse.db'}", f"sqlite:///{local_env / 'registry.db'}"
    else:
        create: Callable[[], str] = request.getfixturevalue("fresh_postgres")
        warehouse, registry = create(), create()
    monkeypatch.setenv("ST_PIPELINE_WAREHOUSE_URL", warehouse)
    monkeypatch.setenv("ST_PIPELINE_REGISTRY_URL", registry)
    return warehouse, registry


def _engine(url: str) -> sa.Engine:
    return open_engine(url, variable="test database")


def _snapshot(url: str) -> dict[str, object]:
    """Every table of the database with its columns and rows: equal snapshots, nothing changed."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            return {
                name: (
                    [column["name"] for column in inspector.get_columns(name)],
                    sorted(map(repr, conn.execute(sa.text(f'SELECT * FROM "{name}"')))),
                )
                for name in sorted(inspector.get_table_names())
            }
    finally:
        engine.dispose()


def _db_upgrade() -> Result:
    return CliRunner().invoke(main, ["db", "upgrade"], prog_name="st-pipeline")


def _first_run() -> None:
    """What every run asset does first: ``WarehouseResource.current_engine`` in a set-up resource."""
    resource = WarehouseResource()
    resource.setup_for_execution(dg.build_init_resource_context())
    try:
        resource.current_engine()
    finally:
        resource.teardown_after_execution(dg.build_init_resource_context())


# -- the warehouse -------------------------------------------------------------------------------


def test_an_empty_warehouse_is_created_by_its_first_run(urls: Urls) -> None:
    warehouse_url, _ = urls
    assert _snapshot(warehouse_url) == {}
    _first_run()  # no `st-pipeline db upgrade` before it
    engine = _engine(warehouse_url)
    try:
        assert current_revision(engine) == HEAD_REVISION
        tables = set(sa.inspect(engine).get_table_names())
        assert {table.name for table in CONTROL_TABLES} <= tables
        assert ensure_schema(engine, "under test") is False  # the second use creates nothing
    finally:
        engine.dispose()


def test_other_tables_do_not_make_a_warehouse_behind(urls: Urls) -> None:
    """Tables that are not the warehouse's (here a registry's, in the same database) leave it "empty"."""
    warehouse_url, _ = urls
    engine = _engine(warehouse_url)
    try:
        ensure_registry_schema(engine, "the warehouse's database")
        _first_run()
        assert current_revision(engine) == HEAD_REVISION
        assert REGISTRY_SCHEMA.current_revision(engine) == REGISTRY_HEAD_REVISION
    finally:
        engine.dispose()


def test_a_warehouse_behind_is_refused_unchanged_then_upgraded_with_its_data(urls: Urls) -> None:
    warehouse_url, _ = urls
    engine = _engine(warehouse_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO raw_quarantine (tenant_id, dataset, record_id, reason, payload_text, run_id, "
                "quarantined_at) "
                "VALUES (4101, 'crm/customers', 42, 'no id', '{\"id\": null}', 'r0', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    before = _snapshot(warehouse_url)

    with pytest.raises(dg.Failure) as refused:
        _first_run()
    message = str(refused.value)
    assert "schema revision 0001" in message and f"needs revision {HEAD_REVISION}" in message
    assert "Run `st-pipeline db upgrade` (with the same ST_PIPELINE_WAREHOUSE_URL)" in message
    assert _snapshot(warehouse_url) == before

    upgraded = _db_upgrade()
    assert upgraded.exit_code == 0, upgraded.output
    assert f": schema 0001 → {HEAD_REVISION}" in upgraded.stdout.splitlines()[0]
    _first_run()  # a run may use it now
    engine = _engine(warehouse_url)
    try:
        assert current_revision(engine) == HEAD_REVISION
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT tenant_id, record_id, reason FROM raw_quarantine")).one()
    finally:
        engine.dispose()
    assert tuple(row) == (4101, 42, "no id")


def test_tables_without_a_version_are_behind_not_empty(urls: Urls) -> None:
    """A warehouse holding raw data but no version table is not "empty": nothing is created over it."""
    warehouse_url, _ = urls
    engine = _engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE raw_crm_customers (tenant_id BIGINT NOT NULL, id BIGINT NOT NULL)"))
        conn.execute(sa.text("INSERT INTO raw_crm_customers VALUES (4101, 42)"))
    engine.dispose()
    before = _snapshot(warehouse_url)
    with pytest.raises(
        dg.Failure,
        match=r"has st_pipeline tables \(raw_crm_customers\) but no schema version.*"
        r"st-pipeline db upgrade",
    ):
        _first_run()
    assert _snapshot(warehouse_url) == before


def test_a_warehouse_ahead_of_the_code_is_refused_by_runs_and_by_db_upgrade(urls: Urls) -> None:
    warehouse_url, _ = urls
    engine = _engine(warehouse_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE st_pipeline_schema_version SET version_num = '0099'"))
    engine.dispose()
    before = _snapshot(warehouse_url)

    with pytest.raises(
        dg.Failure,
        match=f"revision 0099, which this version of st_pipeline does not know "
        f"\\(its newest is {HEAD_REVISION}\\): a newer st_pipeline",
    ):
        _first_run()
    refused = _db_upgrade()
    assert refused.exit_code == 1 and "revision 0099" in refused.stderr and "cannot downgrade" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert _snapshot(warehouse_url) == before


# -- the registry --------------------------------------------------------------------------------


def test_an_empty_registry_is_created_on_first_open(urls: Urls) -> None:
    _, registry_url = urls
    assert _snapshot(registry_url) == {}
    registry = TenantRegistry.open(load_settings())
    try:
        registry.add(4101, "Acme", "cid.acme", SecretStr("cs1.secret"), change=TEST_CHANGE)
        assert REGISTRY_SCHEMA.current_revision(registry.engine) == REGISTRY_HEAD_REVISION
        assert ensure_registry_schema(registry.engine, "under test") is False
    finally:
        registry.close()
    assert {"st_pipeline_registry_version", *registry_metadata.tables} == set(_snapshot(registry_url))


def test_the_migrations_make_the_tables_the_code_defines(
    urls: Urls, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The migrations up to the head and the tables' definitions are the same shape (0001 alone was
    what ``create_all`` made before migrations: see ``_old_registry``)."""
    _, migrated_url = urls
    if migrated_url.startswith("sqlite"):
        defined_url = f"sqlite:///{tmp_path / 'defined.db'}"
    else:
        defined_url = request.getfixturevalue("fresh_postgres")()
    migrated, defined = _engine(migrated_url), _engine(defined_url)
    upgrade_registry(migrated)
    registry_metadata.create_all(defined)

    def shape(engine: sa.Engine) -> dict[str, object]:
        inspector = sa.inspect(engine)
        return {
            table: (
                [(c["name"], repr(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                inspector.get_pk_constraint(table)["constrained_columns"],
                sorted((ix["name"], ix["column_names"]) for ix in inspector.get_indexes(table)),
            )
            for table in registry_metadata.tables
        }

    try:
        assert shape(migrated) == shape(defined)
    finally:
        migrated.dispose()
        defined.dispose()


# Columns added by the registry's migrations after 0001, newest last: not in a registry made before them.
_LATER_COLUMNS = (("st_tenants", "time_zone"),)  # 0002
# Tables added by them, newest last.
_LATER_TABLES = ("st_tenant_reports",)  # 0003


def _old_registry(url: str) -> None:
    """A registry as the code before registry migrations left it: ``create_all`` of the tables then
    (today's, less the columns added since), a tenant, no version."""
    engine = _engine(url)
    registry_metadata.create_all(engine)
    with engine.begin() as conn:
        for table in reversed(_LATER_TABLES):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        for table, column in _LATER_COLUMNS:
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(
            tenants_table.insert().values(
                tenant_id=4101,
                name="Acme",
                client_id="cid.acme",
                client_secret_encrypted="gAAAA-not-read-here",
                enabled=True,
                created_at=sa.func.now(),
                updated_at=sa.func.now(),
            )
        )
    engine.dispose()


def test_a_registry_made_before_migrations_is_refused_then_adopted_by_db_upgrade(urls: Urls) -> None:
    _, registry_url = urls
    _old_registry(registry_url)
    before = _snapshot(registry_url)
    with pytest.raises(
        SchemaOutOfDateError,
        match=r"registry .* has st_pipeline tables .* but no schema version "
        r".*made before the registry had migrations.*st-pipeline db upgrade",
    ):
        TenantRegistry.open(load_settings())
    assert _snapshot(registry_url) == before

    upgraded = _db_upgrade()
    assert upgraded.exit_code == 0, upgraded.output
    warehouse_line, registry_line = upgraded.stdout.splitlines()
    assert warehouse_line.startswith("warehouse ") and f"schema empty → {HEAD_REVISION}" in warehouse_line
    # Stamped at 0001, then upgraded from there like any registry at 0001.
    assert registry_line.startswith("registry ") and (
        f"schema unversioned (existing tables adopted) → {REGISTRY_HEAD_REVISION}" in registry_line
    )
    registry = TenantRegistry.open(load_settings())
    try:
        assert [(t.tenant_id, t.time_zone) for t in registry.list()] == [(4101, None)]
        assert REGISTRY_SCHEMA.current_revision(registry.engine) == REGISTRY_HEAD_REVISION
    finally:
        registry.close()

    again = _db_upgrade()
    assert again.exit_code == 0
    current = f"schema {REGISTRY_HEAD_REVISION} → {REGISTRY_HEAD_REVISION} (already current)"
    assert current in again.stdout.splitlines()[1]


def _registry_at_0001(url: str) -> None:
    """A registry as st_pipeline left it before tenants had time zones: revision 0001, a tenant."""
    engine = _engine(url)
    upgrade_registry(engine, "0001")
    with engine.begin() as conn:
        assert "time_zone" not in {c["name"] for c in sa.inspect(conn).get_columns("st_tenants")}
        conn.execute(
            sa.text(
                "INSERT INTO st_tenants (tenant_id, name, client_id, client_secret_encrypted, enabled, created_at, "
                "updated_at) VALUES (4101, 'Acme', 'cid.acme', 'gAAAA-not-read-here', :yes, :at, :at)"
            ),
            {"yes": True, "at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC)},
        )
    engine.dispose()


def test_a_registry_before_time_zones_is_refused_then_upgraded_keeping_its_tenants_without_a_zone(
    urls: Urls,
) -> None:
    _, registry_url = urls
    _registry_at_0001(registry_url)
    before = _snapshot(registry_url)
    with pytest.raises(
        SchemaOutOfDateError,
        match=rf"registry .* is at schema revision 0001; this version of st_pipeline needs revision "
        rf"{REGISTRY_HEAD_REVISION}\. Run `st-pipeline db upgrade`",
    ):
        TenantRegistry.open(load_settings())
    assert _snapshot(registry_url) == before

    upgraded = _db_upgrade()
    assert upgraded.exit_code == 0, upgraded.output
    assert f"schema 0001 → {REGISTRY_HEAD_REVISION}" in upgraded.stdout.splitlines()[1]
    engine = _engine(registry_url)
    try:
        [column] = [c for c in sa.inspect(engine).get_columns("st_tenants") if c["name"] == "time_zone"]
        assert column["nullable"] and isinstance(column["type"], sa.String) and column["type"].length == 64
    finally:
        engine.dispose()
    registry = TenantRegistry.open(load_settings())
    try:
        [tenant] = registry.list()
        assert (tenant.tenant_id, tenant.name, tenant.time_zone) == (4101, "Acme", None)
        assert tenant.created_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        zoned = registry.set_time_zone(4101, "America/Denver", change=TEST_CHANGE)
        assert zoned.time_zone == "America/Denver" == registry.get(4101).time_zone
        # 0003: it declares no reports yet, and can declare one.
        assert registry.reports(4101) == []
        registry.declare_report(4101, "revenue", "business-unit-dashboard", 7, change=TEST_CHANGE)
        assert [r.name for r in registry.reports(4101)] == ["revenue"]
    finally:
        registry.close()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("DROP TABLE st_endpoint_flags", "st_endpoint_flags is missing"),
        (
            "DROP INDEX ix_st_audit_log_tenant",
            "index ix_st_audit_log_tenant on st_audit_log (tenant_id, at) is missing",
        ),
        (
            "ALTER TABLE st_tenant_status DROP COLUMN reason",
            "st_tenant_status has columns needs_credentials, tenant_id, updated_at (primary key tenant_id), expected",
        ),
    ],
    ids=["table", "index", "column"],
)
def test_a_registry_whose_tables_do_not_match_is_not_adopted(urls: Urls, damage: str, problem: str) -> None:
    _, registry_url = urls
    _old_registry(registry_url)
    engine = _engine(registry_url)
    with engine.begin() as conn:
        conn.execute(sa.text(damage))
    engine.dispose()
    before = _snapshot(registry_url)
    refused = _db_upgrade()
    assert refused.exit_code == 1, refused.output
    assert f"was not adopted: {problem}" in refused.stderr
    assert "Nothing was changed" in refused.stderr and refused.stderr.count("\n") == 1
    assert _snapshot(registry_url) == before


def test_a_registry_ahead_of_the_code_is_refused(urls: Urls) -> None:
    _, registry_url = urls
    engine = _engine(registry_url)
    upgrade_registry(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE st_pipeline_registry_version SET version_num = '0099'"))
    before = _snapshot(registry_url)
    ahead = (
        f"registry .* is at schema revision 0099, which this version of st_pipeline does not know \\(its newest "
        f"is {REGISTRY_HEAD_REVISION}\\)"
    )
    with pytest.raises(SchemaOutOfDateError, match=ahead):
        TenantRegistry.open(load_settings())
    with pytest.raises(SchemaOutOfDateError, match=ahead):
        EndpointSelection(engine)
    engine.dispose()
    refused = _db_upgrade()
    assert refused.exit_code == 1 and "revision 0099" in refused.stderr and "cannot downgrade" in refused.stderr
    assert _snapshot(registry_url) == before


def test_the_registry_head_constant_is_the_migrations_head() -> None:
    """The registry is checked against REGISTRY_REVISIONS without loading Alembic: they must agree."""
    assert REGISTRY_SCHEMA.alembic_revisions() == REGISTRY_REVISIONS
    assert REGISTRY_HEAD_REVISION == REGISTRY_REVISIONS[-1]


# -- two first uses at once ----------------------------------------------------------------------


T = TypeVar("T")


def _at_once(*uses: Callable[[], T]) -> list[T]:
    """Run ``uses`` in threads released together; their results, or the first failure raised."""
    start = threading.Barrier(len(uses))
    results: dict[int, T] = {}
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout=60)
            results[index] = uses[index]()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(uses))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a first use is stuck"
    assert not failures, failures
    return [results[index] for index in range(len(uses))]


def test_a_warehouse_and_a_registry_created_at_once_in_one_process(fresh_postgres: Callable[[], str]) -> None:
    """Alembic's operations are process-wide: two migrations of different databases in threads of one
    process (a code server's sensor ticks) must not send their DDL to each other's connection."""
    engines = [_engine(fresh_postgres()) for _ in range(4)]
    try:
        warehouses, registries = engines[:2], engines[2:]
        created = _at_once(
            *(
                [lambda engine=engine: ensure_schema(engine, "warehouse") for engine in warehouses]
                + [lambda engine=engine: ensure_registry_schema(engine, "registry") for engine in registries]
            )
        )
        assert created == [True] * 4
        for engine in warehouses:
            tables = set(sa.inspect(engine).get_table_names())
            assert current_revision(engine) == HEAD_REVISION and not tables & set(registry_metadata.tables)
        for engine in registries:
            tables = set(sa.inspect(engine).get_table_names())
            assert tables == {"st_pipeline_registry_version", *registry_metadata.tables}
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize("schema", [WAREHOUSE_SCHEMA, REGISTRY_SCHEMA], ids=lambda schema: schema.label)
def test_two_first_uses_at_once_create_the_schema_once(
    fresh_postgres: Callable[[], str], schema: VersionedSchema
) -> None:
    url = fresh_postgres()
    engines = [_engine(url) for _ in range(4)]  # each its own engine, like separate run processes
    try:
        created = _at_once(*(lambda engine=engine: schema.ensure(engine, schema.label) for engine in engines))
        assert schema.current_revision(engines[0]) == schema.head
    finally:
        for engine in engines:
            engine.dispose()
    assert sorted(created) == [False, False, False, True]
