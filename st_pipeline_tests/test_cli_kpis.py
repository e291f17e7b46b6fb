"""`st-pipeline kpis --format table|csv|json`: a tenant's headline figures from a warehouse synced
from the simulator and built, each format parsed back and its numbers checked against sums the
test takes with plain SQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from st_pipeline.cli import main
from st_pipeline_tests.conftest import TENANT_A, TENANT_B

LABELS = {
    "completed_revenue": "completed revenue",
    "sales": "sales (sold estimates)",
    "average_ticket": "average ticket",
    "average_ticket_jobs_with_revenue": "average ticket (jobs with revenue)",
    "conversion_rate": "conversion rate",
    "close_rate": "close rate",
    "membership_conversion_same_day": "membership conversion (same day)",
    "call_booking_rate": "call booking rate",
    "collected": "collected",
    "collected_within_7_days": "collected within 7 days",
    "open_balance": "open balance (A/R)",
    "credits": "credits",
    "net_receivables": "net receivables",
    "gross_margin": "gross margin",
    "gross_margin_rate": "gross margin rate",
    "marketing_return_on_spend": "marketing return on spend",
    "missed_revenue": "missed revenue",
    "capacity_use": "capacity use",
    "active_members": "active members",
    "service_completion_rate": "recurring service completion",
}
RATIOS = {
    "conversion_rate",
    "close_rate",
    "membership_conversion_same_day",
    "call_booking_rate",
    "collected_within_7_days",
    "gross_margin_rate",
    "marketing_return_on_spend",
    "capacity_use",
    "service_completion_rate",
}
COUNTS = {"active_members"}


def _kpis(tenant_id: int, *options: str) -> Result:
    return CliRunner().invoke(main, ["kpis", "--tenant", str(tenant_id), *options], prog_name="st-pipeline")


def _use(monkeypatch: pytest.MonkeyPatch, home: Path, warehouse_url: str) -> None:
    monkeypatch.setenv("ST_PIPELINE_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("ST_PIPELINE_REGISTRY_URL", f"sqlite:///{home / 'registry.db'}")


def expected(url: str, tenant_id: int) -> dict[str, Decimal | None]:
    """Every figure, from sums taken here with plain SQL (money as each warehouse stores it)."""
    engine = sa.create_engine(url)
    sqlite = engine.dialect.name == "sqlite"

    def money(value: Any) -> Decimal:
        value = value or 0
        return Decimal(int(value)).scaleb(-4) if sqlite else Decimal(value)

    def sums(sql: str, also: str = "") -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(f"{sql} WHERE tenant_id = :t{also}"), {"t": tenant_id}).one())

    def ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
        return (Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.000001")) if denominator else None

    def per(amount: Decimal, count: int) -> Decimal | None:
        return (amount / count).quantize(Decimal("0.0001"), rounding=ROUND_DOWN) if count else None

    try:
        (revenue,) = sums("SELECT sum(completed_revenue) FROM mart_revenue_by_business_unit")
        (sales,) = sums("SELECT sum(sales) FROM mart_sales")
        completed, job_revenue, with_revenue, converted, opportunities, closed, sales_opportunities = sums(
            "SELECT sum(completed_jobs), sum(revenue), sum(jobs_with_revenue), sum(converted), sum(opportunities), "
            "sum(closed), sum(sales_opportunities) FROM mart_job_conversion"
        )
        same_day, members = sums("SELECT sum(sold_same_day), sum(opportunities) FROM mart_membership_conversion")
        booked, bookable = sums("SELECT sum(booked_calls), sum(bookable_calls) FROM mart_call_booking")
        (collected,) = sums("SELECT sum(collected) FROM mart_collections")
        prompt, invoiced = sums("SELECT sum(collected_within_7_days), sum(invoiced) FROM mart_cash")
        open_balance, credits, net = sums(
            "SELECT sum(open_balance), sum(credits), sum(net_receivables) FROM mart_accounts_receivable"
        )
        costed, margin = sums("SELECT sum(revenue), sum(gross_margin) FROM mart_job_costing")
        campaign_revenue, cost = sums(
            "SELECT sum(revenue), sum(cost) FROM mart_marketing_roi", " AND campaign_id IS NOT NULL"
        )
        (missed,) = sums("SELECT sum(missed_revenue) FROM mart_missed_revenue")
        booked_minutes, available = sums(
            "SELECT sum(booked_minutes), sum(available_minutes) FROM mart_technician_capacity"
        )
        won, due = sums("SELECT sum(service_events_won), sum(service_events_due) FROM mart_membership_health")
        with engine.connect() as conn:
            active = conn.execute(
                sa.text(
                    "SELECT active_members FROM mart_membership_health WHERE tenant_id = :t "
                    "AND day = (SELECT max(day) FROM mart_membership_health WHERE tenant_id = :t)"
                ),
                {"t": tenant_id},
            ).scalar_one()
    finally:
        engine.dispose()
    return {
        "completed_revenue": money(revenue),
        "sales": money(sales),
        "average_ticket": per(money(job_revenue), completed),
        "average_ticket_jobs_with_revenue": per(money(job_revenue), with_revenue),
        "conversion_rate": ratio(converted, opportunities),
        "close_rate": ratio(closed, sales_opportunities),
        "membership_conversion_same_day": ratio(same_day, members),
        "call_booking_rate": ratio(booked, bookable),
        "collected": money(collected),
        "collected_within_7_days": ratio(money(prompt), money(invoiced)),
        "open_balance": money(open_balance),
        "credits": money(credits),
        "net_receivables": money(net),
        "gross_margin": money(margin),
        "gross_margin_rate": ratio(money(margin), money(costed)),
        "marketing_return_on_spend": ratio(money(campaign_revenue) - money(cost), money(cost)),
        "missed_revenue": money(missed),
        "capacity_use": ratio(booked_minutes, available),
        "active_members": Decimal(active),
        "service_completion_rate": ratio(won, due),
    }


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_csv_has_a_header_and_exact_numbers(
    kind: str, local_env: Path, built_warehouse: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = built_warehouse(kind)
    _use(monkeypatch, local_env, url)
    for tenant in (TENANT_A, TENANT_B):
        result = _kpis(tenant.tenant_id, "--format", "csv")
        assert result.exit_code == 0, result.output
        reader = csv.DictReader(io.StringIO(result.stdout))
        assert reader.fieldnames == ["key", "label", "value", "unit", "detail"]
        rows = list(reader)
        want = expected(url, tenant.tenant_id)
        assert [r["key"] for r in rows] == list(LABELS) and [r["label"] for r in rows] == list(LABELS.values())
        assert {r["key"]: Decimal(r["value"]) if r["value"] else None for r in rows} == want
        assert {r["key"] for r in rows if r["unit"] == "ratio"} == RATIOS
        assert {r["key"] for r in rows if r["unit"] == "count"} == COUNTS
        assert {r["key"] for r in rows if r["unit"] == "money"} == set(LABELS) - RATIOS - COUNTS
        # The data says something. The simulated memberships have all ended by today (0 active members), and
        # few recurring service events come due in a small simulation (a rate of 0 is one).
        may_be_zero = {"active_members", "service_completion_rate"}
        assert [key for key, value in want.items() if value is None or (key not in may_be_zero and not value)] == []
    assert expected(url, TENANT_A.tenant_id) != expected(url, TENANT_B.tenant_id)


def test_json_has_numbers_not_text(
    local_env: Path, built_warehouse: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = built_warehouse("sqlite")
    _use(monkeypatch, local_env, url)
    result = _kpis(TENANT_A.tenant_id, "--format", "json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert [f["key"] for f in figures] == list(LABELS)
    assert all(isinstance(f["value"], int | float) and not isinstance(f["value"], bool) for f in figures), figures
    exact = {f["key"]: f["value"] for f in json.loads(result.stdout, parse_float=Decimal, parse_int=Decimal)}
    assert exact == expected(url, TENANT_A.tenant_id)
    assert {f["key"]: f["unit"] for f in figures}["net_receivables"] == "money"
    credit_balance = next(f for f in figures if f["key"] == "credits")
    assert credit_balance["value"] < 0 and credit_balance["detail"].endswith("invoices with a credit balance")


def test_table_is_aligned_for_people(
    local_env: Path, built_warehouse: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = built_warehouse("sqlite")
    _use(monkeypatch, local_env, url)
    default, table = _kpis(TENANT_A.tenant_id), _kpis(TENANT_A.tenant_id, "--format", "table")
    assert default.exit_code == table.exit_code == 0 and default.stdout == table.stdout
    lines = table.stdout.splitlines()
    want = expected(url, TENANT_A.tenant_id)
    assert [line.split("  ")[0].strip() for line in lines] == list(LABELS.values())
    texts = {
        key: f"{100 * value:.1f}%" if key in RATIOS else f"{value:,}" if key in COUNTS else f"{value:,.2f}"
        for key, value in want.items()
        if value is not None
    }
    ends = set()
    for line, (key, text) in zip(lines, texts.items(), strict=True):
        assert f"  {text}  " in line, (key, line)
        ends.add(line.index(f"  {text}  ") + len(text) + 2)
    assert len(ends) == 1  # the values right-aligned in one column
    assert f"over {_completed_jobs(url)} completed jobs" in lines[2]


def _completed_jobs(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT sum(completed_jobs) FROM mart_job_conversion WHERE tenant_id = :t"),
                {"t": TENANT_A.tenant_id},
            ).scalar_one()
    finally:
        engine.dispose()


def test_a_warehouse_without_marts_says_what_to_run(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, local_env, f"sqlite:///{local_env / 'empty.db'}")
    result = _kpis(TENANT_A.tenant_id, "--format", "json")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: no KPIs yet: mart_revenue_by_business_unit is not built yet")
    assert "materialize servicetitan/mart/revenue_by_business_unit" in result.stderr
