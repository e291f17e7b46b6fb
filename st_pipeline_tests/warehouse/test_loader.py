"""Raw-table upserts on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.warehouse.engine import create_warehouse_engine
from st_pipeline.warehouse.loader import RecordKeyError, content_key, raw_rows, upsert_rows
from st_pipeline.warehouse.schema import ensure_raw_tables
from st_pipeline.warehouse.tables import raw_table

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'w.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_warehouse_engine(url)
    dataset = load_catalogue().dataset("crm/customers")
    table = raw_table(dataset)
    ensure_raw_tables(engine, [dataset])
    with engine.begin() as conn:
        conn.execute(table.delete())
    yield engine
    engine.dispose()


def _load(engine: sa.Engine, tenant_id: int, records: list[dict]) -> None:
    table = raw_table(load_catalogue().dataset("crm/customers"))
    with engine.begin() as conn:
        upsert_rows(conn, table, raw_rows(tenant_id, records, extracted_at=NOW, run_id="r1"))


def _rows(engine: sa.Engine) -> list[sa.Row]:
    table = raw_table(load_catalogue().dataset("crm/customers"))
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.tenant_id, table.c.id)))


def test_upsert_inserts_updates_and_never_regresses(engine: sa.Engine) -> None:
    big_id = 2**53 + 17  # int64 ids beyond float precision survive
    _load(engine, 1, [{"id": big_id, "modifiedOn": "2024-01-01T00:00:00.1234567Z", "active": True, "v": 1}])
    _load(engine, 1, [{"id": big_id, "modifiedOn": "2024-02-01T00:00:00Z", "active": False, "v": 2}])
    _load(engine, 1, [{"id": big_id, "modifiedOn": "2024-01-15T00:00:00Z", "active": True, "v": "stale"}])
    [row] = _rows(engine)
    assert row.id == big_id and row.payload["id"] == big_id
    assert row.payload["v"] == 2 and row.active is False
    assert row.modified_on == datetime(2024, 2, 1, tzinfo=UTC)


def test_same_id_in_two_tenants_and_twice_in_one_page(engine: sa.Engine) -> None:
    _load(
        engine,
        1,
        [
            {"id": 5, "modifiedOn": "2024-01-01T00:00:00Z", "v": "a"},
            {"id": 5, "modifiedOn": "2024-01-02T00:00:00Z", "v": "b"},
        ],
    )
    _load(engine, 2, [{"id": 5, "modifiedOn": "2024-01-01T00:00:00Z", "v": "other tenant"}])
    rows = _rows(engine)
    assert [(r.tenant_id, r.id, r.payload["v"]) for r in rows] == [(1, 5, "b"), (2, 5, "other tenant")]
    assert rows[0].active is None  # a record without `active` keeps it unknown, not true


def test_timestamp_with_seven_digits_keeps_microseconds(engine: sa.Engine) -> None:
    _load(engine, 1, [{"id": 1, "modifiedOn": "2021-07-19T20:35:38.2876004Z"}])
    [row] = _rows(engine)
    assert row.modified_on == datetime(2021, 7, 19, 20, 35, 38, 287600, tzinfo=UTC)
    assert row.payload["modifiedOn"] == "2021-07-19T20:35:38.2876004Z"


def test_record_without_integer_id_is_rejected() -> None:
    with pytest.raises(RecordKeyError, match="tenant 1"):
        raw_rows(1, [{"id": "12"}], extracted_at=NOW, run_id="r")


# A keyless record (dispatch/business-hours-like) and its keys, worked out once outside Python:
#   printf '%s' '{"active":true,"note":"Zo\u00eb","saturday":null,"weekdays":[{"from":"08:00","to":"17:00"}]}#0' \
#     | b2sum -l 64   →  e3ab7f1cbe84799e  →  >> 1  →  0x71d5bf8e5f423ccf
# (and ``#1`` → b99da5f06474637b → 0x5cced2f8323a31bd). Key order, spacing, the ASCII escape and the
# occurrence suffix all count: a change to any of them changes every keyless row's key.
KEYLESS = {"weekdays": [{"from": "08:00", "to": "17:00"}], "saturday": None, "note": "Zoë", "active": True}
KEYLESS_KEY_0 = 8202672914529664207
KEYLESS_KEY_1 = 6687514460128162237


def test_content_key_of_a_fixed_record_is_pinned() -> None:
    assert content_key(KEYLESS) == KEYLESS_KEY_0
    assert content_key(KEYLESS, 1) == KEYLESS_KEY_1
    # Two identical keyless records in one sync stay two rows, numbered by occurrence.
    rows = raw_rows(1, [KEYLESS, dict(KEYLESS)], extracted_at=NOW, run_id="r", key_field=None)
    assert [row["id"] for row in rows] == [KEYLESS_KEY_0, KEYLESS_KEY_1]


def test_awkward_text_survives_the_bulk_path(engine: sa.Engine) -> None:
    note = 'tab\there\nnew line \\ back\\slash \\N "quoted" ünïcödé 😀 \r end'
    _load(engine, 1, [{"id": 9, "modifiedOn": None, "note": note, "nested": {"list": [note, None, 1.5]}}])
    [row] = _rows(engine)
    assert row.payload == {"id": 9, "modifiedOn": None, "note": note, "nested": {"list": [note, None, 1.5]}}
    assert row.modified_on is None and row.active is None
