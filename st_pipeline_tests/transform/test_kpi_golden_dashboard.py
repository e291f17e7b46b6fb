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
    CREATED,
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


def with_fields(record: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**record, **fields}


def canceled_job(job_id: int, changed: str) -> dict[str, Any]:
    record = job(job_id, 2001, 10, 302, None, status="Canceled")
    record["modifiedOn"] = changed
    return record


RADIO = {"id": 31, "name": "Radio"}


def pay(item_id: int, job_id: int, amount: str, kind: str = "TimesheetTime", active: bool = True) -> dict[str, Any]:
    return rec(
        item_id,
        active,
        employeeId=101,
        employeeType="Technician",
        grossPayItemType=kind,
        paidTimeType="Regular",
        jobId=job_id,
        amount=amount,
        date="2024-03-02T00:00:00Z",
    )


def purchase_order(order_id: int, job_id: int, total: str, status: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "number": f"PO{order_id}",
        "status": status,
        "jobId": job_id,
        "total": total,
        "tax": "0.00",
        "shipping": "0.00",
        "date": "2024-03-01T00:00:00Z",
        "createdOn": CREATED,
        "modifiedOn": CREATED,
    }


def bill(bill_id: int, job_id: int, amount: str, purchase_order: int | None = None) -> dict[str, Any]:
    return {
        "id": bill_id,
        "jobId": job_id,
        "purchaseOrderId": purchase_order,
        "billAmount": amount,
        "billDate": "2024-03-10T00:00:00Z",
        "createdOn": CREATED,
        "modifiedOn": CREATED,
    }


