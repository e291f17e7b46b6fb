"""Golden tests of the KPI marts: a small hand-built ServiceTitan tenant, every number worked out by hand.

The records below are shaped like the ServiceTitan payloads of the raw datasets. They are loaded
into the raw tables the way a sync loads them (``raw_rows`` + ``upsert_rows``, deletions through
``mark_missing_deleted``), then ``build_tenant`` builds the hub tables and the marts. Every
expected value is a literal, derived from the KPI definitions (the marts' descriptions in
``st_pipeline/transform/marts.py`` and ``shared/reference/kpi-definitions.md``), with the
arithmetic in a comment; nothing here calls the code under test to compute an expectation.

The scenario (tenant 7001; the build's as-of day is 2024-04-15):

Business units 10 HVAC Service, 20 Plumbing, 30 HVAC Install. Technicians 101 Alice, 102 Bob,
103 Carol. Job types 301 Service Call (sold threshold 100), 302 Maintenance (threshold 0),
303 Warranty Visit (threshold 50, No Charge), 304 Install Consult (threshold 1000).

Jobs (all "Completed" unless said otherwise):
  J1 4001  loc 2001  BU 10  type 301  completed 2024-03-01  techs 101 + 102 (split; 101 on 2 visits)
           invoice 6001: 150 Income BU 10, 200 Income BU 30 (other BU), 25 Liability (not revenue);
           subtotal 375, tax 30, total 405, paid 200 → balance 205; dated 2024-03-16
           adjustment invoice 6002 (adjustmentToId 6001): -40.25 Income BU 10, dated 2024-03-10
           estimates: 7101 Sold 1200 on 2024-03-05 (later day than completion), 7102 Dismissed 800
  J2 4002  loc 2002  BU 20  type 302  completed 2024-03-01  tech 103 (102's assignment inactive)
           invoice 6003: 0.10 + 0.20 Income BU 20 (exact money); estimate 7106 Sold but inactive
  J3 4003  loc 2003  BU 10  type 301  completed 2024-03-02  tech 101; job No Charge, invoice 6004 of 0.00
           membership 8003 sold the same day at its location
  J4 4004  loc 2004  BU 10  type 303  completed 2024-03-02  tech 102; No Charge job type but invoiced
           80 ≥ threshold 50 (invoice 6005, its item has no BU); location covered by membership 8004
  J5 4005  loc 2005  BU 20  type 301  completed 2024-03-02  techs 103 + 102; invoice 6006 of 60 (< 100),
           voided invoice 6010 of 900 (inactive); estimates 7103 Open 500, 7104 Sold 40 on 2024-03-02
  J6 4006  loc 2001  BU 10  type 304  completed 2024-03-02  tech 101; no invoice; estimate 7105 Sold 1500
           on 2024-03-03; location covered by membership 8001 (no end date)
  J9 4009  loc 2005  BU 20  type 302  completed 2024-03-02  techs 102 + 103; invoice 6015 of 150
  J7 4007  loc 2003  BU 10  type 301  Scheduled (not completed), tech 102, invoice 6007 of 75,
           estimate 7107 Sold 250 on 2024-03-05
  J8 4008  loc 2002  BU 20  type 302  completed 2024-03-03 but inactive; tech 103, invoice 6008 of 500
  J10-J12 4010-4012  BU 20  type 302  completed 2024-03-03, nothing invoiced: J10 at 2006 (customer 1001's
           second location), J11 at 2007 (membership canceled later), J12 at 2008 (membership's last day)
Splits: J1 Alice 60 / Bob 40; J9 Bob 100 / Carol 0; other jobs have none (equal shares of assignees).
J3 (No Charge) also has an Open estimate 7108 of 300.
Non-job invoices: 6009 (2024-03-04, BU 30: 250 Income BU 20, 50 Income no BU, 35 Liability), 6012
(2024-02-14, 45.50 BU 10), 6013 (2024-01-15, 12.34 BU 30), 6014 (2024-04-20, after as-of, 99 BU 10),
6016 (2024-02-15, 20 BU 20), 6017 (2024-01-16, 7 BU 20), 6011 (2024-03-04, 70 BU 10, deleted).
Memberships: 8001 loc 2001 from 2024-01-15 open-ended; 8002 loc 2002 from 2024-04-01 (31 days after
J2); 8003 loc 2003 from 2024-03-02 (same day as J3); 8004 loc 2004 2023-06-01..2024-05-31; 8005 loc
2005 Canceled; 8006 loc 2005 from 2024-03-03 but inactive; 8007 loc 2005 from 2024-04-01 (30 days
after J5 and J9: sold on a later visit); 8008 loc 2002 expired 2024-02-29; 8009 loc 2007 canceled on
2024-03-20; 8010 loc 2008 to 2024-03-03. Each membership is its location's customer's (location 20xx →
customer 10xx).
Calls: 2024-03-01 Booked, Unbooked, Excused inbound + 1 outbound; 2024-03-02 Booked, Abandoned,
Booked (inactive), Unbooked (deleted), Booked, Unbooked.
Payments: 9001 200 (2024-03-18, partial on 6001), 9002 0.30 (2024-03-01), 9003 85 (2024-03-02, 80
applied to 6005, 5 unapplied), 9004 10 (2024-03-18, unapplied), 9005 1000 (deleted), 9006 55.55
(inactive).

A second tenant (7002) reuses the same record ids with other values: none of them may leak into
tenant 7001's numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.transform.build import build_tenant
from st_pipeline.transform.hubs import hub
from st_pipeline.transform.mart_build import mart_table
from st_pipeline.transform.marts import MARTS, MARTS_BY_NAME
from st_pipeline.transform.tables import hub_table
from st_pipeline.warehouse.loader import mark_missing_deleted, raw_rows, upsert_rows
from st_pipeline.warehouse.tables import raw_table
from st_pipeline_tests.conftest import POSTGRES_ADMIN_URL
from st_pipeline_tests.support import prepared_warehouse

TENANT = 7001
OTHER_TENANT = 7002
AS_OF = date(2024, 4, 15)
EXTRACTED_AT = datetime(2024, 4, 15, 6, 0, tzinfo=UTC)
DELETED_AT = datetime(2024, 4, 15, 7, 0, tzinfo=UTC)
CREATED = "2024-01-02T08:00:00.0000000Z"
MODIFIED = "2024-04-01T08:00:00.0000000Z"

D = Decimal


def rec(record_id: int, active: bool = True, **fields: Any) -> dict[str, Any]:
    """A ServiceTitan record: its fields plus ``id``, ``active``, ``createdOn`` and ``modifiedOn``."""
    return {"id": record_id, "active": active, "createdOn": CREATED, "modifiedOn": MODIFIED, **fields}


def gl(account_id: int, kind: str, name: str) -> dict[str, Any]:
    return {"id": account_id, "name": name, "type": kind}


INCOME = gl(9_004_000, "Income", "Service Income")
EQUIPMENT_INCOME = gl(9_004_200, "Income", "Equipment Sales")
LIABILITY = gl(9_002_100, "Liability", "Customer Deposits")  # a pass-through / deposit: not revenue


def item(
    item_id: int,
    total: str,
    bu: int | None,
    account: dict[str, Any] = INCOME,
    *,
    kind: str = "Service",
    sku: str = "Diagnostic",
    quantity: str = "1.00",
    price: str | None = None,
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": kind,
        "skuId": 810_000 + item_id % 1000,
        "skuName": sku,
        "displayName": sku,
        "quantity": quantity,
        "price": price if price is not None else total,
        "total": total,
        "cost": "0.00",
        "totalCost": "0.00",
        "businessUnit": None if bu is None else {"id": bu, "name": f"BU {bu}"},
        "generalLedgerAccount": account,
        "isChargeable": True,
        "taxable": True,
        "modifiedOn": MODIFIED,
    }


def invoice(
    invoice_id: int,
    *,
    job: int | None,
    bu: int,
    day: str,
    items: list[dict[str, Any]],
    sub_total: str,
    balance: str,
    sales_tax: str = "0.00",
    total: str | None = None,
    adjustment_to: int | None = None,
    customer: int = 1001,
    location: int | None = None,
    active: bool = True,
) -> dict[str, Any]:
    return rec(
        invoice_id,
        active,
        referenceNumber=str(invoice_id),
        invoiceDate=day,
        dueDate=day,
        job=None if job is None else {"id": job, "number": str(job), "type": "Service"},
        customer={"id": customer, "name": f"Customer {customer}"},
        location=None if location is None else {"id": location, "name": f"Location {location}"},
        businessUnit={"id": bu, "name": f"BU {bu}"},
        adjustmentToId=adjustment_to,
        membershipId=None,
        subTotal=sub_total,
        salesTax=sales_tax,
        total=total if total is not None else sub_total,
        balance=balance,
        discountTotal="0.00",
        paidOn=None,
        syncStatus="Pending",
        invoiceType=None,
        items=items,
    )


def payment(
    payment_id: int, day: str, total: str, applied: list[tuple[int, str]], unapplied: str = "0.00", active: bool = True
) -> dict[str, Any]:
    return rec(
        payment_id,
        active,
        date=day,
        type="Check",
        total=total,
        unappliedAmount=unapplied,
        referenceNumber=f"P{payment_id}",
        customer={"id": 1001, "name": "Customer 1001"},
        businessUnit=None,
        refundedPaymentId=None,
        appliedTo=[
            {"appliedTo": inv, "appliedAmount": amount, "appliedOn": day, "appliedBy": "office"}
            for inv, amount in applied
        ],
    )


def job(
    job_id: int,
    location: int,
    bu: int,
    job_type: int,
    completed: str | None,
    *,
    status: str = "Completed",
    no_charge: bool = False,
    customer: int = 1001,
    active: bool = True,
) -> dict[str, Any]:
    return rec(
        job_id,
        active,
        jobNumber=str(job_id),
        customerId=customer,
        locationId=location,
        businessUnitId=bu,
        jobTypeId=job_type,
        jobStatus=status,
        completedOn=completed,
        campaignId=None,
        noCharge=no_charge,
        priority="Normal",
        total=None,
        invoiceId=None,
        membershipId=None,
        soldById=None,
    )


def estimate(
    estimate_id: int, job_id: int | None, bu: int, status: str, sub_total: str, sold_on: str | None, active: bool = True
) -> dict[str, Any]:
    value = {"Open": 0, "Sold": 1, "Dismissed": 2}[status]
    return rec(
        estimate_id,
        active,
        name=f"Option {estimate_id}",
        jobId=job_id,
        customerId=1001,
        locationId=None,
        businessUnitId=bu,
        status={"value": value, "name": status},
        soldOn=sold_on,
        soldBy=None,
        subtotal=sub_total,
        tax="0.00",
        reviewStatus="None",
        items=[
            {
                "id": estimate_id * 10,
                "sku": {"id": 1, "name": "Option", "type": "Service"},
                "qty": "1.00",
                "unitRate": sub_total,
                "total": sub_total,
                "totalCost": "0.00",
                "chargeable": True,
                "membershipTypeId": None,
                "modifiedOn": MODIFIED,
            }
        ],
    )


def membership(
    membership_id: int,
    location: int,
    valid_from: str,
    valid_to: str | None,
    status: str = "Active",
    active: bool = True,
    *,
    customer: int | None = None,
    canceled: str | None = None,
) -> dict[str, Any]:
    return rec(
        membership_id,
        active,
        customerId=customer if customer is not None else 1000 + location % 1000,  # the location's customer
        locationId=location,
        membershipTypeId=501,
        businessUnitId=10,
        status=status,
        followUpStatus="NotAttempted",
        **{"from": valid_from, "to": valid_to},
        soldById=None,
        cancellationDate=canceled,
        billingFrequency="Monthly",
    )


def split(split_id: int, job_id: int, technician: int, percent: float) -> dict[str, Any]:
    return rec(split_id, jobId=job_id, technicianId=technician, split=percent)


def call(
    call_id: int,
    created: str,
    call_type: str | None,
    direction: str = "Inbound",
    job_id: int | None = None,
    active: bool = True,
) -> dict[str, Any]:
    record = rec(
        call_id,
        active,
        direction=direction,
        type=call_type,
        status="Completed",
        duration="00:03:12",
        **{"from": "+15555550100", "to": "+15555550199"},
        customer={"id": 1001, "name": "Customer 1001"},
        location=None,
        job=None if job_id is None else {"id": job_id},
        campaign=None,
        agent={"id": 77},
        reason=None,
    )
    record["createdOn"] = created
    return record


def appointment(appointment_id: int, job_id: int, start: str) -> dict[str, Any]:
    return rec(
        appointment_id,
        jobId=job_id,
        customerId=1001,
        appointmentNumber=f"{job_id}-{appointment_id}",
        status="Done",
        start=start,
        end=start,
        arrivalWindowStart=None,
        arrivalWindowEnd=None,
        isConfirmed=True,
    )


def assignment(
    assignment_id: int, appointment_id: int, job_id: int, technician: int, active: bool = True
) -> dict[str, Any]:
    return rec(
        assignment_id,
        active,
        appointmentId=appointment_id,
        jobId=job_id,
        technicianId=technician,
        technicianName=f"Tech {technician}",
        status="Done",
        assignedOn=CREATED,
        isPaused=False,
    )


def address(street: str, city: str, lat: float, lon: float) -> dict[str, Any]:
    return {
        "street": street,
        "unit": None,
        "city": city,
        "state": "IL",
        "zip": "62701",
        "country": "USA",
        "latitude": lat,
        "longitude": lon,
    }


# ------------------------------------------------------------------------------------------------
# Tenant 7001
# ------------------------------------------------------------------------------------------------

TENANT_RECORDS: dict[str, list[dict[str, Any]]] = {
    "settings/business-units": [
        rec(10, name="HVAC Service", officialName="HVAC Service", currency="USD", defaultTaxRate="0.08"),
        rec(20, name="Plumbing", officialName="Plumbing", currency="USD", defaultTaxRate="0.08"),
        rec(30, name="HVAC Install", officialName="HVAC Install", currency="USD", defaultTaxRate="0.08"),
    ],
    "settings/technicians": [
        # 32.123456: digits beyond the fourth decimal are cut (not rounded) in the hub.
        rec(101, name="Alice Able", firstName="Alice", lastName="Able", businessUnitId=10, hourlyRate="32.123456"),
        rec(102, name="Bob Baker", firstName="Bob", lastName="Baker", businessUnitId=10, hourlyRate="30.00"),
        rec(103, name="Carol Cole", firstName="Carol", lastName="Cole", businessUnitId=20, hourlyRate="31.00"),
    ],
    "crm/customers": [
        rec(
            c,
            name=f"Customer {c}",
            type="Residential",
            balance="0.00",
            address=address("1 Main St", "Springfield", 39.78, -89.65),
        )
        for c in (1001, 1002, 1003, 1004, 1005, 1007, 1008)
    ],
    "crm/locations": [
        rec(
            2001,
            customerId=1001,
            name="Home",
            zoneId=5,
            taxZoneId=None,
            address={
                "street": "12 Elm St",
                "unit": "Apt 3",
                "city": "Springfield",
                "state": "IL",
                "zip": "62701",
                "country": "USA",
                "latitude": 39.7817,
                "longitude": -89.6501,
            },
        ),
        *(
            rec(
                loc,
                customerId=1000 + loc % 1000,
                name="Home",
                zoneId=5,
                taxZoneId=None,
                address=address(f"{loc} Oak Ave", "Springfield", 39.8, -89.6),
            )
            for loc in (2002, 2003, 2004, 2005, 2007, 2008)
        ),
        # Customer 1001's second location (a member at 2001).
        rec(
            2006,
            customerId=1001,
            name="Cabin",
            zoneId=5,
            taxZoneId=None,
            address=address("6 Lake Rd", "Springfield", 39.8, -89.6),
        ),
    ],
    "memberships/membership-types": [
        rec(501, name="Gold Plan", displayName="Gold Plan", revenueRecognitionMode="Prorated"),
    ],
    "jpm/job-types": [
        # soldThreshold as a JSON number, as ServiceTitan sends it.
        rec(301, name="Service Call", soldThreshold=100.0, noCharge=False, priority="Normal", duration=3600),
        rec(302, name="Maintenance", soldThreshold=0.0, noCharge=False, priority="Normal", duration=3600),
        rec(303, name="Warranty Visit", soldThreshold=50.0, noCharge=True, priority="Normal", duration=3600),
        rec(304, name="Install Consult", soldThreshold=1000.0, noCharge=False, priority="Normal", duration=3600),
    ],
    "jpm/jobs": [
        job(4001, 2001, 10, 301, "2024-03-01T15:00:00.1234567Z"),
        job(4002, 2002, 20, 302, "2024-03-01T18:30:00.0000000Z", customer=1002),
        job(4003, 2003, 10, 301, "2024-03-02T10:00:00.0000000Z", no_charge=True, customer=1003),
        job(4004, 2004, 10, 303, "2024-03-02T12:00:00.0000000Z", customer=1004),
        job(4005, 2005, 20, 301, "2024-03-02T14:00:00.0000000Z", customer=1005),
        job(4006, 2001, 10, 304, "2024-03-02T09:00:00.0000000Z"),
        job(4007, 2003, 10, 301, None, status="Scheduled", customer=1003),
        job(4008, 2002, 20, 302, "2024-03-03T11:00:00.0000000Z", customer=1002, active=False),
        job(4009, 2005, 20, 302, "2024-03-02T16:00:00.0000000Z", customer=1005),
        job(4010, 2006, 20, 302, "2024-03-03T10:00:00.0000000Z", customer=1001),  # member at another location
        job(4011, 2007, 20, 302, "2024-03-03T11:00:00.0000000Z", customer=1007),  # canceled later: in force
        job(4012, 2008, 20, 302, "2024-03-03T12:00:00.0000000Z", customer=1008),  # the membership's last day
    ],
    "jpm/appointments": [
        appointment(5001, 4001, "2024-02-28T15:00:00Z"),
        appointment(5002, 4001, "2024-03-01T14:00:00Z"),
        appointment(5003, 4002, "2024-03-01T17:00:00Z"),
        appointment(5004, 4003, "2024-03-02T09:00:00Z"),
        appointment(5005, 4004, "2024-03-02T11:00:00Z"),
        appointment(5006, 4005, "2024-03-02T13:00:00Z"),
        appointment(5007, 4006, "2024-03-02T08:00:00Z"),
        appointment(5008, 4007, "2024-03-09T08:00:00Z"),
        appointment(5009, 4008, "2024-03-03T10:00:00Z"),
        appointment(5010, 4009, "2024-03-02T15:00:00Z"),
    ],
    "dispatch/appointment-assignments": [
        assignment(5101, 5001, 4001, 101),  # J1, first visit: Alice and Bob (a split job)
        assignment(5102, 5001, 4001, 102),
        assignment(5103, 5002, 4001, 101),  # J1, second visit: Alice again (credited once)
        assignment(5104, 5003, 4002, 103),
        assignment(5112, 5003, 4002, 102, active=False),  # unassigned: Bob is not credited with J2
        assignment(5105, 5004, 4003, 101),
        assignment(5106, 5005, 4004, 102),
        assignment(5107, 5006, 4005, 103),
        assignment(5111, 5006, 4005, 102),
        assignment(5108, 5007, 4006, 101),
        assignment(5109, 5008, 4007, 102),  # J7 not completed
        assignment(5110, 5009, 4008, 103),  # J8 inactive
        assignment(5113, 5010, 4009, 102),
        assignment(5114, 5010, 4009, 103),
    ],
    "accounting/invoices": [
        invoice(
            6001,
            job=4001,
            bu=10,
            day="2024-03-16T12:00:00Z",
            location=2001,
            items=[
                item(60011, "150.00", 10, INCOME, sku="Diagnostic"),
                item(
                    60012,
                    "200.00",
                    30,
                    EQUIPMENT_INCOME,
                    kind="Equipment",
                    sku="Condenser Fan Motor",
                    quantity="2.00",
                    price="100.00",
                ),
                item(60013, "25.00", 10, LIABILITY, kind="Material", sku="Permit Fee"),
            ],
            sub_total="375.00",
            sales_tax="30.00",
            total="405.00",
            balance="205.00",
        ),
        invoice(
            6002,
            job=4001,
            bu=10,
            day="2024-03-10T09:00:00Z",
            adjustment_to=6001,
            items=[
                item(60021, "-40.25", 10, INCOME, kind="PriceModifier", sku="Credit Adjustment"),
            ],
            sub_total="-40.25",
            balance="-40.25",
        ),
        invoice(
            6003,
            job=4002,
            bu=20,
            day="2024-03-01T19:00:00Z",
            customer=1002,
            items=[
                item(60031, "0.10", 20),
                item(60032, "0.20", 20),
            ],
            sub_total="0.30",
            balance="0.00",
        ),
        invoice(
            6004,
            job=4003,
            bu=10,
            day="2024-03-02T10:30:00Z",
            customer=1003,
            items=[
                item(60041, "0.00", 10, sku="No Charge Visit"),
            ],
            sub_total="0.00",
            balance="0.00",
        ),
        invoice(
            6005,
            job=4004,
            bu=10,
            day="2024-03-02T12:30:00Z",
            customer=1004,
            items=[
                item(60051, "80.00", None),  # no business unit on the item: the job's (= the invoice's) BU 10
            ],
            sub_total="80.00",
            balance="0.00",
        ),
        invoice(
            6006,
            job=4005,
            bu=20,
            day="2024-03-15T10:00:00Z",
            customer=1005,
            items=[
                item(60061, "60.00", 20),
            ],
            sub_total="60.00",
            balance="60.00",
        ),
        invoice(
            6007,
            job=4007,
            bu=10,
            day="2024-03-05T10:00:00Z",
            customer=1003,
            items=[
                item(60071, "75.00", 10),
            ],
            sub_total="75.00",
            balance="0.00",
        ),
        invoice(
            6008,
            job=4008,
            bu=20,
            day="2024-03-03T12:00:00Z",
            customer=1002,
            items=[
                item(60081, "500.00", 20),
            ],
            sub_total="500.00",
            balance="0.00",
        ),
        invoice(
            6009,
            job=None,
            bu=30,
            day="2024-03-04T11:00:00Z",
            items=[
                item(60091, "250.00", 20),
                item(60092, "50.00", None),  # no business unit on the item: the invoice's BU 30
                item(60093, "35.00", 20, LIABILITY, sku="Deposit"),
            ],
            sub_total="335.00",
            balance="335.00",
        ),
        invoice(
            6010,
            job=4005,
            bu=20,
            day="2024-03-02T15:00:00Z",
            customer=1005,
            active=False,
            items=[
                item(60101, "900.00", 20),
            ],
            sub_total="900.00",
            balance="900.00",
        ),
        invoice(
            6011,
            job=None,
            bu=10,
            day="2024-03-04T12:00:00Z",
            items=[  # deleted in ServiceTitan
                item(60111, "70.00", 10),
            ],
            sub_total="70.00",
            balance="70.00",
        ),
        invoice(
            6012,
            job=None,
            bu=10,
            day="2024-02-14T08:00:00Z",
            items=[item(60121, "45.50", 10)],
            sub_total="45.50",
            balance="45.50",
        ),
        invoice(
            6013,
            job=None,
            bu=30,
            day="2024-01-15T23:00:00Z",
            items=[item(60131, "12.34", 30)],
            sub_total="12.34",
            balance="12.34",
        ),
        invoice(
            6014,
            job=None,
            bu=10,
            day="2024-04-20T10:00:00Z",
            items=[item(60141, "99.00", 10)],
            sub_total="99.00",
            balance="99.00",
        ),
        invoice(
            6015,
            job=4009,
            bu=20,
            day="2024-03-02T17:00:00Z",
            customer=1005,
            items=[item(60151, "150.00", 20)],
            sub_total="150.00",
            balance="150.00",
        ),
        invoice(
            6016,
            job=None,
            bu=20,
            day="2024-02-15T00:00:00Z",
            items=[item(60161, "20.00", 20)],
            sub_total="20.00",
            balance="20.00",
        ),
        invoice(
            6017,
            job=None,
            bu=20,
            day="2024-01-16T12:00:00Z",
            items=[item(60171, "7.00", 20)],
            sub_total="7.00",
            balance="7.00",
        ),
    ],
    "accounting/payments": [
        payment(9001, "2024-03-18T10:00:00Z", "200.00", [(6001, "200.00")]),  # partial: 405 - 200 = 205 open
        payment(9002, "2024-03-01T19:05:00Z", "0.30", [(6003, "0.30")]),
        payment(9003, "2024-03-02T12:30:00Z", "85.00", [(6005, "80.00")], unapplied="5.00"),
        payment(9004, "2024-03-18T16:00:00Z", "10.00", [], unapplied="10.00"),
        payment(9005, "2024-03-18T17:00:00Z", "1000.00", [(6006, "60.00")]),  # deleted in ServiceTitan
        payment(9006, "2024-03-19T09:00:00Z", "55.55", [], unapplied="55.55", active=False),  # voided
    ],
    "sales/estimates": [
        estimate(7101, 4001, 30, "Sold", "1200.00", "2024-03-05T14:00:00.0000000Z"),  # sold 4 days after J1
        estimate(7102, 4001, 10, "Dismissed", "800.00", None),
        estimate(7103, 4005, 20, "Open", "500.00", None),
        estimate(7104, 4005, 20, "Sold", "40.00", "2024-03-02T13:00:00.0000000Z"),
        estimate(7105, 4006, 30, "Sold", "1500.00", "2024-03-03T09:30:00.0000000Z"),
        estimate(7106, 4002, 20, "Sold", "300.00", "2024-03-05T10:00:00.0000000Z", active=False),
        estimate(7107, 4007, 10, "Sold", "250.00", "2024-03-05T10:00:00.0000000Z"),
        estimate(7108, 4003, 10, "Open", "300.00", None),  # on No Charge J3: not a sales opportunity
    ],
    "memberships/memberships": [
        membership(8001, 2001, "2024-01-15T00:00:00Z", None),
        membership(8002, 2002, "2024-04-01T00:00:00Z", "2025-03-31T00:00:00Z"),  # 31 days after J2
        membership(8003, 2003, "2024-03-02T16:00:00Z", "2025-03-01T00:00:00Z"),  # same day as J3
        membership(8004, 2004, "2023-06-01T00:00:00Z", "2024-05-31T00:00:00Z"),
        membership(8005, 2005, "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z", status="Canceled"),
        membership(8006, 2005, "2024-03-03T00:00:00Z", "2025-03-02T00:00:00Z", active=False),
        membership(8007, 2005, "2024-04-01T08:00:00Z", "2025-03-31T00:00:00Z"),  # 30 days after J5, J9
        membership(8008, 2002, "2023-03-01T00:00:00Z", "2024-02-29T00:00:00Z", status="Expired"),
        # Canceled on 2024-03-20, after J11's day: in force on 2024-03-03.
        membership(
            8009,
            2007,
            "2024-01-01T00:00:00Z",
            "2024-12-31T00:00:00Z",
            status="Canceled",
            canceled="2024-03-20T15:00:00Z",
        ),
        membership(8010, 2008, "2023-03-04T00:00:00Z", "2024-03-03T00:00:00Z"),  # J12's day is its last (to)
    ],
    "payroll/jobs/splits": [
        split(8501, 4001, 101, 60.0),  # J1: Alice 60 %, Bob 40 %
        split(8502, 4001, 102, 40.0),
        split(8503, 4009, 102, 100.0),  # J9: Bob 100 %, Carol 0 % (not credited)
        split(8504, 4009, 103, 0.0),
    ],
    "telecom/calls": [
        call(9101, "2024-03-01T14:00:00.0000000Z", "Booked", job_id=4001),
        call(9102, "2024-03-01T15:30:00.0000000Z", "Unbooked"),
        call(9103, "2024-03-01T16:00:00.0000000Z", "Excused"),
        call(9104, "2024-03-01T17:00:00.0000000Z", "Booked", direction="Outbound", job_id=4002),
        call(9105, "2024-03-02T09:00:00.0000000Z", "Booked", job_id=4005),
        call(9106, "2024-03-02T09:30:00.0000000Z", "Abandoned"),
        call(9107, "2024-03-02T10:00:00.0000000Z", "Booked", active=False),
        call(9108, "2024-03-02T11:00:00.0000000Z", "Unbooked"),  # deleted in ServiceTitan
        call(9109, "2024-03-02T12:00:00.0000000Z", "Booked", job_id=4009),
        call(9110, "2024-03-02T13:00:00.0000000Z", "Unbooked"),
    ],
}

# Records a later complete listing no longer returned: flagged deleted (deleted_at) by the loader.
DELETED: dict[str, set[int]] = {
    "accounting/invoices": {6011},
    "accounting/payments": {9005},
    "telecom/calls": {9108},
}

# The same ids in another tenant, with other values: a leak across tenants would change 7001's numbers.
OTHER_TENANT_RECORDS: dict[str, list[dict[str, Any]]] = {
    "settings/business-units": [rec(10, name="Other BU")],
    "settings/technicians": [rec(101, name="Other Tech", businessUnitId=10)],
    "crm/customers": [rec(1001, name="Other Customer")],
    "crm/locations": [rec(2002, customerId=1001, name="Other"), rec(2001, customerId=1001, name="Other")],
    "memberships/membership-types": [rec(501, name="Other Plan")],
    "jpm/job-types": [rec(301, name="Other", soldThreshold=100.0, noCharge=False)],
    "jpm/jobs": [job(4001, 2002, 10, 301, "2024-03-01T15:00:00Z"), job(4003, 2002, 10, 301, "2024-03-02T10:00:00Z")],
    "jpm/appointments": [appointment(5001, 4001, "2024-03-01T14:00:00Z")],
    "dispatch/appointment-assignments": [assignment(5101, 5001, 4001, 101), assignment(5105, 5001, 4003, 101)],
    "accounting/invoices": [
        invoice(
            6001,
            job=4001,
            bu=10,
            day="2024-03-01T16:00:00Z",
            items=[item(60011, "999.00", 10)],
            sub_total="999.00",
            balance="999.00",
        ),
        invoice(
            6004,
            job=4003,
            bu=10,
            day="2024-03-02T16:00:00Z",
            items=[item(60041, "500.00", 10)],
            sub_total="500.00",
            balance="500.00",
        ),
    ],
    "accounting/payments": [payment(9001, "2024-03-18T10:00:00Z", "1.00", [(6001, "1.00")])],
    "sales/estimates": [
        estimate(7101, 4001, 30, "Sold", "5.00", "2024-03-05T14:00:00Z"),
        estimate(7103, 4003, 10, "Sold", "700.00", "2024-03-02T14:00:00Z"),
    ],
    "memberships/memberships": [
        membership(8002, 2002, "2024-03-01T00:00:00Z", None, customer=1001),
        membership(8007, 2005, "2024-03-02T00:00:00Z", None, customer=1005),
    ],
    "telecom/calls": [call(9102, "2024-03-01T15:30:00Z", "Booked"), call(9106, "2024-03-02T09:30:00Z", "Booked")],
}


def load_tenant(
    engine: sa.Engine,
    tenant_id: int,
    records: dict[str, list[dict[str, Any]]],
    deleted: dict[str, set[int]] | None = None,
) -> None:
    """Load records as a sync would: upserted into the raw tables, then the missing ones flagged deleted."""
    catalogue = load_catalogue()
    with engine.begin() as conn:
        for key, dataset_records in records.items():
            table = raw_table(catalogue.dataset(key))
            upsert_rows(conn, table, raw_rows(tenant_id, dataset_records, extracted_at=EXTRACTED_AT, run_id="golden"))
        for key, ids in (deleted or {}).items():
            table = raw_table(catalogue.dataset(key))
            seen = {r["id"] for r in records[key]} - ids
            assert mark_missing_deleted(conn, table, tenant_id, seen, at=DELETED_AT) == len(ids)


def datasets_of(*record_sets: dict[str, list[dict[str, Any]]]) -> list[Any]:
    catalogue = load_catalogue()
    return [catalogue.dataset(key) for key in dict.fromkeys(k for records in record_sets for k in records)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """A warehouse of each kind with both tenants loaded and built (a fresh database of its own)."""
    admin = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('golden') / 'warehouse.db'}"
    else:
        name = f"st_pipeline_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = prepared_warehouse(url, datasets_of(TENANT_RECORDS, OTHER_TENANT_RECORDS))
    try:
        load_tenant(engine, OTHER_TENANT, OTHER_TENANT_RECORDS)
        load_tenant(engine, TENANT, TENANT_RECORDS, DELETED)
        build_tenant(engine, OTHER_TENANT, "golden-other", as_of=AS_OF)
        built = build_tenant(engine, TENANT, "golden", as_of=AS_OF)
        assert sorted(m.table for m in built.marts) == sorted(m.table_name for m in MARTS)
        yield engine
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def mart_rows(engine: sa.Engine, name: str, tenant_id: int = TENANT) -> dict[tuple[Any, ...], dict[str, Any]]:
    """A mart's rows of the tenant: {key after tenant_id: {other column: value}}."""
    mart = MARTS_BY_NAME[name]
    table = mart_table(mart)
    key = [k for k in mart.key if k != "tenant_id"]
    values = [c.name for c in mart.columns if c.name not in mart.key]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id)).mappings().all()
    result = {tuple(r[k] for k in key): {v: r[v] for v in values} for r in rows}
    assert len(result) == len(rows)
    return result


