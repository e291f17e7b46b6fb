"""``read_frame``: one tenant's hub table or mart as a DataFrame, typed as the README says (money as
exact Decimal), on SQLite and PostgreSQL, from a warehouse synced from the simulator and built."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from st_pipeline.transform.frames import TableNotBuiltError, UnknownTableError, frame_table_names, read_frame
from st_pipeline.transform.hubs import HUB_TABLES
from st_pipeline.transform.marts import MARTS
from st_pipeline.transform.spec import ColumnType
from st_pipeline_tests.conftest import TENANT_A, TENANT_B

# The dtypes the README promises, written out here rather than taken from the code.
PROMISED = {
    ColumnType.INTEGER: "Int64",
    ColumnType.TEXT: "string",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "datetime64[ns, UTC]",
    ColumnType.DATE: "datetime64[ns]",
    ColumnType.MONEY: "object",
    ColumnType.DECIMAL: "float64",
    ColumnType.COORDINATE: "float64",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, built_warehouse: Callable[[str], str]) -> sa.Engine:
    engine = sa.create_engine(built_warehouse(request.param))
    request.addfinalizer(engine.dispose)
    return engine


def _exact(engine: sa.Engine, value: Any) -> Decimal:
    """A money value as plain SQL returns it: integer ten-thousandths on SQLite, NUMERIC on PostgreSQL."""
    if value is None:
        return Decimal(0)
    return Decimal(int(value)).scaleb(-4) if engine.dialect.name == "sqlite" else Decimal(value)


def _declared(table_name: str) -> dict[str, ColumnType]:
    for spec in HUB_TABLES:
        if spec.table_name == table_name:
            bookkeeping = {"deleted_at": ColumnType.TIMESTAMP, "source_modified_on": ColumnType.TIMESTAMP}
            return {
                "tenant_id": ColumnType.INTEGER,
                **{c.name: c.type for c in spec.columns},
                **bookkeeping,
                "built_at": ColumnType.TIMESTAMP,
            }
    mart = next(m for m in MARTS if m.table_name == table_name)
    return {**{c.name: c.type for c in mart.columns}, "built_at": ColumnType.TIMESTAMP}


def test_every_table_reads_with_the_promised_dtypes(engine: sa.Engine) -> None:
    assert set(frame_table_names()) == {s.table_name for s in HUB_TABLES} | {m.table_name for m in MARTS}
    for name in frame_table_names():
        frame = read_frame(engine, name, TENANT_A.tenant_id)
        declared = _declared(name)
        assert list(frame.columns) == list(declared), name
        assert {c: str(frame[c].dtype) for c in frame.columns} == {c: PROMISED[k] for c, k in declared.items()}, name
        for column, kind in declared.items():
            if kind is ColumnType.MONEY:
                assert all(v is None or isinstance(v, Decimal) for v in frame[column]), (name, column)
    jobs = read_frame(engine, "hub_jobs", TENANT_A.tenant_id)
    assert len(jobs) > 0 and jobs["no_charge"].notna().any() and jobs["job_status"].notna().all()


def test_values_are_the_tables_own(engine: sa.Engine) -> None:
    jobs = read_frame(engine, "hub_jobs", TENANT_A.tenant_id, columns=["id", "completed_on", "job_status"])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, completed_on, job_status FROM hub_jobs WHERE tenant_id = :t ORDER BY id"),
            {"t": TENANT_A.tenant_id},
        ).all()
        days = conn.execute(
            sa.text("SELECT day FROM mart_call_booking WHERE tenant_id = :t ORDER BY day"), {"t": TENANT_A.tenant_id}
        ).scalars()
        expected_days = [d if isinstance(d, date) else date.fromisoformat(d) for d in days]
    assert list(jobs["id"]) == [r.id for r in rows]
    assert list(jobs["job_status"]) == [r.job_status for r in rows]

    def utc(value: datetime | str | None) -> datetime | None:
        if value is None:
            return None
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)

    completed = [None if pd.isna(v) else v.to_pydatetime() for v in jobs["completed_on"]]
    assert completed == [utc(r.completed_on) for r in rows] and any(completed)
    calls = read_frame(engine, "mart_call_booking", TENANT_A.tenant_id, columns=["day"])
    assert [d.date() for d in calls["day"]] == expected_days and expected_days
    assert all(d.hour == d.minute == 0 for d in calls["day"])


def test_money_is_exact_decimal_and_sums_as_sql_does(engine: sa.Engine) -> None:
    tenant = {"t": TENANT_A.tenant_id}
    revenue = read_frame(engine, "mart_revenue_by_business_unit", TENANT_A.tenant_id)
    invoices = read_frame(engine, "hub_invoices", TENANT_A.tenant_id, columns=["id", "total", "balance"])
    costing = read_frame(engine, "mart_job_costing", TENANT_A.tenant_id, columns=["gross_margin"])
    with engine.connect() as conn:
        by_unit = {
            row.business_unit_id: _exact(engine, row.total)
            for row in conn.execute(
                sa.text(
                    "SELECT business_unit_id, sum(completed_revenue) AS total FROM mart_revenue_by_business_unit "
                    "WHERE tenant_id = :t GROUP BY business_unit_id"
                ),
                tenant,
            )
        }
        invoiced, balance = conn.execute(
            sa.text("SELECT sum(total), sum(balance) FROM hub_invoices WHERE tenant_id = :t"), tenant
        ).one()
        margin = conn.execute(sa.text("SELECT sum(gross_margin) FROM mart_job_costing WHERE tenant_id = :t"), tenant)
        gross_margin = _exact(engine, margin.scalar_one())
    summed = revenue.groupby("business_unit_id")["completed_revenue"].sum()
    assert dict(summed.items()) == by_unit and sum(by_unit.values()) > 0
    assert all(isinstance(v, Decimal) for v in summed)
    assert invoices["total"].sum() == _exact(engine, invoiced) and invoices["balance"].sum() == _exact(engine, balance)
    assert costing["gross_margin"].sum() == gross_margin != 0
    assert revenue["completed_revenue"].map(lambda v: v.as_tuple().exponent).eq(-4).all()  # four decimals, as stored


def test_only_the_tenants_rows(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        counts = dict(
            conn.execute(sa.text("SELECT tenant_id, count(*) FROM hub_invoices GROUP BY tenant_id")).tuples().all()
        )
    assert set(counts) == {TENANT_A.tenant_id, TENANT_B.tenant_id}
    for tenant in (TENANT_A, TENANT_B):
        frame = read_frame(engine, "hub_invoices", tenant.tenant_id)
        assert len(frame) == counts[tenant.tenant_id] and set(frame["tenant_id"]) == {tenant.tenant_id}
        assert frame["id"].is_monotonic_increasing  # key order
    nobody = read_frame(engine, "mart_sales", 1)
    assert nobody.empty and list(nobody.columns) == list(read_frame(engine, "mart_sales", TENANT_A.tenant_id).columns)
    assert str(nobody["sales"].dtype) == "object" and str(nobody["day"].dtype) == "datetime64[ns]"


def test_columns_are_picked_in_order_and_unknown_ones_named(engine: sa.Engine) -> None:
    frame = read_frame(engine, "mart_job_conversion", TENANT_A.tenant_id, columns=["revenue", "day"])
    assert list(frame.columns) == ["revenue", "day"]
    with pytest.raises(ValueError, match=r"mart_job_conversion has no column 'revenu': its columns are tenant_id, "):
        read_frame(engine, "mart_job_conversion", TENANT_A.tenant_id, columns=["revenu"])


def test_an_unknown_table_is_named_with_the_known_ones(engine: sa.Engine) -> None:
    with pytest.raises(UnknownTableError) as error:
        read_frame(engine, "hub_foo", TENANT_A.tenant_id)
    message = str(error.value)
    assert message.startswith("no table 'hub_foo': the hub tables and marts are hub_business_units, ")
    assert "hub_jobs" in message and "mart_technician_performance" in message and "__facts" not in message
    assert isinstance(error.value, ValueError)
    with pytest.raises(UnknownTableError, match=r"no table 'jobs' \(did you mean hub_jobs\?\)"):
        read_frame(engine, "jobs", TENANT_A.tenant_id)
    with pytest.raises(
        UnknownTableError, match=r"holds a mart's facts, kept for its incremental upkeep: read mart_sales"
    ):
        read_frame(engine, "mart_sales__facts", TENANT_A.tenant_id)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_table_not_built_says_what_to_materialize(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}" if kind == "sqlite" else request.getfixturevalue("fresh_postgres")()
    engine = sa.create_engine(url)
    try:
        with pytest.raises(TableNotBuiltError) as error:
            read_frame(engine, "mart_sales", TENANT_A.tenant_id)
        assert str(error.value).startswith(
            "mart_sales is not built yet in this warehouse: materialize servicetitan/mart/sales for the tenant"
        )
        assert isinstance(error.value, LookupError)
        with engine.begin() as conn:  # a table of the name, as another version left it
            conn.execute(sa.text("CREATE TABLE hub_jobs (tenant_id BIGINT, id BIGINT)"))
        with pytest.raises(
            TableNotBuiltError, match=r"hub_jobs in this warehouse has other columns .* servicetitan/hub/jobs"
        ):
            read_frame(engine, "hub_jobs", TENANT_A.tenant_id)
    finally:
        engine.dispose()
