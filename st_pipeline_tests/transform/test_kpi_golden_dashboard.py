"""Golden tests of the dashboard marts (``transform/dashboard.py``), and incremental builds that move facts.

As in ``test_kpi_golden``, the records are ServiceTitan-shaped payloads loaded the way a sync loads
them, and every expected value is a literal worked out by hand, with the arithmetic in a comment.

The scenario (tenant 7101, UTC; business unit 10; job type 302 with threshold 0):
  J1 5001  completed 2024-03-01  invoice 7001 of 100.00 (03-01), paid 100.00 on 03-05 (4 days)
  J2 5002  completed 2024-03-02  invoice 7002 of 300.00 (03-02): 150.00 on 03-04, 50.00 on 03-20, 100.00 open
  J3 5003  completed 2024-03-02  no invoice: an opportunity, not converted
  J4 5004  Canceled on 2024-03-02 (its canceled log), last changed 2024-04-10
  J5 5005  completed 2024-04-05  invoice 7005 of 60.00 (04-05), unpaid
  J6 5006  completed 2024-04-05  no invoice: not converted
  counter sale 7003 of 50.00 (03-01), paid on 03-15 (14 days); adjustment 7004 of -10.00 to 7001
  calls on 03-02: two Unbooked inbound, one Booked
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.transform.build import build_tenant
from st_pipeline.transform.marts import MARTS
from st_pipeline.warehouse.loader import raw_rows, upsert_rows
from st_pipeline.warehouse.tables import raw_table
from st_pipeline_tests.support import prepared_warehouse
from st_pipeline_tests.transform.test_kpi_golden import (
    AS_OF,
    TENANT,
    TENANT_RECORDS,
    assert_types,
    call,
    datasets_of,
    day,
    invoice,
    item,
    job,
    load_tenant,
    mart_rows,
    membership,
    payment,
    rec,
    split,
)

D = Decimal
DASHBOARD_TENANT = 7101


def canceled_job(job_id: int, changed: str) -> dict[str, Any]:
    record = job(job_id, 2001, 10, 302, None, status="Canceled")
    record["modifiedOn"] = changed
    return record


DASHBOARD_RECORDS: dict[str, list[dict[str, Any]]] = {
    "settings/business-units": [rec(10, name="HVAC Service")],
    "jpm/job-types": [rec(302, name="Maintenance", soldThreshold=0.0, noCharge=False)],
    "jpm/jobs": [
        job(5001, 2001, 10, 302, "2024-03-01T10:00:00Z"),
        job(5002, 2001, 10, 302, "2024-03-02T10:00:00Z"),
        job(5003, 2001, 10, 302, "2024-03-02T11:00:00Z"),
        canceled_job(5004, "2024-04-10T09:00:00Z"),  # changed since; canceled on 03-02 (its log)
        job(5005, 2001, 10, 302, "2024-04-05T10:00:00Z"),
        job(5006, 2001, 10, 302, "2024-04-05T11:00:00Z"),
    ],
    "accounting/invoices": [
        invoice(
            7001,
            job=5001,
            bu=10,
            day="2024-03-01T12:00:00Z",
            items=[item(70011, "100.00", 10)],
            sub_total="100.00",
            balance="0.00",
        ),
        invoice(
            7002,
            job=5002,
            bu=10,
            day="2024-03-02T12:00:00Z",
            items=[item(70021, "300.00", 10)],
            sub_total="300.00",
            balance="100.00",
        ),
        invoice(
            7003,
            job=None,
            bu=10,
            day="2024-03-01T15:00:00Z",
            items=[item(70031, "50.00", 10)],
            sub_total="50.00",
            balance="0.00",
        ),
        invoice(
            7004,
            job=5001,
            bu=10,
            day="2024-03-03T12:00:00Z",
            adjustment_to=7001,
            items=[item(70041, "-10.00", 10)],
            sub_total="-10.00",
            balance="-10.00",
        ),
        invoice(
            7005,
            job=5005,
            bu=10,
            day="2024-04-05T12:00:00Z",
            items=[item(70051, "60.00", 10)],
            sub_total="60.00",
            balance="60.00",
        ),
    ],
    "accounting/payments": [
        payment(9501, "2024-03-05T10:00:00Z", "100.00", [(7001, "100.00")]),
        payment(9502, "2024-03-04T10:00:00Z", "150.00", [(7002, "150.00")]),
        payment(9503, "2024-03-20T10:00:00Z", "50.00", [(7002, "50.00")]),
        payment(9504, "2024-03-15T10:00:00Z", "50.00", [(7003, "50.00")]),
    ],
    "jpm/job-canceled-logs": [
        {
            "id": 5904,
            "jobId": 5004,
            "reasonId": 1,
            "memo": None,
            "createdById": 1,
            "active": True,
            "createdOn": "2024-03-02T08:00:00Z",
        }
    ],
    "telecom/calls": [
        call(9601, "2024-03-02T09:00:00Z", "Unbooked"),
        call(9602, "2024-03-02T10:00:00Z", "Unbooked"),
        call(9603, "2024-03-02T11:00:00Z", "Booked", job_id=5002),
    ],
}


@pytest.fixture(params=["sqlite", "postgresql"])
def dashboard(request: pytest.FixtureRequest, tmp_path: Path) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'w.db'}" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres")()
    engine = prepared_warehouse(url, datasets_of(DASHBOARD_RECORDS))
    load_tenant(engine, DASHBOARD_TENANT, DASHBOARD_RECORDS)
    build_tenant(engine, DASHBOARD_TENANT, "dashboard", as_of=date(2024, 4, 15))
    request.addfinalizer(engine.dispose)
    return engine


def test_cash(dashboard: sa.Engine) -> None:
    """Invoices by invoice day: collected within 7 days, paid ones and their days to cash."""
    rows = mart_rows(dashboard, "cash", DASHBOARD_TENANT)
    assert_types(
        rows,
        ("invoiced", "collected_within_7_days"),
        ("invoices", "paid_invoices", "days_to_cash"),
        ("share_collected_within_7_days", "average_days_to_cash"),
    )
    assert rows == {
        # 7001 (100.00, paid 03-05: 4 days, prompt) and counter sale 7003 (50.00, paid 03-15: 14 days):
        # 100.00 of 150.00 within 7 days; both paid, (4 + 14) / 2 = 9 days. Adjustment 7004 left out.
        (day("2024-03-01"),): {
            "invoices": 2,
            "invoiced": D("150.00"),
            "collected_within_7_days": D("100.00"),
            "paid_invoices": 2,
            "days_to_cash": 18,
            "share_collected_within_7_days": 100 / 150,
            "average_days_to_cash": 9.0,
        },
        # 7002 (300.00): 150.00 on 03-04 (2 days) is prompt, 50.00 on 03-20 (18 days) is not; 100.00 open.
        (day("2024-03-02"),): {
            "invoices": 1,
            "invoiced": D("300.00"),
            "collected_within_7_days": D("150.00"),
            "paid_invoices": 0,
            "days_to_cash": 0,
            "share_collected_within_7_days": 0.5,
            "average_days_to_cash": None,
        },
        # 7005 (60.00): nothing paid.
        (day("2024-04-05"),): {
            "invoices": 1,
            "invoiced": D("60.00"),
            "collected_within_7_days": D("0"),
            "paid_invoices": 0,
            "days_to_cash": 0,
            "share_collected_within_7_days": 0.0,
            "average_days_to_cash": None,
        },
    }


def test_missed_revenue(dashboard: sa.Engine) -> None:
    """Unbooked calls, unconverted and canceled jobs, each at the trailing 30-day average ticket."""
    rows = mart_rows(dashboard, "missed_revenue", DASHBOARD_TENANT)
    money = (
        "revenue",
        "trailing_average_ticket",
        "missed_call_revenue",
        "missed_opportunity_revenue",
        "missed_canceled_revenue",
        "missed_revenue",
    )
    assert_types(
        rows, money, ("unbooked_calls", "completed_jobs", "unconverted_jobs", "canceled_jobs", "jobs_with_revenue")
    )

    def row(counts: tuple[int, int, int, int, int], revenue: str, average: str, missed: tuple[str, str, str]) -> dict:
        unbooked, completed, unconverted, canceled, with_revenue = counts
        calls, opportunities, cancellations = (D(m) for m in missed)
        return {
            "unbooked_calls": unbooked,
            "completed_jobs": completed,
            "unconverted_jobs": unconverted,
            "canceled_jobs": canceled,
            "jobs_with_revenue": with_revenue,
            "revenue": D(revenue),
            "trailing_average_ticket": D(average),
            "missed_call_revenue": calls,
            "missed_opportunity_revenue": opportunities,
            "missed_canceled_revenue": cancellations,
            "missed_revenue": calls + opportunities + cancellations,
        }

    assert rows == {
        # J1: 100.00 of revenue (the adjustment is not completed revenue); window: 03-01 alone → 100.00.
        (day("2024-03-01"),): row((0, 1, 0, 0, 1), "100.00", "100.00", ("0", "0", "0")),
        # J2 300.00, J3 not converted, J4 canceled, two unbooked calls. Window 03-01..03-02: 400.00 over
        # 2 jobs with revenue = 200.00 → calls 2 × 200, opportunity 1 × 200, canceled 1 × 200.
        (day("2024-03-02"),): row((2, 2, 1, 1, 1), "300.00", "200.00", ("400.00", "200.00", "200.00")),
        # J5 60.00, J6 not converted. Window 03-07..04-05 holds only 04-05: 60.00 / 1 → 1 × 60.00.
        (day("2024-04-05"),): row((0, 2, 1, 0, 1), "60.00", "60.00", ("0", "60.00", "0")),
    }


# ------------------------------------------------------------------------------------------------
# Incremental builds that move facts between rows equal full builds
# ------------------------------------------------------------------------------------------------

LATER = datetime(2024, 4, 16, 6, 0, tzinfo=UTC)


def _changed(records: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Changes of the golden tenant that move facts from one mart row to another."""
    jobs = {r["id"]: r for r in records["jpm/jobs"]}
    memberships = {r["id"]: r for r in records["memberships/memberships"]}
    calls = {r["id"]: r for r in records["telecom/calls"]}
    moved_job = {**jobs[4005], "completedOn": "2024-03-03T14:00:00Z", "businessUnitId": 10}  # day and BU
    canceled = {**memberships[8001], "status": "Canceled", "cancellationDate": "2024-03-02T00:00:00Z"}
    booked = {**calls[9102], "type": "Booked", "campaign": {"id": 77, "name": "Radio"}}
    return {
        "jpm/jobs": [moved_job],
        "memberships/memberships": [canceled, membership(8011, 2003, "2024-03-03T00:00:00Z", None)],
        "payroll/jobs/splits": [
            split(8501, 4001, 101, 25.0),
            split(8502, 4001, 102, 75.0),
            split(8505, 4005, 103, 100.0),
        ],
        "telecom/calls": [booked],
        "accounting/payments": [payment(9007, "2024-03-02T10:00:00Z", "205.00", [(6001, "205.00")])],
    }