def assert_types(
    rows: dict[tuple[Any, ...], dict[str, Any]],
    money: tuple[str, ...],
    counts: tuple[str, ...],
    rates: tuple[str, ...] = (),
) -> None:
    """Money comes back as Decimal (exact), counts as int, rates as float or None."""
    for row in rows.values():
        for column in money:  # (None only where a derived amount has nothing to divide by)
            assert row[column] is None or isinstance(row[column], Decimal), (column, row[column])
        for column in counts:
            assert isinstance(row[column], int) and not isinstance(row[column], bool), (column, row[column])
        for column in rates:
            assert row[column] is None or isinstance(row[column], float), (column, row[column])


def day(text: str) -> date:
    return date.fromisoformat(text)


# ------------------------------------------------------------------------------------------------
# Marts
# ------------------------------------------------------------------------------------------------


def test_revenue_by_business_unit(warehouse: sa.Engine) -> None:
    """Completed revenue: income items of completed jobs' invoices, by job completion day and item BU
    (else the job's); adjustment invoices apart, and non-job invoices, both by invoice date."""

    def row(completed: str = "0", non_job: str = "0", adjustment: str = "0", jobs: int = 0) -> dict[str, Any]:
        # ``jobs``: the completed jobs with revenue in the row, for the reader (not a mart column).
        total = D(completed) + D(non_job) + D(adjustment)
        return {
            "completed_revenue": D(completed),
            "non_job_revenue": D(non_job),
            "adjustment_revenue": D(adjustment),
            "total_revenue": total,
        }

    expected = {
        # J1's invoice 6001: 150 on BU 10 (item BU); 200 on BU 30 (the item's BU, not the job's);
        # 25 Liability is not revenue; adjustment 6002 is not completed revenue. J1 credits both rows.
        (day("2024-03-01"), 10): row(completed="150.00", jobs=1),
        (day("2024-03-01"), 30): row(completed="200.00", jobs=1),
        # J2's invoice 6003: 0.10 + 0.20 = 0.30 exactly.
        (day("2024-03-01"), 20): row(completed="0.30", jobs=1),
        # J3 (no charge) 0.00 + J4 80.00 (item without BU → job's BU 10) = 80.00; J6 has no invoice.
        (day("2024-03-02"), 10): row(completed="80.00", jobs=2),
        # J5 60.00 (voided 6010's 900 left out) + J9 150.00 = 210.00.
        (day("2024-03-02"), 20): row(completed="210.00", jobs=2),
        # Non-job 6009 on 2024-03-04: item BU 20 250.00; item without BU → invoice BU 30 50.00;
        # 35.00 Liability left out. Deleted 6011 (70.00, BU 10) left out.
        (day("2024-03-04"), 20): row(non_job="250.00"),
        (day("2024-03-04"), 30): row(non_job="50.00"),
        # Adjustment 6002 of J1: -40.25, by its invoice date 2024-03-10, BU 10.
        (day("2024-03-10"), 10): row(adjustment="-40.25"),
        # Other non-job invoices by invoice date: 6012, 6013, 6014, 6016, 6017.
        (day("2024-02-14"), 10): row(non_job="45.50"),
        (day("2024-01-15"), 30): row(non_job="12.34"),
        (day("2024-04-20"), 10): row(non_job="99.00"),
        (day("2024-02-15"), 20): row(non_job="20.00"),
        (day("2024-01-16"), 20): row(non_job="7.00"),
        # Not anywhere: J7 not completed (6007, 75.00); J8 inactive (6008, 500.00).
    }
    rows = mart_rows(warehouse, "revenue_by_business_unit")
    assert_types(rows, ("completed_revenue", "non_job_revenue", "adjustment_revenue", "total_revenue"), ())
    assert rows == expected
    # Exactly 0.3, where floats would give 0.30000000000000004.
    assert rows[(day("2024-03-01"), 20)]["completed_revenue"] == D("0.3")
    assert 0.1 + 0.2 != 0.3
    # Totals: completed 150 + 200 + 0.30 + 80 + 210 = 640.30; non-job 250 + 50 + 45.50 + 12.34 + 99
    # + 20 + 7 = 483.84; adjustment -40.25.
    assert sum(r["completed_revenue"] for r in rows.values()) == D("640.30")
    assert sum(r["non_job_revenue"] for r in rows.values()) == D("483.84")
    assert sum(r["total_revenue"] for r in rows.values()) == D("1083.89")  # 640.30 + 483.84 - 40.25