DASHBOARD_RECORDS: dict[str, list[dict[str, Any]]] = {
    "settings/business-units": [rec(10, name="HVAC Service")],
    "jpm/job-types": [rec(302, name="Maintenance", soldThreshold=0.0, noCharge=False)],
    "jpm/jobs": [
        with_fields(job(5001, 2001, 10, 302, "2024-03-01T10:00:00Z"), campaignId=31),
        with_fields(job(5002, 2001, 10, 302, "2024-03-02T10:00:00Z"), campaignId=31),
        with_fields(job(5003, 2001, 10, 302, "2024-03-02T11:00:00Z"), warrantyId=77),  # a warranty job
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
            items=[with_fields(item(70021, "300.00", 10, kind="Material"), cost="120.00", totalCost="120.00")],
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
        with_fields(call(9601, "2024-03-02T09:00:00Z", "Unbooked"), campaign=RADIO),
        call(9602, "2024-03-02T10:00:00Z", "Unbooked"),
        with_fields(call(9603, "2024-03-02T11:00:00Z", "Booked", job_id=5002), campaign=RADIO),
    ],
    "payroll/gross-pay-items": [
        pay(5801, 5001, "40.00"),
        pay(5802, 5002, "80.00"),
        pay(5803, 5002, "6.00", kind="InvoiceRelatedBonus"),
        pay(5804, 5002, "99.00", active=False),  # voided: not a cost
        pay(5805, 5003, "25.00"),
    ],
    "inventory/purchase-orders": [
        purchase_order(5701, 5002, "130.00", "Received"),
        purchase_order(5702, 5002, "999.00", "Canceled"),
    ],
    "accounting/ap-bills": [bill(5711, 5002, "130.00", purchase_order=5701), bill(5712, 5001, "15.00")],
    "marketing/campaigns": [rec(31, name="Radio", category=None, source=None, medium=None, isDefaultCampaign=False)],
    "marketing/costs": [
        {"id": 5601, "campaignId": 31, "year": 2024, "month": 2, "dailyCost": 10.0},  # a leap February
        {"id": 5602, "campaignId": 31, "year": 2024, "month": 4, "dailyCost": 5.0},
    ],
    "crm/leads": [with_fields(rec(5501, status="Open", campaignId=31), createdOn="2024-03-02T08:00:00Z")],
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
    # The changes reached these marts incrementally.
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


def test_job_costing(dashboard: sa.Engine) -> None:
    """Revenue against labour, materials at cost and other bills, per completion day and BU."""
    rows = mart_rows(dashboard, "job_costing", DASHBOARD_TENANT)
    money = (
        "revenue",
        "labour_cost",
        "materials_cost",
        "other_bill_cost",
        "purchased",
        "warranty_cost",
        "gross_margin",
    )
    assert_types(rows, money, ("completed_jobs",), ("gross_margin_rate", "warranty_cost_share"))

    def row(jobs: int, revenue: str, labour: str, materials: str, other: str, purchased: str, warranty: str) -> dict:
        margin = D(revenue) - D(labour) - D(materials) - D(other)
        return {
            "completed_jobs": jobs,
            "revenue": D(revenue),
            "labour_cost": D(labour),
            "materials_cost": D(materials),
            "other_bill_cost": D(other),
            "purchased": D(purchased),
            "warranty_cost": D(warranty),
            "gross_margin": margin,
            "gross_margin_rate": float(margin / D(revenue)),
            "warranty_cost_share": float(D(warranty) / D(revenue)),
        }

    assert rows == {
        # J1: 100.00 revenue; labour 40.00; its service item costs 0; bill 5712 (15.00, no purchase order).
        # Margin 100 - 40 - 0 - 15 = 45.00.
        (day("2024-03-01"), 10): row(1, "100.00", "40.00", "0", "15.00", "0", "0"),
        # J2: 300.00; labour 80.00 + 6.00 bonus (the voided 99.00 left out); its material at cost 120.00;
        # PO 5701 (130.00) is shown as purchased, its bill 5711 is for that PO, the canceled PO left out.
        # J3 (a warranty job): labour 25.00 → warranty cost 25.00. Margin 300 - 111 - 120 - 0 = 69.00.
        (day("2024-03-02"), 10): row(2, "300.00", "111.00", "120.00", "0", "130.00", "25.00"),
        # J5 60.00 and J6 nothing, no costs.
        (day("2024-04-05"), 10): row(2, "60.00", "0", "0", "0", "0", "0"),
    }


def test_marketing_roi(dashboard: sa.Engine) -> None:
    """Calls, leads, booked and completed jobs, revenue and daily cost per day and campaign."""
    rows = mart_rows(dashboard, "marketing_roi", DASHBOARD_TENANT)
    assert_types(
        rows,
        ("revenue", "cost", "cost_per_lead", "cost_per_booked_job"),
        ("calls", "booked_calls", "leads", "booked_jobs", "completed_jobs"),
        ("return_on_spend",),
    )
    measures = ("calls", "booked_calls", "leads", "booked_jobs", "completed_jobs")

    def row(revenue: str = "0", cost: str = "0", **counts: int) -> dict[str, Any]:
        figures: dict[str, Any] = {m: counts.get(m, 0) for m in measures}
        spent, earned = D(cost), D(revenue)
        return {
            **figures,
            "revenue": earned,
            "cost": spent,
            "cost_per_lead": spent / figures["leads"] if figures["leads"] else None,
            "cost_per_booked_job": spent / figures["booked_jobs"] if figures["booked_jobs"] else None,
            "return_on_spend": float((earned - spent) / spent) if spent else None,
        }

    february = {(date(2024, 2, d), 31): row(cost="10.00") for d in range(1, 30)}  # 29 days in 2024
    april = {(date(2024, 4, d), 31): row(cost="5.00") for d in range(1, 31)}
    expected: dict[tuple[Any, ...], dict[str, Any]] = {
        **february,
        **april,
        # Every job was created on 2024-01-02 (CREATED): J1 and J2 for Radio, J3-J6 without a campaign.
        (day("2024-01-02"), 31): row(booked_jobs=2),
        (day("2024-01-02"), None): row(booked_jobs=4),
        (day("2024-03-01"), 31): row("100.00", completed_jobs=1),  # J1
        # Radio: calls 9601 (Unbooked) and 9603 (Booked), lead 5501, J2 completed (300.00).
        (day("2024-03-02"), 31): row("300.00", calls=2, booked_calls=1, leads=1, completed_jobs=1),
        (day("2024-03-02"), None): row(calls=1, completed_jobs=1),  # call 9602; J3 (no revenue)
        # J5 and J6 (04-05) have no campaign.
        (day("2024-04-05"), None): row("60.00", completed_jobs=2),
    }
    assert rows == expected
