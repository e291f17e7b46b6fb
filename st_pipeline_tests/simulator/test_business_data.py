"""The generated business data is consistent enough for KPIs: checked on the served JSON.

Every expectation is computed here from the records themselves (jobs, invoices, payments…), not
from the simulator's business rules.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.servicetitan.models import validate_page
from st_pipeline.simulator import Simulator, SimulatorConfig

TENANT = 3101
DATASETS = (
    "settings/business-units",
    "settings/technicians",
    "crm/customers",
    "crm/locations",
    "jpm/job-types",
    "jpm/jobs",
    "jpm/appointments",
    "dispatch/appointment-assignments",
    "accounting/invoices",
    "accounting/invoice-items",
    "accounting/payments",
    "sales/estimates",
    "sales/estimates/items",
    "memberships/membership-types",
    "memberships/memberships",
    "telecom/calls",
    "marketing/campaigns",
    "crm/leads",
    "crm/bookings",
    "payroll/jobs/splits",
    "payroll/gross-pay-items",
    "inventory/purchase-orders",
    "accounting/ap-bills",
    "marketing/costs",
    "memberships/membership-status-changes",
    "memberships/recurring-service-events",
    "jpm/job-cancel-reasons",
    "jpm/job-canceled-logs",
    "dispatch/technician-shifts",
)
JOB_STATUSES = {"Completed", "Scheduled", "InProgress", "Canceled", "Hold"}
ITEM_TYPES = {"Service", "Material", "Equipment", "PriceModifier", "Unspecified"}
ESTIMATE_STATUS_VALUES = {"Sold": 1, "Open": 0, "Dismissed": 2}
CALL_TYPES = {"Booked", "Unbooked", "Excused", "Abandoned"}
Data = dict[str, list[dict[str, Any]]]


def config(**overrides: Any) -> SimulatorConfig:
    settings: dict[str, Any] = {
        "tenants": [SimulatorConfig.demo_tenant(TENANT)],
        "scale": 0.1,
        "datasets": DATASETS,
    }
    settings.update(overrides)
    return SimulatorConfig(**settings)


@pytest.fixture(scope="module")
def data() -> Iterator[Data]:
    """Every dataset of one tenant, as the simulator serves it (its ground-truth endpoint)."""
    with Simulator(config()) as simulator, httpx.Client(base_url=simulator.url, timeout=30) as http:
        served = {}
        for key in DATASETS:
            response = http.get(f"/_simulator/tenants/{TENANT}/datasets/{key.replace('/', '.')}")
            assert response.status_code == 200, response.text
            served[key] = response.json()
        yield served


def by_id(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {record["id"]: record for record in records}


def money(text: str) -> Decimal:
    """An accounting amount: a string with exactly two decimals."""
    assert isinstance(text, str) and text.lstrip("-").replace(".", "", 1).isdigit(), text
    assert len(text.rsplit(".", 1)[1]) == 2, text
    return Decimal(text)


def number(value: float | int) -> Decimal:
    """A JSON number (sales), exactly as written."""
    assert isinstance(value, (int, float))
    return Decimal(repr(value))


def day(stamp: str) -> str:
    return stamp[:10]


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp[:19])


def applied_by_invoice(data: Data) -> dict[int, Decimal]:
    applied: dict[int, Decimal] = defaultdict(Decimal)
    for payment in data["accounting/payments"]:
        for entry in payment["appliedTo"] or []:
            applied[entry["appliedTo"]] += money(entry["appliedAmount"])
    return applied


def completed_days_by_location(data: Data) -> dict[int, set[str]]:
    days: dict[int, set[str]] = defaultdict(set)
    for job in data["jpm/jobs"]:
        if job["jobStatus"] == "Completed":
            days[job["locationId"]].add(day(job["completedOn"]))
    return days


def test_records_validate_against_the_record_models(data: Data) -> None:
    catalogue = load_catalogue()
    for key, records in data.items():
        outcome = validate_page(catalogue.dataset(key), records)
        assert not outcome.quarantined, (key, outcome.quarantined[:1])
        assert records, key


def test_job_types_have_sold_thresholds_and_some_are_no_charge(data: Data) -> None:
    types = data["jpm/job-types"]
    assert len(types) >= 4
    assert {t["soldThreshold"] for t in types} <= {0, 100, 250, 500}
    assert any(t["noCharge"] for t in types) and not all(t["noCharge"] for t in types)
    units = by_id(data["settings/business-units"])
    assert all(set(t["businessUnitIds"]) <= set(units) for t in types)


def test_jobs_have_a_type_a_status_and_a_completion_iff_completed(data: Data) -> None:
    types, units = by_id(data["jpm/job-types"]), by_id(data["settings/business-units"])
    locations, campaigns = by_id(data["crm/locations"]), by_id(data["marketing/campaigns"])
    jobs = data["jpm/jobs"]
    statuses = Counter(job["jobStatus"] for job in jobs)
    assert set(statuses) <= JOB_STATUSES and len(statuses) >= 4
    assert 0.55 < statuses["Completed"] / len(jobs) < 0.85
    for job in jobs:
        assert job["jobTypeId"] in types
        assert job["businessUnitId"] in units
        assert job["campaignId"] in campaigns
        assert locations[job["locationId"]]["customerId"] == job["customerId"]
        assert job["jobNumber"] == str(job["id"])
        if job["jobStatus"] == "Completed":
            assert job["createdOn"] < job["completedOn"] < "2025-06-01"
            assert moment(job["completedOn"]) - moment(job["createdOn"]) < timedelta(days=7)
        else:
            assert job["completedOn"] is None
        if types[job["jobTypeId"]]["noCharge"]:
            assert job["noCharge"] is True
    no_charge = sum(job["noCharge"] for job in jobs)
    assert 1 <= no_charge < 0.15 * len(jobs)


def test_jobs_show_their_invoice_and_its_total(data: Data) -> None:
    invoices = by_id(data["accounting/invoices"])
    invoiced = 0
    for job in data["jpm/jobs"]:
        if job["invoiceId"] is None:
            assert job["total"] == 0
            continue
        invoiced += 1
        invoice = invoices[job["invoiceId"]]
        assert invoice["job"]["id"] == job["id"]
        assert invoice["adjustmentToId"] is None
        assert number(job["total"]) == money(invoice["total"])
    assert invoiced > 0.8 * len(data["jpm/jobs"])


def test_most_completed_jobs_have_exactly_one_invoice(data: Data) -> None:
    own_invoices: Counter[int] = Counter(
        invoice["job"]["id"]
        for invoice in data["accounting/invoices"]
        if invoice["job"] is not None and invoice["adjustmentToId"] is None
    )
    completed = [job for job in data["jpm/jobs"] if job["jobStatus"] == "Completed"]
    assert sum(own_invoices[job["id"]] == 1 for job in completed) > 0.85 * len(completed)
    assert all(count <= 1 for count in own_invoices.values())


def test_invoice_items_multiply_out_and_add_up(data: Data) -> None:
    item_ids: set[int] = set()
    for invoice in data["accounting/invoices"]:
        subtotal = Decimal("0")
        for item in invoice["items"]:
            assert item["type"] in ITEM_TYPES
            assert money(item["quantity"]) * money(item["price"]) == money(item["total"])
            assert item["generalLedgerAccount"]["type"]
            assert item["id"] not in item_ids
            item_ids.add(item["id"])
            subtotal += money(item["total"])
        assert money(invoice["subTotal"]) == subtotal
        tax = money(invoice["salesTax"])
        assert abs(tax) <= abs(subtotal) * Decimal("0.10")
        assert money(invoice["total"]) == subtotal + tax
    assert len(item_ids) > len(data["accounting/invoices"])


def test_invoices_belong_to_their_job(data: Data) -> None:
    jobs = by_id(data["jpm/jobs"])
    customers, locations = by_id(data["crm/customers"]), by_id(data["crm/locations"])
    units = by_id(data["settings/business-units"])
    for invoice in data["accounting/invoices"]:
        assert invoice["customer"]["id"] in customers
        assert invoice["location"]["id"] in locations
        assert invoice["businessUnit"]["id"] in units
        if invoice["job"] is None:
            continue
        job = jobs[invoice["job"]["id"]]
        assert invoice["job"]["number"] == job["jobNumber"]
        assert invoice["customer"]["id"] == job["customerId"]
        assert invoice["location"]["id"] == job["locationId"]
        assert invoice["businessUnit"]["id"] == job["businessUnitId"]
        if job["jobStatus"] == "Completed":
            assert invoice["invoiceDate"] >= job["completedOn"]
        else:
            assert invoice["items"] == [] and money(invoice["total"]) == 0


def test_some_invoices_have_no_job_and_some_adjust_another(data: Data) -> None:
    invoices = by_id(data["accounting/invoices"])
    without_job = [i for i in invoices.values() if i["job"] is None]
    assert 1 <= len(without_job) < 0.1 * len(invoices)
    adjustments = [i for i in invoices.values() if i["adjustmentToId"] is not None]
    assert 1 <= len(adjustments) < 0.15 * len(invoices)
    for adjustment in adjustments:
        original = invoices[adjustment["adjustmentToId"]]
        assert original["id"] != adjustment["id"]
        assert original["job"] is not None and original["job"]["id"] == adjustment["job"]["id"]
        assert adjustment["invoiceDate"] >= original["invoiceDate"]
        assert abs(money(adjustment["total"])) < 200
    signs = {money(a["total"]) > 0 for a in adjustments}
    assert signs == {True, False}


def test_items_carry_their_own_business_unit_and_gl_account(data: Data) -> None:
    items = [(invoice, item) for invoice in data["accounting/invoices"] for item in invoice["items"]]
    income = [item for _, item in items if item["generalLedgerAccount"]["type"] == "Income"]
    assert 0.8 < len(income) / len(items) < 0.97
    assert {item["generalLedgerAccount"]["type"] for _, item in items} >= {"Income", "Asset", "Liability"}
    elsewhere = sum(item["businessUnit"]["id"] != invoice["businessUnit"]["id"] for invoice, item in items)
    assert 0.08 < elsewhere / len(items) < 0.35
    assert len({item["businessUnit"]["id"] for item in income}) >= 3
    gl_ids = defaultdict(set)
    for _, item in items:
        gl_ids[item["generalLedgerAccount"]["name"]].add(item["generalLedgerAccount"]["id"])
    assert all(len(ids) == 1 for ids in gl_ids.values())


def test_invoice_item_export_serves_the_embedded_items(data: Data) -> None:
    embedded = {
        item["id"]: (invoice["id"], item) for invoice in data["accounting/invoices"] for item in invoice["items"]
    }
    exported = data["accounting/invoice-items"]
    assert exported
    for record in exported:
        invoice_id, item = embedded[record["id"]]
        assert record["invoiceId"] == invoice_id
        for field in ("type", "quantity", "price", "total", "businessUnit", "generalLedgerAccount", "skuId"):
            assert record[field] == item[field], field


def test_balances_are_what_payments_leave_open(data: Data) -> None:
    applied = applied_by_invoice(data)
    invoices = data["accounting/invoices"]
    kinds: Counter[str] = Counter()
    for invoice in invoices:
        total, balance = money(invoice["total"]), money(invoice["balance"])
        paid = applied.get(invoice["id"], Decimal(0))
        assert balance == total - paid
        assert paid <= max(total, Decimal(0))
        if total <= 0:
            continue
        kinds["paid" if balance == 0 else "open" if balance == total else "partly paid"] += 1
        assert (invoice["paidOn"] is not None) == (balance == 0)
    assert kinds["paid"] and kinds["open"] and kinds["partly paid"], kinds


def test_payments_are_applied_to_real_invoices(data: Data) -> None:
    invoices = by_id(data["accounting/invoices"])
    customers = by_id(data["crm/customers"])
    applied_count = 0
    for payment in data["accounting/payments"]:
        entries = payment["appliedTo"] or []
        applied = sum((money(entry["appliedAmount"]) for entry in entries), Decimal(0))
        assert money(payment["total"]) == applied + money(payment["unappliedAmount"])
        assert payment["customer"]["id"] in customers
        for entry in entries:
            invoice = invoices[entry["appliedTo"]]
            assert Decimal(0) < money(entry["appliedAmount"]) <= money(invoice["total"])
            assert payment["date"] >= invoice["invoiceDate"]
            assert payment["customer"]["id"] == invoice["customer"]["id"]
        applied_count += bool(entries)
    assert applied_count > 0.7 * len(data["accounting/payments"])


def test_estimates_are_sold_open_or_dismissed_on_real_jobs(data: Data) -> None:
    jobs, technicians = by_id(data["jpm/jobs"]), by_id(data["settings/technicians"])
    statuses: Counter[str] = Counter()
    sold_later = sold_same_day = 0
    for estimate in data["sales/estimates"]:
        job = jobs[estimate["jobId"]]
        assert (estimate["customerId"], estimate["locationId"], estimate["businessUnitId"]) == (
            job["customerId"],
            job["locationId"],
            job["businessUnitId"],
        )
        name = estimate["status"]["name"]
        assert estimate["status"]["value"] == ESTIMATE_STATUS_VALUES[name]
        statuses[name] += 1
        assert (estimate["soldOn"] is not None) == (name == "Sold")
        assert (estimate["soldBy"] in technicians) == (name == "Sold")
        subtotal = Decimal(0)
        for item in estimate["items"]:
            assert number(item["qty"]) * number(item["unitRate"]) == number(item["total"])
            subtotal += number(item["total"])
        assert number(estimate["subtotal"]) == subtotal
        if name == "Sold" and job["completedOn"] is not None:
            assert estimate["soldOn"] <= job["completedOn"] or day(estimate["soldOn"]) > day(job["completedOn"])
            sold_later += day(estimate["soldOn"]) > day(job["completedOn"])
            sold_same_day += day(estimate["soldOn"]) == day(job["completedOn"])
    assert statuses["Sold"] and statuses["Open"] and statuses["Dismissed"], statuses
    assert sold_later and sold_same_day


def test_estimate_items_list_serves_the_embedded_items(data: Data) -> None:
    embedded = {item["id"]: item for estimate in data["sales/estimates"] for item in estimate["items"]}
    listed = data["sales/estimates/items"]
    assert listed
    for record in listed:
        assert record == embedded[record["id"]]


def test_memberships_are_sold_at_locations_on_or_after_a_job_there(data: Data) -> None:
    types, technicians = by_id(data["memberships/membership-types"]), by_id(data["settings/technicians"])
    locations, units = by_id(data["crm/locations"]), by_id(data["settings/business-units"])
    completed_days = completed_days_by_location(data)
    same_day = later = 0
    for membership in data["memberships/memberships"]:
        assert membership["membershipTypeId"] in types
        assert membership["soldById"] in technicians
        assert membership["businessUnitId"] in units
        assert locations[membership["locationId"]]["customerId"] == membership["customerId"]
        assert membership["to"] > membership["from"]
        assert membership["status"] in {"Active", "Expired", "Canceled"}
        assert (membership["cancellationDate"] is not None) == (membership["status"] == "Canceled")
        if membership["status"] == "Expired":
            assert membership["to"] <= "2025-06-01T00:00:00.0000000Z"
        days = completed_days[membership["locationId"]]
        sold = day(membership["from"])
        same_day += sold in days
        later += sold not in days and any(d < sold for d in days)
    assert same_day and later


def test_booked_calls_name_the_job_they_booked(data: Data) -> None:
    jobs, campaigns = by_id(data["jpm/jobs"]), by_id(data["marketing/campaigns"])
    calls = data["telecom/calls"]
    types = Counter(call["type"] for call in calls)
    assert set(types) <= CALL_TYPES
    assert 0.3 < types["Booked"] / len(calls) < 0.6 and types["Unbooked"]
    assert sum(call["direction"] == "Inbound" for call in calls) > 0.7 * len(calls)
    for call in calls:
        assert call["campaign"]["id"] in campaigns
        assert call["campaign"]["name"] == campaigns[call["campaign"]["id"]]["name"]
        if call["type"] != "Booked":
            assert call["job"] is None
            continue
        job = jobs[call["job"]["id"]]
        assert call["job"]["number"] == job["jobNumber"]
        assert call["customer"]["id"] == job["customerId"]
        assert call["location"]["id"] == job["locationId"]


def test_appointments_and_assignments_follow_their_job(data: Data) -> None:
    jobs, technicians = by_id(data["jpm/jobs"]), by_id(data["settings/technicians"])
    appointments = by_id(data["jpm/appointments"])
    for appointment in appointments.values():
        job = jobs[appointment["jobId"]]
        assert appointment["customerId"] == job["customerId"]
        assert appointment["start"] <= appointment["end"]
        if job["jobStatus"] == "Completed":
            assert appointment["status"] == "Done"
            assert appointment["end"] <= job["completedOn"]
    for assignment in data["dispatch/appointment-assignments"]:
        assert assignment["jobId"] == appointments[assignment["appointmentId"]]["jobId"]
        assert assignment["technicianName"] == technicians[assignment["technicianId"]]["name"]


def test_job_splits_add_up_to_a_hundred(data: Data) -> None:
    jobs, technicians = by_id(data["jpm/jobs"]), by_id(data["settings/technicians"])
    splits: dict[int, Decimal] = defaultdict(Decimal)
    for split in data["payroll/jobs/splits"]:
        assert split["technicianId"] in technicians
        assert jobs[split["jobId"]]["jobStatus"] == "Completed"
        splits[split["jobId"]] += number(split["split"])
    assert splits and all(total == 100 for total in splits.values())
    completed = {job["id"] for job in data["jpm/jobs"] if job["jobStatus"] == "Completed"}
    assert set(splits) == completed  # every completed job is split, once


def split_technicians(data: Data) -> dict[int, dict[int, Decimal]]:
    """Job → technician → split percent."""
    splits: dict[int, dict[int, Decimal]] = defaultdict(dict)
    for split in data["payroll/jobs/splits"]:
        splits[split["jobId"]][split["technicianId"]] = number(split["split"])
    return splits


def test_split_technicians_are_the_assigned_ones_and_some_jobs_are_shared_unequally(data: Data) -> None:
    assigned: dict[int, set[int]] = defaultdict(set)
    for assignment in data["dispatch/appointment-assignments"]:
        assigned[assignment["jobId"]].add(assignment["technicianId"])
    splits = split_technicians(data)
    checked = 0
    for job_id, shares in splits.items():
        if job_id in assigned:
            assert set(shares) == assigned[job_id], job_id
            checked += 1
    assert checked > 0.9 * len(splits)
    patterns = Counter(tuple(sorted(shares.values(), reverse=True)) for shares in splits.values())
    assert patterns[(Decimal(60), Decimal(40))] >= 1, patterns
    assert patterns[(Decimal(100),)] > len(splits) / 3
    # Every appointment is assigned, to each of its job's technicians once.
    appointments = {a["id"] for a in data["jpm/appointments"]}
    pairs = Counter((a["appointmentId"], a["technicianId"]) for a in data["dispatch/appointment-assignments"])
    assert {appointment for appointment, _ in pairs} == appointments
    assert set(pairs.values()) == {1}


def test_gross_pay_is_labour_of_the_split_technicians_on_completion_day(data: Data) -> None:
    jobs, splits = by_id(data["jpm/jobs"]), split_technicians(data)
    invoices = by_id(data["accounting/invoices"])
    paid: dict[int, set[int]] = defaultdict(set)
    types: Counter[str] = Counter()
    for item in data["payroll/gross-pay-items"]:
        job = jobs[item["jobId"]]
        assert job["jobStatus"] == "Completed"
        assert item["employeeType"] == "Technician" and item["employeeId"] in splits[job["id"]]
        assert number(item["amount"]) > 0
        assert day(item["date"]) == day(job["completedOn"])
        types[item["grossPayItemType"]] += 1
        if item["grossPayItemType"] == "TimesheetTime":
            hours = number(item["paidDurationHours"])
            assert 0 < hours <= 24 and hours * 4 == int(hours * 4)  # quarter hours
            assert item["startedOn"] <= item["endedOn"] <= job["completedOn"]
            rate = number(item["amount"]) / hours
            assert Decimal(15) < rate < Decimal(125), rate
            paid[job["id"]].add(item["employeeId"])
        else:
            assert item["grossPayItemType"] == "InvoiceRelatedBonus"
            assert item["invoiceId"] == job["invoiceId"]
            assert number(item["amount"]) < money(invoices[item["invoiceId"]]["total"])
    assert types["TimesheetTime"] and types["InvoiceRelatedBonus"], types
    assert {paid_on: set(shares) for paid_on, shares in splits.items()} == dict(paid)


def test_purchase_orders_buy_a_jobs_invoiced_materials_at_cost(data: Data) -> None:
    jobs, invoices = by_id(data["jpm/jobs"]), by_id(data["accounting/invoices"])
    orders = data["inventory/purchase-orders"]
    assert len({order["jobId"] for order in orders}) == len(orders) > 0
    for order in orders:
        job = jobs[order["jobId"]]
        assert job["jobStatus"] == "Completed" and order["invoiceId"] == job["invoiceId"]
        assert job["createdOn"] <= order["date"] <= order["receivedOn"] <= job["completedOn"]
        subtotal = Decimal(0)
        for item in order["items"]:
            assert number(item["cost"]) * number(item["quantity"]) == number(item["total"])
            subtotal += number(item["total"])
        assert number(order["total"]) == subtotal + number(order["tax"]) + number(order["shipping"])
        invoiced = sum(
            (
                money(i["totalCost"])
                for i in invoices[job["invoiceId"]]["items"]
                if i["type"] in ("Material", "Equipment")
            ),
            Decimal(0),
        )
        assert subtotal == invoiced > 0


def test_ap_bills_bill_the_purchase_orders(data: Data) -> None:
    orders = by_id(data["inventory/purchase-orders"])
    bills = data["accounting/ap-bills"]
    assert bills and len({bill["purchaseOrderId"] for bill in bills}) == len(bills)
    for bill in bills:
        order = orders[bill["purchaseOrderId"]]
        assert bill["jobId"] == order["jobId"]
        assert money(bill["billAmount"]) == number(order["total"])
        assert bill["billDate"] >= order["receivedOn"]


def test_invoice_item_costs_are_below_the_price_for_materials_and_equipment(data: Data) -> None:
    items = [item for invoice in data["accounting/invoices"] for item in invoice["items"]]
    goods = [item for item in items if item["type"] in ("Material", "Equipment")]
    assert goods
    for item in goods:
        assert 0 < money(item["cost"]) < money(item["price"])
        assert money(item["totalCost"]) == money(item["cost"]) * money(item["quantity"])
    assert all(money(item["cost"]) == 0 for item in items if item["type"] == "Service")


def test_campaign_costs_are_per_campaign_and_month(data: Data) -> None:
    campaigns = by_id(data["marketing/campaigns"])
    costs = data["marketing/costs"]
    months = Counter((cost["campaignId"], cost["year"], cost["month"]) for cost in costs)
    assert set(months.values()) == {1}
    assert {campaign for campaign, _, _ in months} == set(campaigns)
    per_campaign = Counter(campaign for campaign, _, _ in months)
    assert set(per_campaign.values()) == {24}  # June 2023 to May 2025
    assert min((y, m) for _, y, m in months) == (2023, 6)
    assert max((y, m) for _, y, m in months) == (2025, 5)
    assert all(number(cost["dailyCost"]) >= 0 for cost in costs)
    assert sum(number(cost["dailyCost"]) > 0 for cost in costs) > len(costs) / 2


def test_membership_status_changes_agree_with_the_memberships(data: Data) -> None:
    memberships = by_id(data["memberships/memberships"])
    history: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for change in sorted(data["memberships/membership-status-changes"], key=lambda c: c["createdOn"]):
        history[change["membershipId"]].append(change)
    assert set(history) <= set(memberships)
    for membership_id, membership in memberships.items():
        changes = history.get(membership_id, [])
        status = "Active"
        for change in changes:
            assert change["oldStatus"] == status and change["newStatus"] != status
            assert membership["from"] <= change["createdOn"] <= "2025-06-01"
            status = change["newStatus"]
        assert status == membership["status"], membership_id
        ends = [c["createdOn"] for c in changes if c["newStatus"] == membership["status"]]
        if membership["status"] == "Canceled":
            assert ends == [membership["cancellationDate"]]
        elif membership["status"] == "Expired":
            assert ends == [membership["to"]]
    assert {c["newStatus"] for c in data["memberships/membership-status-changes"]} >= {"Canceled", "Expired"}


def test_recurring_service_events_follow_their_membership(data: Data) -> None:
    memberships, jobs = by_id(data["memberships/memberships"]), by_id(data["jpm/jobs"])
    statuses: Counter[str] = Counter()
    for event in data["memberships/recurring-service-events"]:
        membership = memberships[event["membershipId"]]
        assert membership["from"] <= event["date"] < membership["to"]
        statuses[event["status"]] += 1
        assert (event["jobId"] is not None) == (event["status"] == "Won")
        if event["status"] == "Won":
            job = jobs[event["jobId"]]
            assert job["locationId"] == membership["locationId"] and job["jobStatus"] == "Completed"
            assert job["completedOn"] >= event["date"]
        if event["date"] > "2025-06-01":
            assert event["status"] in {"NotAttempted", "Dismissed"}
        if membership["status"] == "Canceled" and event["date"] > membership["cancellationDate"]:
            assert event["status"] == "Dismissed"
    assert statuses["Won"] and statuses["NotAttempted"], statuses
    assert {e["membershipId"] for e in data["memberships/recurring-service-events"]} == set(memberships)


def test_each_canceled_job_has_one_canceled_log(data: Data) -> None:
    jobs, reasons = by_id(data["jpm/jobs"]), by_id(data["jpm/job-cancel-reasons"])
    logs = data["jpm/job-canceled-logs"]
    canceled = {job_id for job_id, job in jobs.items() if job["jobStatus"] == "Canceled"}
    assert canceled and Counter(log["jobId"] for log in logs) == Counter(canceled)
    for log in logs:
        assert log["reasonId"] in reasons
        assert jobs[log["jobId"]]["createdOn"] <= log["createdOn"] <= "2025-06-01"


def test_shifts_cover_every_assigned_appointment(data: Data) -> None:
    appointments, technicians = by_id(data["jpm/appointments"]), by_id(data["settings/technicians"])
    shifts: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for shift in data["dispatch/technician-shifts"]:
        assert shift["technicianId"] in technicians and shift["start"] < shift["end"]
        assert shift["shiftType"] == "Normal"
        assert moment(shift["end"]) - moment(shift["start"]) >= timedelta(hours=9)
        shifts[shift["technicianId"]].append((shift["start"], shift["end"]))
    for assignment in data["dispatch/appointment-assignments"]:
        appointment = appointments[assignment["appointmentId"]]
        assert any(
            start <= appointment["start"] and appointment["end"] <= end
            for start, end in shifts[assignment["technicianId"]]
        ), assignment
    days = Counter((technician, day(start)) for technician, spans in shifts.items() for start, _ in spans)
    assert set(days.values()) == {1}  # one shift a technician a day


def test_a_booked_calls_job_carries_the_calls_campaign(data: Data) -> None:
    jobs = by_id(data["jpm/jobs"])
    booked = [call for call in data["telecom/calls"] if call["type"] == "Booked"]
    assert booked
    for call in booked:
        assert jobs[call["job"]["id"]]["campaignId"] == call["campaign"]["id"]


def test_leads_and_bookings_point_at_real_records(data: Data) -> None:
    campaigns, types = by_id(data["marketing/campaigns"]), by_id(data["jpm/job-types"])
    customers, locations = by_id(data["crm/customers"]), by_id(data["crm/locations"])
    units, jobs = by_id(data["settings/business-units"]), by_id(data["jpm/jobs"])
    for lead in data["crm/leads"]:
        assert lead["campaignId"] in campaigns and lead["jobTypeId"] in types
        assert lead["customerId"] is None or lead["customerId"] in customers
        assert lead["locationId"] is None or lead["locationId"] in locations
        assert lead["businessUnitId"] is None or lead["businessUnitId"] in units
    statuses: Counter[str] = Counter()
    for booking in data["crm/bookings"]:
        statuses[booking["status"]] += 1
        assert booking["campaignId"] in campaigns and booking["jobTypeId"] in types
        assert booking["businessUnitId"] is None or booking["businessUnitId"] in units
        if booking["status"] == "Converted":
            assert jobs[booking["jobId"]]["jobTypeId"] == booking["jobTypeId"]
        else:
            assert booking["jobId"] is None
    assert statuses["Converted"]


def test_business_data_is_deterministic_and_independent_of_what_else_is_served(data: Data) -> None:
    alone = Simulator(config(datasets=("jpm/jobs",)))
    assert alone.ground_truth(TENANT, "jpm/jobs") == data["jpm/jobs"]
    calls = Simulator(config(datasets=("telecom/calls", "memberships/memberships")))
    assert calls.ground_truth(TENANT, "telecom/calls") == data["telecom/calls"]
    assert calls.ground_truth(TENANT, "memberships/memberships") == data["memberships/memberships"]
    items = Simulator(config(datasets=("sales/estimates/items",)))
    assert items.ground_truth(TENANT, "sales/estimates/items") == data["sales/estimates/items"]
    history = Simulator(config(datasets=("memberships/membership-status-changes", "accounting/ap-bills")))
    for key in ("memberships/membership-status-changes", "accounting/ap-bills"):
        assert history.ground_truth(TENANT, key) == data[key], key


def test_simulated_changes_keep_the_business_data_plausible() -> None:
    keys = ("jpm/jobs", "accounting/invoices", "accounting/payments", "sales/estimates")
    simulator = Simulator(config(scale=0.05, datasets=keys))
    created = {key: simulator.apply_changes(TENANT, key, created=3, updated=2)["created"] for key in keys}
    jobs = by_id(simulator.ground_truth(TENANT, "jpm/jobs"))
    invoices = by_id(simulator.ground_truth(TENANT, "accounting/invoices"))
    for job_id in created["jpm/jobs"]:
        job = jobs[job_id]
        assert job["jobStatus"] == "Scheduled" and job["completedOn"] is None and job["invoiceId"] is None
    for invoice_id in created["accounting/invoices"]:
        invoice = invoices[invoice_id]
        assert invoice["job"]["id"] in jobs
        subtotal = sum((money(item["total"]) for item in invoice["items"]), Decimal(0))
        assert money(invoice["subTotal"]) == subtotal
        assert money(invoice["balance"]) == money(invoice["total"]) == subtotal + money(invoice["salesTax"])
    payments = by_id(simulator.ground_truth(TENANT, "accounting/payments"))
    for payment_id in created["accounting/payments"]:
        payment = payments[payment_id]
        assert payment["appliedTo"] == [] and payment["total"] == payment["unappliedAmount"]
    estimates = by_id(simulator.ground_truth(TENANT, "sales/estimates"))
    for estimate_id in created["sales/estimates"]:
        estimate = estimates[estimate_id]
        assert estimate["jobId"] in jobs and estimate["status"] == {"name": "Open", "value": 0}
    # Changed records keep their business fields.
    again = Simulator(config(scale=0.05, datasets=keys)).ground_truth(TENANT, "accounting/invoices")
    unchanged = {k: v for k, v in invoices.items() if k not in created["accounting/invoices"]}
    for invoice in again:
        assert {**unchanged[invoice["id"]], "modifiedOn": None, "active": None} == {
            **invoice,
            "modifiedOn": None,
            "active": None,
        }