def test_sales(warehouse: sa.Engine) -> None:
    """Sold estimates by sold-on day and the estimate's BU (not the job's completion day)."""
    expected = {
        (day("2024-03-02"), 20): {"sold_estimates": 1, "sales": D("40.00")},  # 7104 on J5
        (day("2024-03-03"), 30): {"sold_estimates": 1, "sales": D("1500.00")},  # 7105, J6 completed 03-02
        (day("2024-03-05"), 30): {"sold_estimates": 1, "sales": D("1200.00")},  # 7101, J1 completed 03-01
        (day("2024-03-05"), 10): {"sold_estimates": 1, "sales": D("250.00")},  # 7107 on J7 (not completed)
        # Not counted: 7102 Dismissed, 7103 Open, 7106 Sold but inactive (300.00).
    }
    rows = mart_rows(warehouse, "sales")
    assert_types(rows, ("sales",), ("sold_estimates",))
    assert rows == expected


def test_job_conversion(warehouse: sa.Engine) -> None:
    """Opportunities, conversion, average ticket and close rate per completion day and job BU."""
    expected = {
        # J1: invoiced 375.00 (6001's subtotal; adjustment 6002 left out) ≥ 100 → converted.
        # Estimates 7101 (Sold 1200) + 7102 → sales opportunity; 1200 ≥ 100 → closed.
        (day("2024-03-01"), 10): {
            "completed_jobs": 1,
            "opportunities": 1,
            "converted": 1,
            "conversion_rate": 1 / 1,
            "invoiced_subtotal": D("375.00"),
            # Revenue: 150 + 200 income items; the 25.00 permit fee (Liability) is not revenue.
            "revenue": D("350.00"),
            "jobs_with_revenue": 1,
            "average_ticket": D("350.00"),  # 350 / 1 (not the subtotal's 375)
            "average_ticket_jobs_with_revenue": D("350.00"),
            "sales_opportunities": 1,
            "closed": 1,
            "close_rate": 1 / 1,
        },
        # J2: invoiced 0.30 > 0 and ≥ threshold 0 → converted; its only estimate (7106) is inactive.
        (day("2024-03-01"), 20): {
            "completed_jobs": 1,
            "opportunities": 1,
            "converted": 1,
            "conversion_rate": 1 / 1,
            "invoiced_subtotal": D("0.30"),
            "revenue": D("0.30"),
            "jobs_with_revenue": 1,
            "average_ticket": D("0.30"),  # 0.30 / 1
            "average_ticket_jobs_with_revenue": D("0.30"),
            "sales_opportunities": 0,
            "closed": 0,
            "close_rate": None,  # 0 / 0
        },
        # J3: job No Charge, invoiced 0 → not an opportunity. J4: job type No Charge but 80 ≥ 50 →
        # opportunity and converted. J6: 0 invoiced < 1000 → opportunity, not converted; estimate
        # 7105 Sold 1500 ≥ 1000 → sales opportunity, closed.
        (day("2024-03-02"), 10): {
            "completed_jobs": 3,
            "opportunities": 2,
            "converted": 1,
            "conversion_rate": 1 / 2,
            "invoiced_subtotal": D("80.00"),  # 0.00 + 80.00 + 0.00
            "revenue": D("80.00"),  # J3 0.00, J4 80.00, J6 none
            "jobs_with_revenue": 1,  # J4 only
            "average_ticket": D("26.6666"),  # 80 / 3 = 26.66666… cut to 4 decimals (not rounded to …67)
            "average_ticket_jobs_with_revenue": D("80.00"),  # 80 / 1
            "sales_opportunities": 1,
            "closed": 1,
            "close_rate": 1 / 1,
        },
        # J5: 60 < 100 (voided 900 left out) → opportunity, not converted; estimates 7103 Open 500 and
        # 7104 Sold 40 < 100 → sales opportunity, not closed. J9: 150 ≥ 0 → converted.
        (day("2024-03-02"), 20): {
            "completed_jobs": 2,
            "opportunities": 2,
            "converted": 1,
            "conversion_rate": 1 / 2,
            "invoiced_subtotal": D("210.00"),  # 60 + 150
            "revenue": D("210.00"),
            "jobs_with_revenue": 2,
            "average_ticket": D("105.00"),  # 210 / 2
            "average_ticket_jobs_with_revenue": D("105.00"),
            "sales_opportunities": 1,
            "closed": 0,
            "close_rate": 0 / 1,
        },
        # J10, J11, J12 (type 302, threshold 0): nothing invoiced → opportunities, not converted.
        (day("2024-03-03"), 20): {
            "completed_jobs": 3,
            "opportunities": 3,
            "converted": 0,
            "conversion_rate": 0 / 3,
            "invoiced_subtotal": D("0"),
            "revenue": D("0"),
            "jobs_with_revenue": 0,
            "average_ticket": D("0"),  # 0 / 3
            "average_ticket_jobs_with_revenue": None,  # 0 / 0
            "sales_opportunities": 0,
            "closed": 0,
            "close_rate": None,
        },
        # J7 is not completed and J8 inactive: no row for either.
    }
    rows = mart_rows(warehouse, "job_conversion")
    assert_types(
        rows,
        ("invoiced_subtotal", "revenue", "average_ticket", "average_ticket_jobs_with_revenue"),
        ("completed_jobs", "opportunities", "converted", "jobs_with_revenue", "sales_opportunities", "closed"),
        ("conversion_rate", "close_rate"),
    )
    assert rows == expected


