"""Migrations: an empty warehouse and one at the previous revision both reach the head, on SQLite
and on the real PostgreSQL; the result matches the table definitions the code uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from st_pipeline.warehouse.schema import SchemaOutOfDateError, check_schema, current_revision, head_revision, upgrade
from st_pipeline.warehouse.tables import CONTROL_TABLES


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    else:
        base = sa.make_url(request.getfixturevalue("postgres_url"))
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        name = f"{base.database}_schema_{tmp_path.name[-12:].replace('-', '_').lower()}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine = sa.create_engine(base.set(database=name))
    yield engine
    engine.dispose()
    if request.param == "postgresql":
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _columns(engine: sa.Engine, table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns(table)}


def test_empty_database_upgrades_to_head(engine: sa.Engine) -> None:
    with pytest.raises(SchemaOutOfDateError, match="no st_pipeline schema yet.*st-pipeline db upgrade"):
        check_schema(engine, "under test")
    upgrade(engine)
    assert current_revision(engine) == head_revision() == "0005"
    check_schema(engine, "under test")
    for table in CONTROL_TABLES:
        assert _columns(engine, table.name) == {c.name for c in table.columns}, table.name
    upgrade(engine)  # idempotent
    assert current_revision(engine) == "0005"


def test_previous_revision_with_data_upgrades_and_keeps_it(engine: sa.Engine) -> None:
    upgrade(engine, "0001")
    with pytest.raises(SchemaOutOfDateError, match="revision 0001"):
        check_schema(engine, "under test")
    # A raw table as release 0001 created it (no deleted_at), holding a row.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE raw_crm_customers (tenant_id BIGINT NOT NULL, id BIGINT NOT NULL, "
                "modified_on TIMESTAMP, active BOOLEAN, payload TEXT NOT NULL, extracted_at TIMESTAMP NOT NULL, "
                "run_id VARCHAR(64) NOT NULL, PRIMARY KEY (tenant_id, id))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO raw_crm_customers VALUES (1, 42, NULL, TRUE, '{\"id\": 42}', '2026-01-01 00:00:00', 'r0')"
            )
        )
    upgrade(engine)
    assert current_revision(engine) == "0005"
    assert "deleted_at" in _columns(engine, "raw_crm_customers")
    # 0005: the existing raw table got the index incremental transforms read by.
    indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("raw_crm_customers")}
    assert ["tenant_id", "extracted_at"] in indexes.values()
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT id, payload, deleted_at FROM raw_crm_customers")).one()
    assert row.id == 42 and "42" in row.payload and row.deleted_at is None
    assert {"st_sync_state", "st_sync_log", "raw_quarantine"} <= set(sa.inspect(engine).get_table_names())


def test_the_status_table_is_filled_from_the_log_on_upgrade(engine: sa.Engine) -> None:
    """0003 → 0004: each pair's latest status and last success come from its history; its row
    count is unknown (-1) until the next sync counts it once."""
    upgrade(engine, "0003")
    rows = [  # (log id, tenant, dataset, status, ended, records)
        (1, 1, "crm/customers", "succeeded", "2026-11-01 10:00:00", 5),
        (2, 1, "crm/customers", "succeeded", "2026-11-01 11:00:00", 0),
        (3, 1, "crm/customers", "failed", "2026-11-01 12:00:00", 0),
        (4, 2, "jpm/jobs", "skipped", "2026-11-01 12:00:00", 0),
    ]
    with engine.begin() as conn:
        for log_id, tenant, dataset, status, ended, records in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO st_sync_log (log_id, run_id, tenant_id, dataset, status, started_at, ended_at, "
                    "records) "
                    "VALUES (:i, 'r', :t, :d, :s, :e, :e, :n)"
                ),
                {"i": log_id, "t": tenant, "d": dataset, "s": status, "e": ended, "n": records},
            )
    upgrade(engine)
    with engine.connect() as conn:
        statuses = {
            (r.tenant_id, r.dataset): r
            for r in conn.execute(sa.text("SELECT * FROM st_dataset_status ORDER BY tenant_id"))
        }
        durations = conn.execute(sa.text("SELECT count(*) FROM st_sync_log WHERE duration_s IS NULL")).scalar_one()
    customers, jobs = statuses[(1, "crm/customers")], statuses[(2, "jpm/jobs")]
    assert (customers.last_status, customers.row_count, jobs.last_status) == ("failed", -1, "skipped")
    assert str(customers.last_success_at).startswith("2026-11-01 11:00")
    assert str(customers.last_changed_at).startswith("2026-11-01 10:00")  # the last sync that brought records
    assert jobs.last_success_at is None and durations == 4


def test_the_head_constant_is_the_migrations_head() -> None:
    """A sync checks against HEAD_REVISION without loading Alembic: it must be Alembic's head."""
    from st_pipeline.warehouse.schema import HEAD_REVISION, REVISIONS, WAREHOUSE_SCHEMA

    assert HEAD_REVISION == head_revision()
    # Every revision, in order: a revision missing here would be refused as "ahead" of the code.
    assert WAREHOUSE_SCHEMA.alembic_revisions() == REVISIONS
