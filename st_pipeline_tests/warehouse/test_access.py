"""Per-tenant access with row-level security, with two real roles logging in to the local PostgreSQL:
each sees only its tenants' rows in raw, quarantine, sync-log, hub, mart and later tables; neither
reads the registry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pydantic import SecretStr

from st_pipeline.cli import main
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.transform.build import build_tenant
from st_pipeline.warehouse import access
from st_pipeline.warehouse.loader import raw_rows, upsert_rows
from st_pipeline.warehouse.schema import ensure_raw_tables, upgrade
from st_pipeline.warehouse.tables import quarantine_table, raw_table, sync_log_table
from st_pipeline_tests.conftest import CANARY_SECRET, POSTGRES_ADMIN_URL
from st_pipeline_tests.support import TEST_CHANGE, open_registry

TENANT_A, TENANT_B = 7101, 7202
CUSTOMERS, JOBS = load_catalogue().dataset("crm/customers"), load_catalogue().dataset("jpm/jobs")


@pytest.fixture()
def databases(local_env: Path) -> Iterator[tuple[str, str, list[str]]]:
    """A warehouse and a registry database, and two login roles; all dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"st_rls_wh_{suffix}", f"st_rls_reg_{suffix}"]
    roles = [f"st_bi_a_{suffix}", f"st_bi_b_{suffix}"]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        for role in roles:
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
    base = sa.make_url(POSTGRES_ADMIN_URL)
    urls = [base.set(database=name).render_as_string(hide_password=False) for name in names]
    try:
        yield urls[0], urls[1], roles
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in roles:
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def _as(url: str, role: str) -> sa.Engine:
    return sa.create_engine(sa.make_url(url).set(username=role, password=None))


def _tenants_seen(url: str, role: str, table: str) -> set[int]:
    engine = _as(url, role)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(f"SELECT tenant_id FROM {table}")).scalars())
    finally:
        engine.dispose()


def _load(engine: sa.Engine, dataset, tenant_id: int, ids: range) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    records = [{"id": i, "modifiedOn": "2026-11-01T00:00:00Z", "active": True, "name": f"r{i}"} for i in ids]
    with engine.begin() as conn:
        upsert_rows(conn, raw_table(dataset), raw_rows(tenant_id, records, extracted_at=now, run_id="r1"))
        conn.execute(
            quarantine_table.insert().values(
                tenant_id=tenant_id,
                dataset=dataset.key,
                record_id=None,
                reason="x",
                payload_text="{}",
                run_id="r1",
                quarantined_at=now,
            )
        )
        conn.execute(
            sync_log_table.insert().values(
                run_id="r1",
                tenant_id=tenant_id,
                dataset=dataset.key,
                status="succeeded",
                started_at=now,
            )
        )


def test_each_role_reads_only_its_tenants_and_never_the_registry(
    databases: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse_url, registry_url, (role_a, role_b) = databases
    monkeypatch.setenv("ST_PIPELINE_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("ST_PIPELINE_REGISTRY_URL", registry_url)
    registry = open_registry()
    for tenant_id in (TENANT_A, TENANT_B):
        registry.add(tenant_id, f"tenant {tenant_id}", f"cid.{tenant_id}", SecretStr(CANARY_SECRET), change=TEST_CHANGE)
    registry.close()
    engine = sa.create_engine(warehouse_url)
    upgrade(engine)
    ensure_raw_tables(engine, [CUSTOMERS])
    _load(engine, CUSTOMERS, TENANT_A, range(1, 4))
    _load(engine, CUSTOMERS, TENANT_B, range(10, 15))

    runner = CliRunner()
    for role, tenant_id in ((role_a, TENANT_A), (role_b, TENANT_B)):
        granted = runner.invoke(main, ["access", "grant", "--tenant", str(tenant_id), "--role", role])
        assert granted.exit_code == 0, granted.stderr
    listed = runner.invoke(main, ["access", "list"])
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [
        [role_a, str(TENANT_A)],
        [role_b, str(TENANT_B)],
    ]

    for table in (raw_table(CUSTOMERS).name, quarantine_table.name, sync_log_table.name):
        assert _tenants_seen(warehouse_url, role_a, table) == {TENANT_A}, table
        assert _tenants_seen(warehouse_url, role_b, table) == {TENANT_B}, table
    assert _tenants_seen(warehouse_url, role_a, "st_tenant_access") == {TENANT_A}  # its own grants only

    # Tables created later are covered: a raw table on a first sync, the hub tables and marts on the
    # first build, a table some later release adds once the warehouse is upgraded.
    ensure_raw_tables(engine, [JOBS])
    _load(engine, JOBS, TENANT_A, range(1, 3))
    _load(engine, JOBS, TENANT_B, range(5, 6))
    for tenant_id in (TENANT_A, TENANT_B):
        build_tenant(engine, tenant_id, "r1")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE mart_added_later (tenant_id BIGINT NOT NULL, figure BIGINT NOT NULL)"))
        conn.execute(sa.text(f"INSERT INTO mart_added_later VALUES ({TENANT_A}, 1), ({TENANT_B}, 2)"))
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    for table in (raw_table(JOBS).name, "hub_customers", "hub_jobs", "mart_added_later"):
        assert _tenants_seen(warehouse_url, role_a, table) == {TENANT_A}, table
        assert _tenants_seen(warehouse_url, role_b, table) == {TENANT_B}, table
    assert _tenants_seen(warehouse_url, role_a, "mart_job_conversion") <= {TENANT_A}  # secured, maybe empty

    # Neither role reads the registry (another database; nothing is granted there).
    for role in (role_a, role_b):
        reader = _as(registry_url, role)
        with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT client_secret_encrypted FROM st_tenants"))
        reader.dispose()

    # The pipeline's own login still sees everything; a revoked role sees nothing at all.
    with engine.connect() as conn:
        assert set(conn.execute(sa.text(f"SELECT tenant_id FROM {raw_table(CUSTOMERS).name}")).scalars()) == {
            TENANT_A,
            TENANT_B,
        }
    revoked = runner.invoke(main, ["access", "revoke", "--role", role_a])
    assert revoked.exit_code == 0 and "1 grant(s)" in revoked.stdout
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        _tenants_seen(warehouse_url, role_a, raw_table(CUSTOMERS).name)
    assert _tenants_seen(warehouse_url, role_b, raw_table(CUSTOMERS).name) == {TENANT_B}

    history = open_registry()
    commands = [entry.command for entry in history.history()]
    history.close()
    assert commands[0] == "access revoke" and commands.count("access grant") == 2
    engine.dispose()


def test_roles_that_would_see_everything_are_refused(databases: tuple[str, str, list[str]]) -> None:
    warehouse_url, _, _ = databases
    engine = sa.create_engine(warehouse_url)
    upgrade(engine)
    with pytest.raises(access.AccessError, match="superuser or has BYPASSRLS"):
        access.grant(engine, "postgres", TENANT_A)
    with pytest.raises(access.AccessError, match="does not exist"):
        access.grant(engine, "no_such_role_st", TENANT_A)
    assert access.grants(engine) == []
    engine.dispose()