def test_technician_performance(warehouse: sa.Engine) -> None:
    """Credited by the job splits: once per technician with a split above zero, revenue and sales weighted
    by the split; a job without splits falls back to its active assignees in equal shares."""

    def row(
        jobs: int,
        opportunities: int,
        converted: int,
        sales_opportunities: int,
        closed: int,
        revenue: str,
        sold: str,
        revenue_unweighted: str,
        sold_unweighted: str,
    ) -> dict[str, Any]:
        return {
            "completed_jobs": jobs,
            "opportunities": opportunities,
            "converted": converted,
            "sales_opportunities": sales_opportunities,
            "closed": closed,
            "revenue": D(revenue),
            "sold_on_jobs": D(sold),
            "revenue_unweighted": D(revenue_unweighted),
            "sold_on_jobs_unweighted": D(sold_unweighted),
            "conversion_rate": converted / opportunities if opportunities else None,
            "close_rate": closed / sales_opportunities if sales_opportunities else None,
            "job_average": D(revenue) / jobs,
        }

    expected = {
        # J1 (BU 10): revenue 350.00 (150 + 200 income items), sold 1200.00; splits Alice 60 %, Bob 40 %
        # (Alice's second visit changes nothing): Alice 210.00 and 720.00, Bob 140.00 and 480.00.
        (day("2024-03-01"), 101, 10): row(1, 1, 1, 1, 1, "210.00", "720.00", "350.00", "1200.00"),
        (day("2024-03-01"), 102, 10): row(1, 1, 1, 1, 1, "140.00", "480.00", "350.00", "1200.00"),
        # J2 (BU 20): no splits; Carol is its one active assignee (Bob's assignment is inactive): in full.
        (day("2024-03-01"), 103, 20): row(1, 1, 1, 0, 0, "0.30", "0", "0.30", "0"),
        # Alice, BU 10, no splits: J3 (No Charge, its Open estimate not a sales opportunity) and J6
        # (opportunity, not converted; sold 1500 ≥ 1000: closed; no revenue).
        (day("2024-03-02"), 101, 10): row(2, 1, 0, 1, 1, "0", "1500.00", "0", "1500.00"),
        # Bob, BU 10: J4 (No Charge type but 80 ≥ 50: opportunity, converted; revenue 80).
        (day("2024-03-02"), 102, 10): row(1, 1, 1, 0, 0, "80.00", "0", "80.00", "0"),
        # Bob, BU 20: J5 without splits, shared with Carol: half of 60.00 and of 40.00 sold (30.00, 20.00);
        # J9 by split 100 %: 150.00. Revenue 30 + 150 = 180.00; unweighted 60 + 150 = 210.00.
        (day("2024-03-02"), 102, 20): row(2, 2, 1, 1, 0, "180.00", "20.00", "210.00", "40.00"),
        # Carol, BU 20: J5's other half; J9 (split 0 %) is not hers. J8 is inactive.
        (day("2024-03-02"), 103, 20): row(1, 1, 0, 1, 0, "30.00", "20.00", "60.00", "40.00"),
    }
    rows = mart_rows(warehouse, "technician_performance")
    assert_types(
        rows,
        ("revenue", "sold_on_jobs", "revenue_unweighted", "sold_on_jobs_unweighted", "job_average"),
        ("completed_jobs", "opportunities", "converted", "sales_opportunities", "closed"),
        ("conversion_rate", "close_rate"),
    )
    assert rows == expected
    # The 60/40 split adds up to the job: 210.00 + 140.00 = 350.00.
    assert rows[(day("2024-03-01"), 101, 10)]["revenue"] + rows[(day("2024-03-01"), 102, 10)]["revenue"] == D("350")