def _all_marts(engine: sa.Engine, tenant_id: int) -> dict[str, Any]:
    return {mart.name: mart_rows(engine, mart.name, tenant_id) for mart in MARTS}


@pytest.mark.parametrize("time_zone", ["UTC", "America/Chicago"])
def test_incremental_builds_that_move_facts_equal_full_builds(tmp_path: Path, time_zone: str) -> None:
    engine = prepared_warehouse(f"sqlite:///{tmp_path / 'w.db'}", datasets_of(TENANT_RECORDS, _changed(TENANT_RECORDS)))
    try:
        load_tenant(engine, TENANT, TENANT_RECORDS)
        build_tenant(engine, TENANT, "first", as_of=AS_OF, time_zone=time_zone)
        before = _all_marts(engine, TENANT)
        with engine.begin() as conn:
            catalogue = load_catalogue()
            for key, records in _changed(TENANT_RECORDS).items():
                upsert_rows(
                    conn, raw_table(catalogue.dataset(key)), raw_rows(TENANT, records, extracted_at=LATER, run_id="r2")
                )
        incremental = build_tenant(engine, TENANT, "second", as_of=AS_OF, time_zone=time_zone)
        after = _all_marts(engine, TENANT)
        build_tenant(engine, TENANT, "full", as_of=AS_OF, time_zone=time_zone, full=True)
        full = _all_marts(engine, TENANT)
    finally:
        engine.dispose()
    modes = {m.table: m.mode for m in incremental.marts}
    # The changes reached these marts incrementally (receivables are daily: rebuilt in full anyway).
    for name in (
        "job_conversion",
        "technician_performance",
        "membership_conversion",
        "call_booking",
        "cash",
        "missed_revenue",
    ):
        assert modes[f"mart_{name}"] == "incremental", (name, modes)
    # Facts moved: J5 left 2024-03-02 / BU 20 for 2024-03-03 / BU 10; Alice's share of J1 fell to 25 %.
    assert (day("2024-03-03"), 10) in after["job_conversion"] and (day("2024-03-03"), 10) not in before[
        "job_conversion"
    ]
    assert after["technician_performance"][(day("2024-03-01"), 101, 10)]["revenue"] == D("87.50")  # 350 × 25 %
    assert after != before
    assert after == full