def test_membership_conversion(warehouse: sa.Engine) -> None:
    """Opportunities: completed jobs at a location (or of a customer) without a membership in force that day."""

    def row(opportunities: int, same_day: int, within_30: int, customer: tuple[int, int, int]) -> dict[str, Any]:
        c_opportunities, c_same_day, c_within_30 = customer
        return {
            "opportunities": opportunities,
            "sold_same_day": same_day,
            "sold_within_30_days": within_30,
            "customer_opportunities": c_opportunities,
            "customer_sold_same_day": c_same_day,
            "customer_sold_within_30_days": c_within_30,
            "conversion_rate_same_day": same_day / opportunities if opportunities else None,
            "conversion_rate_30_days": within_30 / opportunities if opportunities else None,
            "customer_conversion_rate_same_day": c_same_day / c_opportunities if c_opportunities else None,
            "customer_conversion_rate_30_days": c_within_30 / c_opportunities if c_opportunities else None,
        }

    expected = {
        # J1 at 2001: covered by 8001 (from 2024-01-15, no end) → not an opportunity.
        # J2 at 2002: 8008 expired 2024-02-29 → opportunity; 8002 starts 2024-04-01, 31 days later:
        # neither the same day nor within 30 days. (Each location is one customer's here: the same.)
        (day("2024-03-01"),): row(1, 0, 0, (1, 0, 0)),
        # J3 at 2003: opportunity, 8003 sold the same day (0 days). J4 at 2004: covered by 8004.
        # J6 at 2001: covered by 8001. J5 and J9 at 2005: 8005 is Canceled without a cancellation date
        # (never in force) → opportunities; 8006 (2024-03-03) is inactive; 8007 starts 2024-04-01 = 30
        # days later → sold within 30 days (a later visit), not the same day.
        (day("2024-03-02"),): row(3, 1, 3, (3, 1, 3)),
        # J10 at 2006: no membership there → a location opportunity; but its customer 1001 is a member
        # at 2001 (8001) → not a customer opportunity. J11 at 2007: 8009 was canceled on 2024-03-20, in
        # force on 2024-03-03 → neither. J12 at 2008: 2024-03-03 is 8010's last day (to) → in force, neither.
        (day("2024-03-03"),): row(1, 0, 0, (0, 0, 0)),
        # J8 (2024-03-03) is inactive.
    }
    rows = mart_rows(warehouse, "membership_conversion")
    assert_types(
        rows,
        (),
        (
            "opportunities",
            "sold_same_day",
            "sold_within_30_days",
            "customer_opportunities",
            "customer_sold_same_day",
            "customer_sold_within_30_days",
        ),
        (
            "conversion_rate_same_day",
            "conversion_rate_30_days",
            "customer_conversion_rate_same_day",
            "customer_conversion_rate_30_days",
        ),
    )
    assert rows == expected


def test_call_booking(warehouse: sa.Engine) -> None:
    """Inbound calls by creation day; bookable = Booked or Unbooked; rate = booked / bookable."""
    expected = {
        # Booked, Unbooked, Excused inbound (the outbound call is left out): bookable 2, booked 1.
        (day("2024-03-01"),): {
            "inbound_calls": 3,
            "bookable_calls": 2,
            "booked_calls": 1,
            "abandoned_calls": 0,
            "booking_rate": 1 / 2,
            "missed_call_rate": 0 / 3,
        },
        # Booked, Abandoned, Booked, Unbooked (inactive Booked and deleted Unbooked left out):
        # bookable 3, booked 2.
        (day("2024-03-02"),): {
            "inbound_calls": 4,
            "bookable_calls": 3,
            "booked_calls": 2,
            "abandoned_calls": 1,  # 9106
            "booking_rate": 2 / 3,
            "missed_call_rate": 1 / 4,
        },
    }
    rows = mart_rows(warehouse, "call_booking")
    assert_types(
        rows,
        (),
        ("inbound_calls", "bookable_calls", "booked_calls", "abandoned_calls"),
        ("booking_rate", "missed_call_rate"),
    )
    assert rows == expected


def test_collections(warehouse: sa.Engine) -> None:
    """Payments by payment date, their totals (unapplied amounts included)."""
    expected = {
        (day("2024-03-01"),): {"payments": 1, "collected": D("0.30")},  # 9002
        (day("2024-03-02"),): {"payments": 1, "collected": D("85.00")},  # 9003: 80 applied + 5 unapplied
        # 9001 200.00 (partial) + 9004 10.00 = 210.00; 9005 (1000.00) deleted.
        (day("2024-03-18"),): {"payments": 2, "collected": D("210.00")},
        # 9006 (2024-03-19, 55.55) is inactive: no row.
    }
    rows = mart_rows(warehouse, "collections")
    assert_types(rows, ("collected",), ("payments",))
    assert rows == expected


def test_accounts_receivable(warehouse: sa.Engine) -> None:
    """Balances as of 2024-04-15, aged from the invoice date: open (> 0), credits (< 0) and net."""

    def row(open_invoices: int, open_balance: str, credit_invoices: int = 0, credits: str = "0") -> dict[str, Any]:
        return {
            "open_invoices": open_invoices,
            "open_balance": D(open_balance),
            "credit_invoices": credit_invoices,
            "credits": D(credits),
            "net_receivables": D(open_balance) + D(credits),
        }

    expected = {
        # 6001 (2024-03-16: 15 days left in March + 15 in April = 30 days): 405.00 - 200.00 paid = 205.00.
        (AS_OF, "0-30"): row(1, "205.00"),
        # 6006 (03-15: 31 days) 60.00 + 6009 (03-04: 42 days) 335.00 + 6015 (03-02: 44 days) 150.00 +
        # 6016 (02-15: 29 + 31 = 60 days) 20.00 = 565.00. The credit: adjustment 6002 (03-10: 21 + 15 =
        # 36 days), balance -40.25 owed to the customer. Net 565.00 - 40.25 = 524.75.
        (AS_OF, "31-60"): row(4, "565.00", 1, "-40.25"),
        # 6012 (02-14: 61 days) 45.50 + 6017 (01-16: 30 + 29 + 31 = 90 days) 7.00 = 52.50.
        (AS_OF, "61-90"): row(2, "52.50"),
        # 6013 (01-15: 31 + 29 + 31 = 91 days) 12.34.
        (AS_OF, "91+"): row(1, "12.34"),
        # Left out: 6014 dated after the as-of day; voided 6010; deleted 6011; paid ones (balance 0).
    }
    rows = mart_rows(warehouse, "accounts_receivable")
    assert_types(rows, ("open_balance", "credits", "net_receivables"), ("open_invoices", "credit_invoices"))
    assert rows == expected


def test_other_tenant_is_separate(warehouse: sa.Engine) -> None:
    """The second tenant's marts hold its own numbers (same ids, other values)."""
    assert mart_rows(warehouse, "revenue_by_business_unit", OTHER_TENANT) == {
        (day("2024-03-01"), 10): {
            "completed_revenue": D("999.00"),
            "non_job_revenue": D("0"),
            "adjustment_revenue": D("0"),
            "total_revenue": D("999.00"),
        },
        (day("2024-03-02"), 10): {
            "completed_revenue": D("500.00"),
            "non_job_revenue": D("0"),
            "adjustment_revenue": D("0"),
            "total_revenue": D("500.00"),
        },
    }
    # Job 4001 at 2002 on 03-01: 8002 starts that day → sold the same day. Job 4003 at 2002 on
    # 03-02: 8002 (from 03-01) is in force → not an opportunity. (8002 is the job's customer's: the
    # customer variant is the same.)
    assert mart_rows(warehouse, "membership_conversion", OTHER_TENANT) == {
        (day("2024-03-01"),): {
            "opportunities": 1,
            "sold_same_day": 1,
            "sold_within_30_days": 1,
            "customer_opportunities": 1,
            "customer_sold_same_day": 1,
            "customer_sold_within_30_days": 1,
            "conversion_rate_same_day": 1.0,
            "conversion_rate_30_days": 1.0,
            "customer_conversion_rate_same_day": 1.0,
            "customer_conversion_rate_30_days": 1.0,
        },
    }
    assert mart_rows(warehouse, "collections", OTHER_TENANT) == {
        (day("2024-03-18"),): {"payments": 1, "collected": D("1.00")},
    }


# ------------------------------------------------------------------------------------------------
# Hub rows
# ------------------------------------------------------------------------------------------------


def hub_rows(engine: sa.Engine, name: str, **where: Any) -> list[sa.RowMapping]:
    table = hub_table(hub(name))
    query = sa.select(table).where(table.c.tenant_id == TENANT, *(table.c[k] == v for k, v in where.items()))
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def test_hub_rows(warehouse: sa.Engine) -> None:
    # An exploded invoice item: parent id, position, its own BU and GL account type, exact money.
    [fan] = hub_rows(warehouse, "invoice_items", invoice_id=6001, position=1)
    assert (fan["id"], fan["type"], fan["sku_name"]) == (60012, "Equipment", "Condenser Fan Motor")
    assert (fan["business_unit_id"], fan["gl_account_type"], fan["gl_account_name"]) == (
        30,
        "Income",
        "Equipment Sales",
    )
    assert (fan["quantity"], fan["price"], fan["total"]) == (D("2"), D("100"), D("200"))
    assert isinstance(fan["total"], Decimal) and fan["active"] is True and fan["deleted_at"] is None
    [permit] = hub_rows(warehouse, "invoice_items", invoice_id=6001, position=2)
    assert (permit["gl_account_type"], permit["total"]) == ("Liability", D("25"))
    [no_unit] = hub_rows(warehouse, "invoice_items", invoice_id=6009, position=1)
    assert no_unit["business_unit_id"] is None and no_unit["total"] == D("50")
    assert len(hub_rows(warehouse, "invoice_items", invoice_id=6001)) == 3

    # Money exactness: 0.10 + 0.20 is exactly 0.3, in Python and summed in SQL.
    items = hub_rows(warehouse, "invoice_items", invoice_id=6003)
    assert sorted(i["total"] for i in items) == [D("0.10"), D("0.20")]
    assert sum(i["total"] for i in items) == D("0.3")
    table = hub_table(hub("invoice_items"))
    with warehouse.connect() as conn:
        summed = conn.execute(
            sa.select(sa.func.sum(table.c.total)).where(table.c.tenant_id == TENANT, table.c.invoice_id == 6003)
        ).scalar_one()
    assert isinstance(summed, Decimal) and summed == D("0.3")

    # A flattened location address.
    [home] = hub_rows(warehouse, "locations", id=2001)
    assert (
        home["customer_id"],
        home["address_street"],
        home["address_unit"],
        home["address_city"],
        home["address_state"],
        home["address_zip"],
        home["address_country"],
    ) == (1001, "12 Elm St", "Apt 3", "Springfield", "IL", "62701", "USA")
    assert home["address_latitude"] == pytest.approx(39.7817) and home["address_longitude"] == pytest.approx(-89.6501)

    # Decimals beyond the fourth digit are cut; a JSON-number threshold is exact.
    [alice] = hub_rows(warehouse, "technicians", id=101)
    assert alice["hourly_rate"] == D("32.1234")
    [service_call] = hub_rows(warehouse, "job_types", id=301)
    assert service_call["sold_threshold"] == D("100") and service_call["no_charge"] is False

    # Timestamps: UTC, millisecond precision (7 digits of ticks cut to 3).
    [j1] = hub_rows(warehouse, "jobs", id=4001)
    assert j1["completed_on"] == datetime(2024, 3, 1, 15, 0, 0, 123000, tzinfo=UTC)
    [j7] = hub_rows(warehouse, "jobs", id=4007)
    assert j7["completed_on"] is None and j7["job_status"] == "Scheduled"

    # Money fields of an invoice, a payment application, a deleted invoice and its items.
    [inv] = hub_rows(warehouse, "invoices", id=6001)
    assert (inv["sub_total"], inv["sales_tax"], inv["total"], inv["balance"]) == (D("375"), D("30"), D("405"), D("205"))
    assert (inv["job_id"], inv["business_unit_id"], inv["adjustment_to_id"]) == (4001, 10, None)
    [adjustment] = hub_rows(warehouse, "invoices", id=6002)
    assert adjustment["adjustment_to_id"] == 6001 and adjustment["sub_total"] == D("-40.25")
    [application] = hub_rows(warehouse, "payment_applications", payment_id=9003)
    assert (application["position"], application["invoice_id"], application["applied_amount"]) == (0, 6005, D("80"))
    [deleted] = hub_rows(warehouse, "invoices", id=6011)
    assert deleted["deleted_at"] is not None
    [deleted_item] = hub_rows(warehouse, "invoice_items", invoice_id=6011)
    assert deleted_item["deleted_at"] is not None
    [voided] = hub_rows(warehouse, "invoices", id=6010)
    assert voided["active"] is False and voided["deleted_at"] is None

    # Estimates: status name and sold date; memberships: from / to.
    [sold] = hub_rows(warehouse, "estimates", id=7101)
    assert (sold["status"], sold["sold_on"], sold["sub_total"]) == (
        "Sold",
        datetime(2024, 3, 5, 14, 0, tzinfo=UTC),
        D("1200"),
    )
    [open_ended] = hub_rows(warehouse, "memberships", id=8001)
    assert open_ended["valid_from"] == datetime(2024, 1, 15, tzinfo=UTC) and open_ended["valid_to"] is None
    [booked] = hub_rows(warehouse, "calls", id=9101)
    assert (booked["direction"], booked["call_type"], booked["job_id"]) == ("Inbound", "Booked", 4001)


# ------------------------------------------------------------------------------------------------
# Days of timestamps at the very end of a UTC day
# ------------------------------------------------------------------------------------------------

# "Days are UTC calendar days" (marts.py). ServiceTitan (a .NET service) writes timestamps with 7
# fractional digits (100 ns ticks), and an end-of-day bound the .NET way: one tick before midnight.
# That instant is still on its UTC day; the hub keeps milliseconds (``sql.py``: the same conversion
# on both warehouses), so 23:59:59.9999999 becomes 23:59:59.999 of the same day. (When written, this
# held on SQLite only: PostgreSQL's ``::timestamptz`` rounds the 7th digit into microseconds before the
# cut to milliseconds, giving 00:00:00.000 of the next day.)
END_OF_DAY_TENANT = 7003
END_OF_DAY_RECORDS: dict[str, list[dict[str, Any]]] = {
    "settings/business-units": [rec(10, name="HVAC Service")],
    "crm/customers": [rec(1001, name="Customer 1001")],
    "crm/locations": [rec(2101, customerId=1001, name="A"), rec(2102, customerId=1001, name="B")],
    "memberships/membership-types": [rec(501, name="Gold Plan")],
    "jpm/job-types": [rec(302, name="Maintenance", soldThreshold=0.0, noCharge=False)],
    "jpm/jobs": [
        job(4101, 2101, 10, 302, "2024-03-03T23:59:59.9999999Z"),  # completed on 2024-03-03 (UTC)
        job(4102, 2102, 10, 302, "2024-03-02T10:00:00.0000000Z"),
    ],
    "accounting/invoices": [
        invoice(
            6101,
            job=4101,
            bu=10,
            day="2024-03-03T23:59:59.9999999Z",
            items=[item(61011, "10.00", 10)],
            sub_total="10.00",
            balance="10.00",
        ),
    ],
    "memberships/memberships": [
        # In force up to the end of 2024-03-01: not on 2024-03-02, when job 4102 is completed.
        membership(8101, 2102, "2023-03-02T00:00:00.0000000Z", "2024-03-01T23:59:59.9999999Z", customer=1001),
    ],
    "telecom/calls": [
        call(9201, "2024-03-04T23:59:59.9999999Z", "Booked"),  # 2024-03-04
        call(9202, "2024-03-04T20:30:00-05:00", "Unbooked"),  # 2024-03-05T01:30Z: 2024-03-05
        call(9203, "2024-03-05T10:00:00", "Booked"),  # no zone: taken as UTC, 2024-03-05
    ],
}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_days_are_utc_calendar_days_to_the_last_tick(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_postgres")()
    engine = prepared_warehouse(url, datasets_of(END_OF_DAY_RECORDS))
    try:
        load_tenant(engine, END_OF_DAY_TENANT, END_OF_DAY_RECORDS)
        build_tenant(engine, END_OF_DAY_TENANT, "golden-eod", as_of=date(2024, 3, 10))
        table = hub_table(hub("jobs"))
        with engine.connect() as conn:
            completed_on = conn.execute(
                sa.select(table.c.completed_on).where(table.c.tenant_id == END_OF_DAY_TENANT, table.c.id == 4101)
            ).scalar_one()
        got = {
            name: mart_rows(engine, name, END_OF_DAY_TENANT)
            for name in ("revenue_by_business_unit", "membership_conversion", "accounts_receivable", "call_booking")
        }
    finally:
        engine.dispose()
    expected = {
        # Job 4101, completed 2024-03-03T23:59:59.9999999Z, belongs to 2024-03-03: 10.00.
        "revenue_by_business_unit": {
            (day("2024-03-03"), 10): {
                "completed_revenue": D("10.00"),
                "non_job_revenue": D("0"),
                "adjustment_revenue": D("0"),
                "total_revenue": D("10.00"),
            },
        },
        # Job 4102 (2024-03-02) at 2102: membership 8101 ended 2024-03-01 → an opportunity; so is 4101
        # (2024-03-03, at 2101, which never had a membership).
        "membership_conversion": {
            (day("2024-03-02"),): {
                "opportunities": 1,
                "sold_same_day": 0,
                "sold_within_30_days": 0,
                "customer_opportunities": 1,
                "customer_sold_same_day": 0,
                "customer_sold_within_30_days": 0,
                "conversion_rate_same_day": 0 / 1,
                "conversion_rate_30_days": 0 / 1,
                "customer_conversion_rate_same_day": 0 / 1,
                "customer_conversion_rate_30_days": 0 / 1,
            },
            (day("2024-03-03"),): {
                "opportunities": 1,
                "sold_same_day": 0,
                "sold_within_30_days": 0,
                "customer_opportunities": 1,
                "customer_sold_same_day": 0,
                "customer_sold_within_30_days": 0,
                "conversion_rate_same_day": 0 / 1,
                "conversion_rate_30_days": 0 / 1,
                "customer_conversion_rate_same_day": 0 / 1,
                "customer_conversion_rate_30_days": 0 / 1,
            },
        },
        # Invoice 6101 dated 2024-03-03: 7 days old on 2024-03-10 → 0-30.
        "accounts_receivable": {
            (date(2024, 3, 10), "0-30"): {
                "open_invoices": 1,
                "open_balance": D("10.00"),
                "credit_invoices": 0,
                "credits": D("0"),
                "net_receivables": D("10.00"),
            },
        },
        # 9201 on 2024-03-04 (booked 1 of 1); 9202 and 9203 on 2024-03-05 (booked 1 of 2).
        "call_booking": {
            (day("2024-03-04"),): {
                "inbound_calls": 1,
                "bookable_calls": 1,
                "booked_calls": 1,
                "abandoned_calls": 0,
                "booking_rate": 1 / 1,
                "missed_call_rate": 0 / 1,
            },
            (day("2024-03-05"),): {
                "inbound_calls": 2,
                "bookable_calls": 2,
                "booked_calls": 1,
                "abandoned_calls": 0,
                "booking_rate": 1 / 2,
                "missed_call_rate": 0 / 2,
            },
        },
    }
    assert (completed_on, got) == (datetime(2024, 3, 3, 23, 59, 59, 999000, tzinfo=UTC), expected)


def test_a_completed_job_with_nothing_invoiced_is_an_opportunity_not_converted(tmp_path: Path) -> None:
    """Threshold 0 does not make a job with nothing invoiced converted: the subtotal must be positive."""
    records = {
        "jpm/job-types": [rec(41, name="Tune-up", soldThreshold=0, noCharge=False)],
        "jpm/jobs": [job(4001, 501, 10, 41, "2024-03-05T10:00:00Z")],
    }
    engine = prepared_warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}", datasets_of(records))
    try:
        load_tenant(engine, 7003, records)
        build_tenant(engine, 7003, "golden-zero", as_of=AS_OF)
        rows = mart_rows(engine, "job_conversion", 7003)
    finally:
        engine.dispose()
    row = rows[(day("2024-03-05"), 10)]
    assert (row["completed_jobs"], row["opportunities"], row["converted"]) == (1, 1, 0)  # 0.00 invoiced
    assert row["conversion_rate"] == 0 / 1 and row["invoiced_subtotal"] == D("0")


# ------------------------------------------------------------------------------------------------
# The tenant's calendar: days in its time zone
# ------------------------------------------------------------------------------------------------

# A Los Angeles shop's evening: 23:30 on the last day of March (PDT, UTC-7) is 06:30 UTC on April 1st;
# 23:30 on 29 February (PST, UTC-8, before the switch to daylight time) is 07:30 UTC on March 1st.
ZONE_TENANT = 7005
ZONE_AS_OF = date(2024, 5, 1)
ZONE_RECORDS: dict[str, list[dict[str, Any]]] = {
    "settings/business-units": [rec(10, name="HVAC Service")],
    "jpm/job-types": [rec(302, name="Maintenance", soldThreshold=0.0, noCharge=False)],
    "jpm/jobs": [job(4201, 2201, 10, 302, "2024-04-01T06:30:00.0000000Z")],  # 2024-03-31 23:30 PDT
    "accounting/invoices": [
        invoice(
            6201,
            job=4201,
            bu=10,
            day="2024-04-01T06:30:00Z",
            items=[item(62011, "100.00", 10)],
            sub_total="100.00",
            balance="100.00",
        ),
        invoice(  # a counter sale at 2024-02-29 23:30 PST
            6202,
            job=None,
            bu=10,
            day="2024-03-01T07:30:00Z",
            items=[item(62021, "20.00", 10)],
            sub_total="20.00",
            balance="20.00",
        ),
    ],
    "sales/estimates": [estimate(7201, 4201, 10, "Sold", "500.00", "2024-04-01T06:40:00Z")],  # 23:40 PDT
    "telecom/calls": [call(9301, "2024-04-01T06:45:00.0000000Z", "Booked", job_id=4201)],  # 23:45 PDT
    "accounting/payments": [payment(9401, "2024-04-01T06:50:00Z", "10.00", [], unapplied="10.00")],  # 23:50 PDT
}


def _calendar(engine: sa.Engine) -> dict[str, dict[tuple[Any, ...], Any]]:
    """The figures of the zone tenant that move with its calendar: one value per mart row."""
    columns = {
        "revenue_by_business_unit": "total_revenue",
        "sales": "sales",
        "job_conversion": "completed_jobs",
        "call_booking": "booked_calls",
        "collections": "collected",
        "accounts_receivable": "open_balance",
    }
    return {
        name: {key: values[column] for key, values in mart_rows(engine, name, ZONE_TENANT).items()}
        for name, column in columns.items()
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_days_are_the_tenant_s_local_calendar(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_postgres")()
    engine = prepared_warehouse(url, datasets_of(ZONE_RECORDS))
    try:
        load_tenant(engine, ZONE_TENANT, ZONE_RECORDS)
        build_tenant(engine, ZONE_TENANT, "zone-utc", as_of=ZONE_AS_OF)  # no zone set: UTC
        in_utc = _calendar(engine)
        changed = build_tenant(engine, ZONE_TENANT, "zone-la", as_of=ZONE_AS_OF, time_zone="America/Los_Angeles")
        in_los_angeles = _calendar(engine)
        again = build_tenant(engine, ZONE_TENANT, "zone-la-2", as_of=ZONE_AS_OF, time_zone="America/Los_Angeles")
    finally:
        engine.dispose()
    march_31, april_1, feb_29, march_1 = day("2024-03-31"), day("2024-04-01"), day("2024-02-29"), day("2024-03-01")
    assert in_utc == {
        # In UTC the evening's work lands on April 1st, and the February counter sale on March 1st.
        "revenue_by_business_unit": {(april_1, 10): D("100.00"), (march_1, 10): D("20.00")},
        "sales": {(april_1, 10): D("500.00")},
        "job_conversion": {(april_1, 10): 1},
        "call_booking": {(april_1,): 1},
        "collections": {(april_1,): D("10.00")},
        # Aged on 2024-05-01: 6201 from April 1st is 30 days old; 6202 from March 1st 61 days.
        "accounts_receivable": {(ZONE_AS_OF, "0-30"): D("100.00"), (ZONE_AS_OF, "61-90"): D("20.00")},
    }
    assert in_los_angeles == {
        # In Los Angeles it is March 31st (and February 29th): the last day of the month, in its month.
        "revenue_by_business_unit": {(march_31, 10): D("100.00"), (feb_29, 10): D("20.00")},
        "sales": {(march_31, 10): D("500.00")},
        "job_conversion": {(march_31, 10): 1},
        "call_booking": {(march_31,): 1},
        "collections": {(march_31,): D("10.00")},
        # 6201 from March 31st is 31 days old on 2024-05-01; 6202 from February 29th 62 days.
        "accounts_receivable": {(ZONE_AS_OF, "31-60"): D("100.00"), (ZONE_AS_OF, "61-90"): D("20.00")},
    }
    revenue_months = {key[0].month for key in in_los_angeles["revenue_by_business_unit"]}
    assert revenue_months == {2, 3} and {key[0].month for key in in_utc["revenue_by_business_unit"]} == {3, 4}
    # The zone change alone rebuilt every mart in full; the next build, as of the same day, has
    # nothing to do (not even the daily marts: they were built as of that day).
    assert {m.table: m.mode for m in changed.marts} == {m.table_name: "full" for m in MARTS}
    assert again.marts == []
