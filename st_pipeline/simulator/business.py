"""Business rules: make a tenant's generated records agree the way a real shop's books do.

The schema-driven generators (``schema``, ``values``) produce spec-shaped records whose leaf
values are random per field. This pass runs on each record's dict right after that (before it
is serialized) and rewrites the fields that KPIs are computed from, so that, per tenant:

- jobs have a real job type, a status (mostly ``Completed``), a ``completedOn`` iff completed,
  a ``noCharge`` flag, and show their invoice's id and total;
- invoices belong to their job (or to no job, or adjust another invoice of the same job), their
  items multiply out (``quantity × price = total``) and add up (``subTotal``), the tax and total
  follow, and ``balance`` is what the payments applied to them leave open;
- payments are applied to real invoices, never beyond what is owed;
- estimates, memberships, calls, leads, bookings, assignments and splits point at real jobs,
  locations, technicians, campaigns and job types, with dates that follow from the jobs';
- labour (gross pay), materials (purchase orders, vendor bills), campaign costs, membership
  status histories and service events, cancellations and technician shifts follow the jobs,
  crews, campaigns and memberships they are about.

Everything is drawn from random streams of its own (``{seed}:{tenant}:{dataset}:business``), so
the generic generators' streams, and with them the ids, counts and timestamps of every core
record, are exactly what they were without this pass. Money is computed with ``Decimal`` and
written the way each API writes it: accounting as strings with two decimals, elsewhere as JSON
numbers.

A :class:`TenantBusiness` lives as long as its tenant's data: it holds the compact facts later
datasets need (one :class:`JobFact` per job, the planned payments) and the rules of every
dataset (:meth:`TenantBusiness.rules_for`), which simulated changes use for new records too.

What the fields mean, for KPIs computed from them:

- ``jpm/jobs``: ``jobStatus`` is Completed, Scheduled, InProgress, Hold or Canceled;
  ``completedOn`` is set iff Completed; ``noCharge`` is true for no-charge job types and a few
  others; ``invoiceId`` is the job's own invoice (null if it has none) and ``total`` that
  invoice's ``total`` (0.0 without one); ``jobNumber`` is the id as a string.
- ``accounting/invoices``: ``job`` is null for counter sales (``invoiceConfiguration``
  "CounterSales"); ``adjustmentToId`` (else null) marks an adjustment to another invoice of the
  same job, positive or negative; a job's own invoice has ``adjustmentToId`` null and items
  only if the job is completed (otherwise none, total 0.00, no ``invoiceDate``); its
  ``invoiceDate`` is on or after the job's completion. An item counts as revenue iff ``generalLedgerAccount.type`` is
  "Income" (else "Asset" or "Liability"), credited to the item's own ``businessUnit``;
  ``type`` "PriceModifier" items are discounts (negative). ``subTotal`` is the sum of item
  totals, ``total`` = ``subTotal`` + ``salesTax``, ``balance`` = ``total`` − payments applied,
  ``paidOn`` the day the balance reached 0.00 (null otherwise).
- ``accounting/invoice-items``: exactly the items embedded in the invoices (same ids), with
  ``invoiceId``.
- ``accounting/payments``: one ``appliedTo`` entry (``appliedTo`` an invoice id,
  ``appliedAmount``) or none (an unapplied payment); ``total`` = applied + ``unappliedAmount``.
- ``sales/estimates``: ``status`` {"name": "Sold"|"Open"|"Dismissed", "value": 1|0|2};
  ``soldOn``/``soldBy`` set iff Sold, on the job's completion day or a later day;
  ``subtotal`` = sum of item ``total`` (= ``qty`` × ``unitRate``). ``sales/estimates/items``
  are the embedded items.
- ``memberships/memberships``: ``from`` is the sale day (midnight UTC; the completion day of a
  job at that location, or a later day), ``to`` a year after; ``status`` Active, Expired
  (``to`` passed) or Canceled (with ``cancellationDate``).
- ``telecom/calls``: ``type`` is Booked, Unbooked, Excused or Abandoned; a Booked call's
  ``job`` is the job it booked (others: null); ``direction`` mostly Inbound.
- ``crm/bookings``: status Converted iff ``jobId`` is set. ``telecom/calls``, ``crm/leads``
  and ``jpm/jobs`` name real campaigns; a Booked call's ``campaign`` is its job's ``campaignId``.
- Crews: every job has one to two technicians (the lead first) and their shares of its credit:
  100, or 50/50, 60/40, 70/30. ``dispatch/appointment-assignments`` has one record per
  appointment and crew technician (``assignedOn`` between the job's creation and the visit);
  ``payroll/jobs/splits`` one per completed job and crew technician, ``split`` adding up to 100
  per job — so a job's split technicians are exactly its assigned ones.
- ``payroll/gross-pay-items``: labour cost. Per completed job and crew technician one
  ``TimesheetTime`` item: ``paidDurationHours`` the job's visit hours (quarter hours),
  ``amount`` those hours at the technician's ``hourlyRate`` (time and a half when
  ``paidTimeType`` is Overtime), ``date`` midnight of the completion day, ``startedOn``/``endedOn``
  the first visit's start and last visit's end. Some invoiced jobs add an ``InvoiceRelatedBonus``
  per technician (2–5% of the invoice total, by split; ``invoiceId`` the job's invoice).
  ``employeeId`` is the technician's id, ``employeeType`` Technician.
- ``inventory/purchase-orders``: materials bought for a job. Some completed jobs whose own
  invoice has Material/Equipment items have one order: its ``items`` are those items (same
  quantity) at their unit ``cost``, so the items' sum equals the invoice items' ``totalCost``;
  ``total`` = items + ``tax`` + ``shipping``; ``date`` after the job's creation, ``receivedOn``
  before its completion; ``jobId``/``invoiceId`` the job's. ``accounting/ap-bills``: the
  vendor's bill of such an order (unless not yet billed): ``purchaseOrderId``, the same
  ``jobId``, ``billAmount`` = the order's ``total`` (with ``taxAmount``, ``shippingAmount``),
  ``billDate`` on or after its receipt.
- ``marketing/costs``: one record per campaign and month of the history (``year``, ``month``)
  with the campaign's ``dailyCost`` that month (the month's spend = daily cost × its days);
  referral, repeat-customer and website campaigns cost 0.
- ``memberships/membership-status-changes``: each membership starts Active; a Canceled one has
  a change Active → Canceled dated (``createdOn``) its ``cancellationDate``, an Expired one
  Active → Expired at its ``to``; a few were Suspended for a while (and Active again) before.
  Replaying a membership's changes in date order ends at its ``status``. No renewals.
- ``memberships/recurring-service-events``: a membership's service visits, two a year of its
  term from two weeks after the sale: ``Won`` (``jobId`` a completed job at its location, done
  on or after the event's ``date`` and before the next event), else Contacted, Unreachable or
  Dismissed; Dismissed after a cancellation, NotAttempted when still to come.
- ``jpm/job-canceled-logs``: exactly one per Canceled job, ``createdOn`` within three days of
  the job's creation, ``reasonId`` one of ``jpm/job-cancel-reasons``.
- ``dispatch/technician-shifts``: available hours. One Normal shift per technician and day on
  which an appointment assigned to them starts: 08:00–17:00 UTC, stretched to whole hours
  covering that day's visits. Days without appointments have no shift.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from st_pipeline.simulator.clock import (
    REFERENCE_END_TICKS,
    REFERENCE_START_TICKS,
    TICKS_PER_DAY,
    TICKS_PER_SECOND,
    format_ticks,
)
from st_pipeline.simulator.schema import RefTarget
from st_pipeline.simulator.store import StoredRecord, dumpb

Record = dict[str, Any]
Refs = dict[str, RefTarget]
Draw = Callable[[], float]

BUSINESS_UNITS = "settings/business-units"
TECHNICIANS = "settings/technicians"
CUSTOMERS = "crm/customers"
LOCATIONS = "crm/locations"
JOBS = "jpm/jobs"
APPOINTMENTS = "jpm/appointments"
INVOICES = "accounting/invoices"
PAYMENTS = "accounting/payments"
INVOICE_ITEMS = "accounting/invoice-items"
JOB_TYPES = "jpm/job-types"
CAMPAIGNS = "marketing/campaigns"
MEMBERSHIP_TYPES = "memberships/membership-types"
MEMBERSHIPS = "memberships/memberships"
ESTIMATES = "sales/estimates"
ESTIMATE_ITEMS = "sales/estimates/items"
CALLS = "telecom/calls"
LEADS = "crm/leads"
BOOKINGS = "crm/bookings"
ASSIGNMENTS = "dispatch/appointment-assignments"
SPLITS = "payroll/jobs/splits"
GROSS_PAY = "payroll/gross-pay-items"
PURCHASE_ORDERS = "inventory/purchase-orders"
AP_BILLS = "accounting/ap-bills"
CAMPAIGN_COSTS = "marketing/costs"
STATUS_CHANGES = "memberships/membership-status-changes"
SERVICE_EVENTS = "memberships/recurring-service-events"
CANCEL_REASONS = "jpm/job-cancel-reasons"
CANCELED_LOGS = "jpm/job-canceled-logs"
SHIFTS = "dispatch/technician-shifts"

# Datasets whose business fields come from other datasets' records, beyond the references their
# schemas name: generating one generates these too (so its records never depend on which
# datasets are served).
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    JOBS: (INVOICES, TECHNICIANS, BUSINESS_UNITS),  # a job shows its invoice's id and total
    APPOINTMENTS: (JOBS,),
    INVOICE_ITEMS: (INVOICES,),
    ESTIMATES: (JOBS, TECHNICIANS, BUSINESS_UNITS),
    ESTIMATE_ITEMS: (ESTIMATES,),
    MEMBERSHIPS: (JOBS, TECHNICIANS, BUSINESS_UNITS),
    CALLS: (JOBS,),
    LEADS: (BUSINESS_UNITS,),
    BOOKINGS: (JOBS, BUSINESS_UNITS),
    ASSIGNMENTS: (APPOINTMENTS, JOBS, TECHNICIANS),
    SPLITS: (JOBS, TECHNICIANS),
    JOB_TYPES: (BUSINESS_UNITS,),
    GROSS_PAY: (JOBS, APPOINTMENTS, INVOICES, TECHNICIANS, BUSINESS_UNITS),
    PURCHASE_ORDERS: (JOBS, INVOICES, TECHNICIANS),
    AP_BILLS: (JOBS, INVOICES, TECHNICIANS),
    STATUS_CHANGES: (MEMBERSHIPS,),
    SERVICE_EVENTS: (MEMBERSHIPS, JOBS),
    CANCELED_LOGS: (JOBS, CANCEL_REASONS),
    SHIFTS: (APPOINTMENTS, JOBS, TECHNICIANS),
}

HOUR = 3600 * TICKS_PER_SECOND
DAY = TICKS_PER_DAY
END = REFERENCE_END_TICKS
CENT = Decimal("0.01")
ZERO = Decimal("0.00")

# -- shares --------------------------------------------------------------------------------------

JOB_STATUSES = (  # (status, cumulative share)
    ("Completed", 0.70),
    ("Scheduled", 0.80),
    ("InProgress", 0.85),
    ("Hold", 0.90),
    ("Canceled", 1.0),
)
NO_CHARGE_TYPE_SHARE = 0.03  # jobs of a no-charge job type …
NO_CHARGE_EXTRA_SHARE = 0.02  # … plus jobs flagged no-charge on their own: ~5% in all
NO_JOB_INVOICE_SHARE = 0.03
ADJUSTMENT_SHARE = 0.05
OTHER_UNIT_ITEM_SHARE = 0.20  # items credited to another business unit than the invoice's
NON_INCOME_ITEM_SHARE = 0.10  # items posted to a balance-sheet account (not revenue)
PAID_IN_FULL_SHARE = 0.72  # of invoices with a positive total …
TWO_PAYMENTS_SHARE = 0.30  # … (of those paid in full: a deposit, then the rest)
PARTLY_PAID_SHARE = 0.10  # … the rest stay unpaid
OVERPAID_SHARE = 0.04  # payments with an unapplied remainder
ESTIMATE_ON_COMPLETED_SHARE = 0.85
ESTIMATE_STATUSES = (("Sold", 1, 0.45), ("Open", 0, 0.75), ("Dismissed", 2, 1.0))
SOLD_LATER_SHARE = 0.30
MEMBERSHIP_SAME_DAY_SHARE = 0.70
MEMBERSHIP_CANCELED_SHARE = 0.10
CALL_TYPES = (("Booked", 0.45), ("Unbooked", 0.75), ("Excused", 0.90), ("Abandoned", 1.0))
BOOKING_STATUSES = (("Converted", 0.5), ("Accepted", 0.65), ("New", 0.8), ("Dismissed", 1.0))
LEAD_STATUSES = (("Open", 0.3), ("Dismissed", 0.6), ("Converted", 1.0))
FIRST_ITEM_TYPES = ("Service", "Service", "Service", "Material", "Equipment")  # an invoice's first item
MORE_ITEM_TYPES = (("Service", 0.35), ("Material", 0.75), ("Equipment", 0.85), ("PriceModifier", 1.0))
INBOUND_SHARE = 0.85
FREE_CAMPAIGNS = ("Referral", "Repeat", "Website")  # campaigns (by first word) that cost nothing
CREW_PATTERNS = ((100,), (100,), (100,), (50, 50), (60, 40), (70, 30))  # a job's technicians' splits
OVERTIME_SHARE = 0.10  # labour paid at time and a half
BONUS_SHARE = 0.40  # jobs whose technicians also earn a bonus on the invoice
LOWEST_RATE, HIGHEST_RATE = Decimal("18.00"), Decimal("80.00")
PURCHASE_ORDER_SHARE = 0.60  # of jobs with materials on their invoice (the rest: truck stock)
SUSPENDED_SHARE = 0.05  # memberships suspended for a while (then active again)
SERVICE_EVERY = 182 * TICKS_PER_DAY  # a membership's recurring service: twice a year
SERVICE_JOB_WINDOW = SERVICE_EVERY  # a job at the location before the next event wins it
SERVICE_OUTCOMES = (("Contacted", 0.4), ("Unreachable", 0.7), ("Dismissed", 1.0))  # past, not won
SHIFT_START, SHIFT_END = 8 * 3600 * TICKS_PER_SECOND, 17 * 3600 * TICKS_PER_SECOND  # 08:00–17:00 UTC

# -- vocabularies --------------------------------------------------------------------------------

JOB_TYPE_TEMPLATES: tuple[tuple[str, int, bool], ...] = (  # name, sold threshold, no charge
    ("Service Call", 100, False),
    ("Maintenance", 0, False),
    ("Replacement", 500, False),
    ("Warranty", 0, True),
    ("Repair", 250, False),
    ("Install", 500, False),
    ("Tune-Up", 100, False),
    ("Inspection", 0, False),
    ("Drain Cleaning", 250, False),
    ("Recall", 0, True),
    ("Water Heater", 500, False),
    ("Estimate Visit", 100, False),
    ("Emergency Service", 250, False),
    ("Duct Cleaning", 250, False),
    ("Indoor Air Quality", 100, False),
    ("Callback", 0, True),
)
BUSINESS_UNIT_NAMES = (
    "HVAC Service",
    "HVAC Install",
    "Plumbing Service",
    "Plumbing Install",
    "Electrical Service",
    "Electrical Install",
    "Drains & Sewer",
    "Commercial",
)
CAMPAIGN_NAMES = (
    "Google Ads",
    "Yelp",
    "Facebook",
    "Direct Mail",
    "Referral",
    "Website",
    "Repeat Customer",
    "Radio",
    "Truck Wrap",
    "Home Show",
    "Nextdoor",
    "Angi",
)
MEMBERSHIP_TYPE_NAMES = (
    "Comfort Club",
    "Gold Plan",
    "Silver Plan",
    "Plumbing Protection",
    "Whole Home Plan",
    "Commercial Care",
)
PAYMENT_TERMS = {"Net 15": 15, "Net 30": 30}  # days; other terms: due on receipt
PAYMENT_TYPES = ("Credit Card", "Credit Card", "Check", "Cash", "ACH", "Financing")

# Price book: per item type, (name, lowest, highest unit price in cents).
SKUS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "Service": (
        ("Diagnostic Fee", 8_900, 12_900),
        ("Repair Labor", 15_000, 65_000),
        ("System Tune-Up", 9_900, 19_900),
        ("Drain Clearing", 17_500, 39_500),
        ("Safety Inspection", 7_900, 14_900),
    ),
    "Material": (
        ("Capacitor", 4_500, 18_000),
        ("Air Filter", 1_500, 6_500),
        ("Copper Fitting", 500, 4_500),
        ("Thermostat", 9_000, 35_000),
        ("PVC Pipe", 800, 6_000),
    ),
    "Equipment": (
        ("Water Heater 50 gal", 120_000, 320_000),
        ("AC Condenser 3 ton", 350_000, 900_000),
        ("Gas Furnace 80k BTU", 250_000, 650_000),
        ("Sump Pump", 40_000, 120_000),
    ),
    "PriceModifier": (("Member Discount", 0, 0), ("Coupon", 0, 0)),
}
SKU_IDS: dict[str, int] = {
    name: 810_001 + index for index, name in enumerate(name for skus in SKUS.values() for name, _, _ in skus)
}
NO_CHARGE_SKU = "No Charge Visit"
ADJUSTMENT_SKUS = {True: "Additional Work", False: "Credit Adjustment"}  # by sign
SKU_IDS[NO_CHARGE_SKU] = 810_101
SKU_IDS[ADJUSTMENT_SKUS[True]] = 810_102
SKU_IDS[ADJUSTMENT_SKUS[False]] = 810_103


def _gl_account(number: str, name: str, kind: str, detail: str) -> Record:
    return {"detailType": detail, "id": 9_000_000 + int(number), "name": name, "number": number, "type": kind}


# The chart of accounts items post to. Revenue is what posts to an account of type "Income".
INCOME_ACCOUNTS: dict[str, Record] = {
    "Service": _gl_account("4000", "Service Income", "Income", "Service/Fee Income"),
    "Material": _gl_account("4100", "Material Sales", "Income", "Sales of Product Income"),
    "Equipment": _gl_account("4200", "Equipment Sales", "Income", "Sales of Product Income"),
    "PriceModifier": _gl_account("4900", "Discounts & Adjustments", "Income", "Discounts/Refunds Given"),
}
NON_INCOME_ACCOUNTS: tuple[Record, ...] = (
    _gl_account("2100", "Customer Deposits", "Liability", "Other Current Liabilities"),
    _gl_account("1400", "Inventory Asset", "Asset", "Inventory"),
)
COST_OF_SALES = _gl_account("5000", "Cost of Goods Sold", "CostOfGoodsSold", "Supplies & Materials - COGS")

APPOINTMENT_STATUS = {
    "Completed": "Done",
    "Scheduled": "Scheduled",
    "InProgress": "Working",
    "Hold": "Hold",
    "Canceled": "Canceled",
}
ASSIGNMENT_STATUS = {"Completed": "Done", "InProgress": "Working"}  # else "Scheduled"

# Job fields that would point at records nobody generates: null rather than dangling.
_DANGLING_JOB_FIELDS = (
    "bookingId",
    "leadCallId",
    "partnerLeadCallId",
    "membershipId",
    "recallForId",
    "warrantyId",
    "createdFromEstimateId",
)
# Placeholders a job is serialized with until its invoice exists (see InvoiceRules.finish).
_INVOICE_PLACEHOLDER = -987_650_001
_TOTAL_PLACEHOLDER = -987_650_002
_INVOICE_MEMBER = b'"invoiceId":%d' % _INVOICE_PLACEHOLDER
_TOTAL_MEMBER = b'"total":%d' % _TOTAL_PLACEHOLDER


def money(amount: Decimal) -> str:
    """Accounting's wire format: a decimal string with two decimals (``"-12.50"``).

    Every amount here is kept at two decimal places (cents, their sums and products with whole
    quantities, or quantized), so its plain string is that format.
    """
    return str(amount)


def _cents(value: int) -> Decimal:
    return Decimal(value).scaleb(-2)


def _day_start(ticks: int) -> int:
    return ticks - ticks % DAY


def _named(target: RefTarget | None) -> Record | None:
    return None if target is None else {"id": target.id, "name": target.name}


def _pick(items: Sequence[Any], r: Draw) -> Any:
    return items[int(r() * len(items))]


def _choose(table: Sequence[tuple[str, float]], u: float) -> str:
    """The name whose cumulative share first exceeds ``u``."""
    for name, share in table:
        if u < share:
            return name
    return table[-1][0]


class JobType:
    """A job type: its sold threshold and no-charge flag decide conversion KPIs."""

    __slots__ = ("id", "name", "sold_threshold", "no_charge")

    def __init__(self, type_id: int, name: str, sold_threshold: int, no_charge: bool) -> None:
        self.id = type_id
        self.name = name
        self.sold_threshold = sold_threshold
        self.no_charge = no_charge


class JobFact:
    """What later datasets need to know about one job (kept for every job of a tenant)."""

    __slots__ = (
        "id",
        "number",
        "customer",
        "location",
        "unit",
        "status",
        "created",
        "completed",
        "type",
        "no_charge",
        "invoice_id",
        "total",
        "record",
        "target",
        "campaign",
        "visits",
        "materials",
    )

    def __init__(
        self,
        job_id: int,
        refs: Refs,
        status: str,
        created: int,
        completed: int | None,
        job_type: JobType,
        no_charge: bool,
    ) -> None:
        self.id = job_id
        self.number = str(job_id)
        self.customer = refs.get(CUSTOMERS)
        self.location = refs.get(LOCATIONS)
        self.unit = refs.get(BUSINESS_UNITS)
        self.status = status
        self.created = created
        self.completed = completed
        self.type = job_type
        self.no_charge = no_charge
        self.invoice_id: int | None = None  # its own (first) invoice
        self.total = ZERO  # that invoice's total
        self.record: StoredRecord | None = None  # serialized with placeholders until invoiced
        self.target: RefTarget | None = None
        self.campaign: int | None = None  # the campaign the job is attributed to
        self.visits: list[tuple[int, int, int]] = []  # its appointments: (id, start, end)
        # The Material and Equipment items of its own invoice: (sku, kind, quantity, unit cost).
        self.materials: list[tuple[str, str, int, Decimal]] = []


class PaymentSlot:
    """One planned application of a payment to an invoice."""

    __slots__ = ("date", "invoice_id", "amount", "customer", "unit")

    def __init__(
        self,
        date: int,
        invoice_id: int,
        amount: Decimal,
        customer: RefTarget | None,
        unit: RefTarget | None,
    ) -> None:
        self.date = date
        self.invoice_id = invoice_id
        self.amount = amount
        self.customer = customer
        self.unit = unit


class MembershipFact:
    """What a membership's status history and service events need to know about it."""

    __slots__ = ("id", "location", "name", "sold", "ends", "status", "cancelled")

    def __init__(
        self,
        membership_id: int,
        location: int | None,
        name: str | None,
        sold: int,
        ends: int,
        status: str,
        cancelled: int | None,
    ) -> None:
        self.id = membership_id
        self.location = location
        self.name = name
        self.sold = sold
        self.ends = ends
        self.status = status
        self.cancelled = cancelled


class Purchase:
    """A purchase order for a job's materials (and the vendor's bill for it)."""

    __slots__ = ("id", "job", "date", "received", "items", "subtotal", "tax", "shipping", "billed")

    def __init__(
        self,
        job: JobFact,
        date: int,
        received: int,
        items: list[tuple[str, str, int, Decimal]],
        tax_rate: Decimal,
        shipping: Decimal,
        billed: int | None,
    ) -> None:
        self.id = 0  # decided once every purchase is known
        self.job = job
        self.date = date
        self.received = received
        self.items = items
        self.subtotal = sum((cost * quantity for _, _, quantity, cost in items), ZERO)
        self.tax = (self.subtotal * tax_rate).quantize(CENT, ROUND_HALF_UP)
        self.shipping = shipping
        self.billed = billed  # the bill's date (None: not billed yet)

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax + self.shipping


class TenantBusiness:
    """The business state of one tenant's generation run, and the rules of its datasets.

    ``planned`` are the datasets being generated, ``volume(key)`` the record count of a dataset
    at this tenant's scale, ``id_base(key)`` the start of a dataset's id range; ``pools`` are
    the generated core records (filled in as they are generated).
    """

    def __init__(
        self,
        seed: int,
        tenant_id: int,
        pools: dict[str, list[RefTarget]],
        planned: frozenset[str],
        volume: Callable[[str], int],
        id_base: Callable[[str], int],
    ) -> None:
        self.seed = seed
        self.tenant_id = tenant_id
        self.pools = pools
        self.planned = planned
        self._id_base = id_base
        rng = random.Random(f"{seed}:{tenant_id}:business")
        self.tax_rate = Decimal(500 + int(rng.random() * 400)).scaleb(-4)  # 5.00%–8.99%

        self.job_types = [
            JobType(type_id, *self._template(index))
            for index, type_id in enumerate(self._ids(JOB_TYPES, volume(JOB_TYPES)))
        ]
        self.charged_types = [t for t in self.job_types if not t.no_charge] or self.job_types
        self.free_types = [t for t in self.job_types if t.no_charge]
        self.campaigns = [
            (campaign_id, _numbered(CAMPAIGN_NAMES, index))
            for index, campaign_id in enumerate(self._ids(CAMPAIGNS, volume(CAMPAIGNS)))
        ]
        self.membership_types = [
            (type_id, _numbered(MEMBERSHIP_TYPE_NAMES, index))
            for index, type_id in enumerate(self._ids(MEMBERSHIP_TYPES, volume(MEMBERSHIP_TYPES)))
        ]

        self.jobs: list[JobFact] = []  # in generation (creation) order
        self.job_by_id: dict[int, JobFact] = {}
        self.job_created: list[int] = []  # creation ticks of ``jobs``, for "the job after a call"
        self.completed_jobs: list[JobFact] = []
        self.jobs_invoiced = False
        self.payment_budget = volume(PAYMENTS)
        self.payment_slots: list[PaymentSlot] = []
        # Embedded items kept for the datasets that serve them on their own (only if planned).
        self.invoice_items: list[tuple[Record, int, bool, int, int]] | None = [] if INVOICE_ITEMS in planned else None
        self.estimate_items: list[tuple[Record, int, int]] | None = [] if ESTIMATE_ITEMS in planned else None
        self._next_ids = {key: self._range_start(key) for key in (INVOICE_ITEMS, ESTIMATE_ITEMS)}
        self._rules: dict[str, Rules | None] = {}
        self._other_units: dict[int | None, list[RefTarget]] = {}
        self.campaign_names = dict(self.campaigns)
        # Facts later datasets need: every appointment (id, job, start, end), every membership,
        # the cancel reasons' ids, the technicians' hourly rates; decided here: the crews.
        self.visits: list[tuple[int, JobFact, int, int]] = []
        self.memberships: list[MembershipFact] = []
        self.cancel_reasons: list[int] = []
        self.hourly_rates: dict[int, Decimal] = {}
        self._crews: dict[int, tuple[tuple[RefTarget, int], ...]] | None = None
        self._purchases: list[Purchase] | None = None

    # -- reference entities ------------------------------------------------------------------

    def _range_start(self, key: str) -> int:
        return self._id_base(key) + (self.tenant_id % 1000) * 1000

    def _ids(self, key: str, count: int) -> list[int]:
        """Ids of a small reference dataset, decided here so that core records can point at
        them before (or without) the dataset being generated."""
        rng = random.Random(f"{self.seed}:{self.tenant_id}:{key}:ids")
        ids, next_id = [], self._range_start(key)
        for _ in range(count):
            next_id += 1 + int(rng.random() * 3)
            ids.append(next_id)
        return ids

    @staticmethod
    def _template(index: int) -> tuple[str, int, bool]:
        name, threshold, no_charge = JOB_TYPE_TEMPLATES[index % len(JOB_TYPE_TEMPLATES)]
        return _numbered((name,), index // len(JOB_TYPE_TEMPLATES)), threshold, no_charge

    def next_id(self, key: str) -> int:
        """The next id of an embedded item (``key``: the dataset that serves such items)."""
        value = self._next_ids[key] = self._next_ids[key] + 1
        return value

    def pick_job_type(self, r: Draw) -> JobType:
        if self.free_types and r() < NO_CHARGE_TYPE_SHARE:
            return _pick(self.free_types, r)
        return _pick(self.charged_types, r)

    def pool(self, key: str) -> list[RefTarget]:
        return self.pools.get(key) or []

    def job_after(self, ticks: int, r: Draw) -> JobFact | None:
        """A job created at or shortly after ``ticks`` (what a call or booking turned into)."""
        if not self.jobs:
            return None
        index = bisect_left(self.job_created, ticks) + int(r() * 3)
        return self.jobs[min(index, len(self.jobs) - 1)]

    def other_units(self, unit: RefTarget | None) -> list[RefTarget]:
        """The business units other than ``unit`` (all of them for ``None``)."""
        key = None if unit is None else unit.id
        others = self._other_units.get(key)
        if others is None:
            others = self._other_units[key] = [u for u in self.pool(BUSINESS_UNITS) if u.id != key]
        return others

    def crew(self, job: JobFact) -> tuple[tuple[RefTarget, int], ...]:
        """The technicians who work ``job`` and their split of its credit (percent, adding up to
        100; the lead first): decided for every job at once, from a stream of their own."""
        if self._crews is None:
            rng = random.Random(f"{self.seed}:{self.tenant_id}:crews:business")
            r = rng.random
            technicians = self.pool(TECHNICIANS)
            self._crews = {}
            for each in self.jobs:
                pattern = _pick(CREW_PATTERNS, r)
                if len(pattern) > len(technicians):
                    pattern = (100,)
                chosen: list[RefTarget] = []
                while len(chosen) < len(pattern):
                    technician = _pick(technicians, r)
                    if technician not in chosen:
                        chosen.append(technician)
                self._crews[each.id] = tuple(zip(chosen, pattern, strict=True))
        return self._crews.get(job.id, ())

    def hourly_rate(self, technician: RefTarget) -> Decimal:
        """The technician's pay per hour (its record's ``hourlyRate`` when that is plausible)."""
        rate = self.hourly_rates.get(technician.id)
        if rate is None or not LOWEST_RATE <= rate <= HIGHEST_RATE:
            rate = LOWEST_RATE + Decimal(technician.id % 2_000).scaleb(-2)  # $18.00–$37.99
        return rate

    def purchases(self) -> list[Purchase]:
        """The purchase orders of the jobs' materials: for some completed jobs whose own invoice
        has Material or Equipment items, those items at their unit cost."""
        if self._purchases is None:
            rng = random.Random(f"{self.seed}:{self.tenant_id}:purchases:business")
            r = rng.random
            found = []
            for job in self.completed_jobs:
                if not job.materials or r() >= PURCHASE_ORDER_SHARE:
                    continue
                assert job.completed is not None
                date = job.created + int(r() * (job.completed - job.created) / 2)
                received = date + int(r() * (job.completed - date))
                equipment = any(kind == "Equipment" for _, kind, _, _ in job.materials)
                shipping = _cents(1_500 + int(r() * 6_000)) if equipment else ZERO
                billed = received + int(r() * 12 * DAY)
                found.append(
                    Purchase(
                        job, date, received, job.materials, self.tax_rate, shipping, billed if billed <= END else None
                    )
                )
            for purchase, purchase_id in zip(found, self._ids(PURCHASE_ORDERS, len(found)), strict=True):
                purchase.id = purchase_id
            self._purchases = found
        return self._purchases

    def add_job(self, job: JobFact) -> None:
        self.jobs.append(job)
        self.job_by_id[job.id] = job
        self.job_created.append(job.created)
        if job.completed is not None:
            self.completed_jobs.append(job)

    # -- rules -------------------------------------------------------------------------------

    def rules_for(self, key: str) -> Rules | None:
        """The rules of dataset ``key`` (``None``: its records are left as generated)."""
        if key not in self._rules:
            factory = RULES.get(key)
            self._rules[key] = factory(self, key) if factory is not None else None
        return self._rules[key]

    def patch_jobs(self) -> None:
        """Write every job's invoice id and total into its serialized record."""
        for job in self.jobs:
            record = job.record
            if record is None:
                continue
            invoice = b"null" if job.invoice_id is None else str(job.invoice_id).encode()
            total = repr(float(job.total)).encode()
            record.blob = record.blob.replace(_INVOICE_MEMBER, b'"invoiceId":' + invoice, 1).replace(
                _TOTAL_MEMBER, b'"total":' + total, 1
            )
            job.record = None
        self.jobs_invoiced = True

    def close(self) -> None:
        """End of the generation run: no placeholder survives, and what only the run needed
        (kept items, planned payments) is released. The job facts stay, for new records."""
        if not self.jobs_invoiced:
            self.patch_jobs()
        self.invoice_items = None
        self.estimate_items = None
        self.payment_slots = []
        self.visits = []  # (the memberships stay: new status changes and events point at them)
        self._purchases = None
        for job in self.jobs:
            job.visits = []
            job.materials = []
        for rules in self._rules.values():
            if rules is not None:
                rules.release()


def _numbered(names: Sequence[str], index: int) -> str:
    """``names[index]``, then the names again with a number: ``Yelp``, …, ``Yelp 2``."""
    name = names[index % len(names)]
    round_ = index // len(names)
    return name if round_ == 0 else f"{name} {round_ + 1}"


class Rules:
    """The business rules of one dataset.

    The generator calls :meth:`begin` with the record count, then for every record
    :meth:`apply` (on the dict, before it is serialized) and :meth:`stored` (with the
    serialized record and, for core datasets, its pool entry), then :meth:`finish`. ``index`` is
    the record's position; ``-1`` marks a record added by a simulated change, which draws from
    the change's random stream ``r``.
    """

    derived = False  # records are the items embedded in another dataset's records

    def __init__(self, business: TenantBusiness, key: str) -> None:
        self.b = business
        self.key = key
        self.rng = random.Random(f"{business.seed}:{business.tenant_id}:{key}:business")
        self.r = self.rng.random
        self._nulls: dict[tuple[str, ...], Record] = {}

    def ids(self, count: int) -> list[int] | None:
        """Ids to give the records instead of generated ones (``None``: keep those)."""
        return None

    def count(self, volume: int) -> int:
        """How many records to generate (``volume``: the dataset's usual count at this scale)."""
        return volume

    def created_ticks(self, ticks: list[int]) -> list[int]:
        """The records' creation times, ascending (``ticks``: the generated ones)."""
        return ticks

    def nulls(self, data: Record, names: tuple[str, ...]) -> Record:
        """``{name: None}`` for those of ``names`` the records have (worked out once)."""
        found = self._nulls.get(names)
        if found is None:
            found = self._nulls[names] = dict.fromkeys(name for name in names if name in data)
        return found

    def begin(self, count: int) -> None:
        """Called once before the first record."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        """Rewrite the business fields of one record (and, if need be, its references)."""

    def stored(self, record: StoredRecord, target: RefTarget | None) -> None:
        """The record as serialized (and its pool entry, for core datasets)."""

    def finish(self) -> None:
        """Called once after the last record."""

    def release(self) -> None:
        """The generation run is over: drop what only it needed."""

    def derived_records(self, keys: tuple[str, ...]) -> list[StoredRecord]:
        """All records of a derived dataset, with the given top-level keys."""
        raise NotImplementedError


# -- settings and reference entities --------------------------------------------------------------


class BusinessUnitRules(Rules):
    """Business units get distinct trade names (``HVAC Service``…), as KPIs are grouped by them."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        if "name" in data:
            data["name"] = _numbered(BUSINESS_UNIT_NAMES, index) if index >= 0 else f"Business unit {data['id']}"


class JobTypeRules(Rules):
    """Job types as decided by :class:`TenantBusiness`: name, sold threshold, no-charge flag."""

    def ids(self, count: int) -> list[int] | None:
        return [t.id for t in self.b.job_types[:count]]

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        if 0 <= index < len(self.b.job_types):
            job_type = self.b.job_types[index]
            data["name"] = job_type.name
            data["soldThreshold"] = float(job_type.sold_threshold)
            data["noCharge"] = job_type.no_charge
        else:
            data["soldThreshold"] = 0.0
            data["noCharge"] = False
        units = self.b.pool(BUSINESS_UNITS)
        if units and "businessUnitIds" in data:
            data["businessUnitIds"] = sorted({_pick(units, r).id for _ in range(1 + int(r() * 2))})


class CampaignRules(Rules):
    """Campaigns as decided by :class:`TenantBusiness` (calls, jobs and leads point at them)."""

    def ids(self, count: int) -> list[int] | None:
        return [campaign_id for campaign_id, _ in self.b.campaigns[:count]]

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        if 0 <= index < len(self.b.campaigns):
            data["name"] = self.b.campaigns[index][1]


class MembershipTypeRules(Rules):
    """Membership types as decided by :class:`TenantBusiness`."""

    def ids(self, count: int) -> list[int] | None:
        return [type_id for type_id, _ in self.b.membership_types[:count]]

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        if 0 <= index < len(self.b.membership_types):
            name = self.b.membership_types[index][1]
            data["name"] = name
            if "displayName" in data:
                data["displayName"] = name


# -- jobs and appointments ------------------------------------------------------------------------


class JobRules(Rules):
    """Status, completion, job type, no-charge flag; the invoice id and total come later."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        b = self.b
        job_id = data["id"]
        status = "Scheduled"
        if index >= 0:
            u = r()
            status = _choose(JOB_STATUSES, u)
        completed = None
        if status == "Completed":
            room = END - created
            delta = 2 * HOUR + int(r() ** 2 * 6 * DAY)
            if delta >= room:
                delta = 1 + int((room - 1) * r()) if room > 1 else 0
            if delta > 0:
                completed = created + delta
            else:
                status = "InProgress"
        job_type = b.pick_job_type(r)
        no_charge = job_type.no_charge or r() < NO_CHARGE_EXTRA_SHARE
        technicians = b.pool(TECHNICIANS)

        data["jobNumber"] = str(job_id)
        data["jobStatus"] = status
        data["completedOn"] = None if completed is None else format_ticks(completed)
        data["jobTypeId"] = job_type.id
        data["noCharge"] = no_charge
        campaign = None
        if b.campaigns:
            campaign = data["campaignId"] = _pick(b.campaigns, r)[0]
        if "soldById" in data:
            data["soldById"] = _pick(technicians, r).id if completed and technicians and r() < 0.6 else None
        data.update(self.nulls(data, _DANGLING_JOB_FIELDS))
        if index < 0:  # a new job: not invoiced yet
            data["invoiceId"] = None
            data["total"] = 0.0
            return
        data["invoiceId"] = _INVOICE_PLACEHOLDER
        data["total"] = _TOTAL_PLACEHOLDER
        job = JobFact(job_id, refs, status, created, completed, job_type, no_charge)
        job.campaign = campaign
        b.add_job(job)

    def stored(self, record: StoredRecord, target: RefTarget | None) -> None:
        job = self.b.jobs[-1]
        job.record = record
        job.target = target


class AppointmentRules(Rules):
    """An appointment's status and times follow its job's."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        job_id = data.get("jobId")
        job = None if job_id is None else self.b.job_by_id.get(job_id)
        if job is None:
            return
        if index < 0:
            start = created + HOUR + int(r() * 5 * DAY)
            data["status"] = "Scheduled"
        elif job.completed is not None:
            end = job.completed
            start = max(job.created, end - HOUR - int(r() * 2 * HOUR))
            data["status"] = APPOINTMENT_STATUS[job.status]
        else:
            start = job.created + HOUR + int(r() * 5 * DAY)
            data["status"] = APPOINTMENT_STATUS.get(job.status, "Scheduled")
        end = job.completed if index >= 0 and job.completed is not None else start + HOUR + int(r() * 2 * HOUR)
        data["start"] = format_ticks(start)
        data["end"] = format_ticks(max(end, start))
        if index >= 0:
            job.visits.append((data["id"], start, max(end, start)))
            self.b.visits.append((data["id"], job, start, max(end, start)))
        window = _day_start(start) + (start % DAY) // (2 * HOUR) * 2 * HOUR
        if data.get("arrivalWindowStart") is not None:
            data["arrivalWindowStart"] = format_ticks(window)
        if data.get("arrivalWindowEnd") is not None:
            data["arrivalWindowEnd"] = format_ticks(window + 2 * HOUR)


# -- invoices and payments ------------------------------------------------------------------------


class InvoiceRules(Rules):
    """Job invoices, counter sales and adjustments whose money adds up; plans the payments.

    Invoice *i* starts as the invoice of job *i* (the generator walks the jobs). It stays that
    (the job's own invoice: ``job.invoiceId``), unless it becomes an invoice with no job (a
    counter sale) or an adjustment to an earlier invoice of a completed job.
    """

    def __init__(self, business: TenantBusiness, key: str) -> None:
        super().__init__(business, key)
        self.adjustable: list[tuple[int, JobFact, int]] = []  # (invoice id, job, invoice date)

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        b = self.b
        target = refs.get(JOBS)
        job = b.job_by_id.get(target.id) if target is not None else None
        invoice_id = data["id"]
        u = r() if index >= 0 else 1.0
        adjusted: int | None = None
        items: list[Record]
        if job is None or u < NO_JOB_INVOICE_SHARE:
            refs.pop(JOBS, None)
            job = None
            date: int | None = created
            items, subtotal, discount = self._items(
                data, job, refs.get(BUSINESS_UNITS), 1 + int(r() * 3), date, r, first=("Material", "Service")
            )
            configuration = "CounterSales"
        elif u < NO_JOB_INVOICE_SHARE + ADJUSTMENT_SHARE and self.adjustable:
            adjusted, job, original_date = _pick(self.adjustable, r)
            refs[JOBS] = job.target
            for kind, value in ((CUSTOMERS, job.customer), (LOCATIONS, job.location), (BUSINESS_UNITS, job.unit)):
                if value is not None:
                    refs[kind] = value
            date = original_date + int(r() * min(20 * DAY, max(0, END - original_date)))
            items, subtotal, discount = self._items(data, job, job.unit, 1, date, r, adjustment=True)
            configuration = "JobInvoice"
        else:
            configuration = "JobInvoice"
            own = job.invoice_id is None and index >= 0
            if own:
                job.invoice_id = invoice_id
            if job.completed is None:
                date, items, subtotal, discount = None, [], ZERO, ZERO
            else:
                date = job.completed
                if r() >= 0.6:
                    date += int(r() ** 2 * min(3 * DAY, max(0, END - date)))
                if index < 0:
                    date = max(date, created)
                count = 1 + int(r() ** 2 * 5)  # 1–5 items, mostly one or two
                items, subtotal, discount = self._items(data, job, job.unit, count, date, r)
                if own and not job.no_charge:
                    self.adjustable.append((invoice_id, job, date))
                if own:
                    job.materials = [
                        (item["skuName"], item["type"], int(Decimal(item["quantity"])), Decimal(item["cost"]))
                        for item in items
                        if item["type"] in ("Material", "Equipment")
                    ]

        tax = (subtotal * b.tax_rate).quantize(CENT, ROUND_HALF_UP)
        total = subtotal + tax
        if job is not None and job.invoice_id == invoice_id:
            job.total = total
        paid, paid_on = ZERO, None
        if index >= 0 and date is not None and total > 0:
            paid, paid_on = self._plan_payments(invoice_id, total, date, refs, r)

        if job is None:
            data["job"] = None
        else:
            data["job"] = {"id": job.id, "number": job.number, "type": job.type.name}
            if job.customer is not None:
                data["customer"] = {"id": job.customer.id, "name": job.customer.name}
            if job.location is not None:
                data["location"] = {"id": job.location.id, "name": job.location.name}
            if job.unit is not None:
                data["businessUnit"] = {"id": job.unit.id, "name": job.unit.name}
        stamp = None if date is None else format_ticks(date)
        term_name = data.get("termName")
        terms = 0 if term_name is None else PAYMENT_TERMS.get(term_name, 0)
        data.update(
            {
                "adjustmentToId": adjusted,
                "invoiceConfiguration": configuration,
                "referenceNumber": str(invoice_id),
                "items": items,
                "subTotal": money(subtotal),
                "salesTax": money(tax),
                "total": money(total),
                "discountTotal": money(discount),
                "balance": money(total - paid),
                "invoiceDate": stamp,
                "dueDate": stamp if date is None or not terms else format_ticks(date + terms * DAY),
                "paidOn": None if paid_on is None else stamp if paid_on == date else format_ticks(paid_on),
            }
        )
        data.update(self.nulls(data, ("membershipId", "depositedOn", "projectId", "budgetCodeId")))
        if b.invoice_items is not None and index >= 0:
            active = bool(data.get("active", True))
            b.invoice_items.extend((item, invoice_id, active, created, modified) for item in items)

    def finish(self) -> None:
        self.b.patch_jobs()

    def release(self) -> None:
        self.adjustable = []

    # -- items -------------------------------------------------------------------------------

    def _item(
        self,
        template: Record,
        kind: str,
        sku: str,
        quantity: int,
        price: Decimal,
        unit: RefTarget | None,
        shared: Record,
        order: int,
        r: Draw,
        account: Record | None = None,
    ) -> tuple[Record, Decimal]:
        """One item (``template``: a generated item to fill in) and its total."""
        total = price * quantity
        cost_accounts: tuple[Record | None, Record | None]
        if kind == "Material" or kind == "Equipment":
            cost = (price * (35 + int(r() * 25)) / 100).quantize(CENT, ROUND_HALF_UP)
            cost_accounts = (COST_OF_SALES, NON_INCOME_ACCOUNTS[1])
        else:
            cost = ZERO
            cost_accounts = (None, None)
        if account is None:
            if kind != "PriceModifier" and r() < NON_INCOME_ITEM_SHARE:
                account = _pick(NON_INCOME_ACCOUNTS, r)
            else:
                account = INCOME_ACCOUNTS[kind]
        if unit is None or r() < OTHER_UNIT_ITEM_SHARE:
            others = self.b.other_units(unit)
            unit = _pick(others, r) if others else unit
        template.update(shared)
        template.update(
            {
                "id": self.b.next_id(INVOICE_ITEMS),
                "type": kind,
                "skuId": SKU_IDS[sku],
                "skuName": sku,
                "displayName": sku,
                "description": sku,
                "quantity": f"{quantity}.00",
                "price": money(price),
                "total": money(total),
                "cost": money(cost),
                "totalCost": money(cost * quantity),
                "businessUnit": _named(unit),
                "generalLedgerAccount": account,
                "costOfSaleAccount": cost_accounts[0],
                "assetAccount": cost_accounts[1],
                "order": order,
            }
        )
        return template, total

    def _items(
        self,
        data: Record,
        job: JobFact | None,
        unit: RefTarget | None,
        count: int,
        date: int | None,
        r: Draw,
        first: tuple[str, ...] = FIRST_ITEM_TYPES,
        adjustment: bool = False,
    ) -> tuple[list[Record], Decimal, Decimal]:
        """``count`` items (a no-charge job's: one free visit; an adjustment: one amount), their
        sum and the discounts among them (positive)."""
        templates = data.get("items") or [{}]
        shared = {
            "createdOn": data.get("createdOn"),
            "modifiedOn": data.get("modifiedOn"),
            "serviceDate": None if date is None else format_ticks(date),
            "memberPrice": None,
            "isChargeable": True,
            "taxable": True,
            "estimateItemId": None,
            "installedEquipmentId": None,
            "budgetCodeId": None,
            "membershipTypeId": None,
        }
        if adjustment:
            positive = r() < 0.5
            amount = _cents(1_000 + int(r() * 14_000))
            kind = "Service" if positive else "PriceModifier"
            item, total = self._item(
                templates[0],
                kind,
                ADJUSTMENT_SKUS[positive],
                1,
                amount if positive else -amount,
                unit,
                shared,
                1,
                r,
                INCOME_ACCOUNTS[kind],
            )
            return [item], total, ZERO if positive else amount
        if job is not None and job.no_charge:
            item, total = self._item(
                templates[0], "Service", NO_CHARGE_SKU, 1, ZERO, unit, shared, 1, r, INCOME_ACCOUNTS["Service"]
            )
            return [item], total, ZERO
        items: list[Record] = []
        running = discount = ZERO
        for position in range(count):
            template = templates[position] if position < len(templates) else dict(templates[0])
            if position == 0:
                kind = _pick(first, r)
            else:
                kind = _choose(MORE_ITEM_TYPES, r())
            if kind == "PriceModifier":
                sku = _pick(SKUS[kind], r)[0]
                price = -(running * (5 + int(r() * 11)) / 100).quantize(CENT, ROUND_HALF_UP)
                quantity = 1
                discount -= price
            else:
                sku, low, high = _pick(SKUS[kind], r)
                price = _cents(low + int(r() * (high - low)))
                quantity = 1 if kind == "Equipment" or (kind == "Service" and r() < 0.8) else 1 + int(r() * 6)
            item, total = self._item(template, kind, sku, quantity, price, unit, shared, position + 1, r)
            running += total
            items.append(item)
        return items, running, discount

    # -- payments ----------------------------------------------------------------------------

    def _plan_payments(
        self, invoice_id: int, total: Decimal, date: int, refs: Refs, r: Draw
    ) -> tuple[Decimal, int | None]:
        """Decide which payments this invoice gets; returns the amount paid and, if paid in
        full, when. Never plans more applications than there will be payments."""
        b = self.b
        slots = b.payment_slots
        u = r()
        if u >= PAID_IN_FULL_SHARE + PARTLY_PAID_SHARE or len(slots) >= b.payment_budget:
            return ZERO, None
        first = date if r() < 0.45 else date + int(r() ** 2 * 40 * DAY)
        if first > END:
            return ZERO, None
        customer, unit = refs.get(CUSTOMERS), refs.get(BUSINESS_UNITS)
        if u < PAID_IN_FULL_SHARE:
            second = first + DAY + int(r() * 30 * DAY)
            if r() < TWO_PAYMENTS_SHARE and second <= END and len(slots) + 2 <= b.payment_budget:
                deposit = (total * Decimal(30 + int(r() * 31)) / 100).quantize(CENT, ROUND_HALF_UP)
                slots.append(PaymentSlot(first, invoice_id, deposit, customer, unit))
                slots.append(PaymentSlot(second, invoice_id, total - deposit, customer, unit))
                return total, second
            slots.append(PaymentSlot(first, invoice_id, total, customer, unit))
            return total, first
        part = (total * Decimal(20 + int(r() * 61)) / 100).quantize(CENT, ROUND_HALF_UP)
        if part <= 0 or part >= total:
            return ZERO, None
        slots.append(PaymentSlot(first, invoice_id, part, customer, unit))
        return part, None


class InvoiceItemRules(Rules):
    """The export of invoice items: exactly the items embedded in the invoices."""

    derived = True

    def derived_records(self, keys: tuple[str, ...]) -> list[StoredRecord]:
        kept = self.b.invoice_items or []
        records = []
        for item, invoice_id, active, created, modified in kept:
            data = {key: item.get(key) for key in keys}
            data["invoiceId"] = invoice_id
            if "active" in data:
                data["active"] = active
            records.append(StoredRecord(item["id"], created, modified, active, dumpb(data)))
        self.b.invoice_items = None
        return records

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        # A new item (simulated change): at least its own money multiplies out.
        price = _cents(1_000 + int(r() * 40_000))
        quantity = 1 + int(r() * 3)
        data.update(quantity=f"{quantity}.00", price=money(price), total=money(price * quantity), type="Service")


class PaymentRules(Rules):
    """Payments realize the plan made with the invoices, in date order; the rest are payments
    not (yet) applied to any invoice."""

    def __init__(self, business: TenantBusiness, key: str) -> None:
        super().__init__(business, key)
        self.slots: list[PaymentSlot] = []

    def begin(self, count: int) -> None:
        self.slots = sorted(self.b.payment_slots, key=lambda s: (s.date, s.invoice_id))

    def release(self) -> None:
        self.slots = []

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        slot = self.slots[index] if 0 <= index < len(self.slots) else None
        kind = _pick(PAYMENT_TYPES, r)
        data["type"] = kind
        if "checkNumber" in data:
            data["checkNumber"] = str(1000 + int(r() * 9000)) if kind == "Check" else None
        if "refundedPaymentId" in data:
            data["refundedPaymentId"] = None
        if slot is None:
            amount = _cents(2_500 + int(r() * 47_500))
            data["appliedTo"] = []
            data["unappliedAmount"] = money(amount)
            data["total"] = money(amount)
            data["date"] = format_ticks(created)
            return
        unapplied = _cents(500 + int(r() * 5_000)) if r() < OVERPAID_SHARE else ZERO
        template = (data.get("appliedTo") or [{}])[0]
        stamp = format_ticks(slot.date)
        entry = dict(template)
        entry.update(
            appliedAmount=money(slot.amount),
            appliedOn=stamp,
            appliedTo=slot.invoice_id,
            appliedToReferenceNumber=str(slot.invoice_id),
        )
        data["appliedTo"] = [entry]
        data["unappliedAmount"] = money(unapplied)
        data["total"] = money(slot.amount + unapplied)
        data["date"] = stamp
        if slot.customer is not None:
            data["customer"] = _named(slot.customer)
        if slot.unit is not None and "businessUnit" in data:
            data["businessUnit"] = _named(slot.unit)


# -- sales ----------------------------------------------------------------------------------------


class EstimateRules(Rules):
    """Estimates on jobs: sold (on the job's day or on a later visit), open or dismissed."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        b = self.b
        if not b.jobs:
            return
        if b.completed_jobs and (index < 0 or r() < ESTIMATE_ON_COMPLETED_SHARE):
            job = _pick(b.completed_jobs, r)
        else:
            job = _pick(b.jobs, r)
        if index < 0:
            status, value = "Open", 0
        elif job.completed is None:
            status, value = ("Dismissed", 2) if job.status == "Canceled" else ("Open", 0)
        else:
            u = r()
            status, value = next((name, code) for name, code, share in ESTIMATE_STATUSES if u < share)
        sold_on = None
        if status == "Sold":
            assert job.completed is not None
            sold_on = job.completed - int(r() * min(HOUR, job.completed % DAY))  # the job's day
            if r() < SOLD_LATER_SHARE:
                later = _day_start(job.completed) + (2 + int(r() * 44)) * DAY + 8 * HOUR + int(r() * 9 * HOUR)
                if later <= END:
                    sold_on = later
        technicians = b.pool(TECHNICIANS)
        stamps = (data.get("createdOn"), data.get("modifiedOn"))
        items, subtotal = self._items(stamps, r)
        data.update(
            jobId=job.id,
            jobNumber=job.number,
            customerId=job.customer.id if job.customer else None,
            locationId=job.location.id if job.location else None,
            businessUnitId=job.unit.id if job.unit else None,
            businessUnitName=job.unit.name if job.unit else None,
            status={"name": status, "value": value},
            soldOn=None if sold_on is None else format_ticks(sold_on),
            soldBy=_pick(technicians, r).id if sold_on is not None and technicians else None,
            items=items,
            subtotal=float(subtotal),
            tax=float((subtotal * b.tax_rate).quantize(CENT, ROUND_HALF_UP)),
            isChangeOrder=False,
            projectId=None,
            budgetCodeId=None,
        )
        if b.estimate_items is not None and index >= 0:
            b.estimate_items.extend((item, created, modified) for item in items)

    def _items(self, stamps: tuple[Any, Any], r: Draw) -> tuple[list[Record], Decimal]:
        """1–4 items (``total = qty × unitRate``) and their sum."""
        items = []
        subtotal = ZERO
        for position in range(1 + int(r() * 4)):
            u = r()
            kind = "Equipment" if u < (0.35 if position == 0 else 0.15) else "Service" if u < 0.7 else "Material"
            sku, low, high = _pick(SKUS[kind], r)
            rate = _cents(low + int(r() * (high - low)))
            quantity = 1 if kind != "Material" else 1 + int(r() * 4)
            cost = (rate * Decimal(40) / 100).quantize(CENT, ROUND_HALF_UP) if kind != "Service" else ZERO
            account = INCOME_ACCOUNTS[kind]
            total = rate * quantity
            subtotal += total
            items.append(
                {
                    "budgetCodeId": None,
                    "chargeable": True,
                    "createdOn": stamps[0],
                    "description": sku,
                    "id": self.b.next_id(ESTIMATE_ITEMS),
                    "invoiceItemId": None,
                    "itemGroupName": kind,
                    "itemGroupRootId": None,
                    "membershipTypeId": None,
                    "modifiedOn": stamps[1],
                    "qty": float(quantity),
                    "sku": {
                        "displayName": sku,
                        "generalLedgerAccountId": account["id"],
                        "generalLedgerAccountName": account["name"],
                        "id": SKU_IDS[sku],
                        "modifiedOn": stamps[0],
                        "name": sku,
                        "soldHours": 1.0 if kind == "Service" else 0.0,
                        "type": kind,
                    },
                    "skuAccount": account["number"],
                    "total": float(total),
                    "totalCost": float(cost * quantity),
                    "unitCost": float(cost),
                    "unitRate": float(rate),
                }
            )
        return items, subtotal


class EstimateItemRules(Rules):
    """The estimate items list: exactly the items embedded in the estimates."""

    derived = True

    def derived_records(self, keys: tuple[str, ...]) -> list[StoredRecord]:
        kept = self.b.estimate_items or []
        records = [
            StoredRecord(item["id"], created, modified, True, dumpb({key: item.get(key) for key in keys}))
            for item, created, modified in kept
        ]
        self.b.estimate_items = None
        return records

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        rate = _cents(1_000 + int(r() * 40_000))
        data.update(qty=1.0, unitRate=float(rate), total=float(rate))


# -- memberships ----------------------------------------------------------------------------------


class MembershipRules(Rules):
    """Memberships sold at a location the day a job there was completed, or on a later day."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        b = self.b
        jobs = b.completed_jobs or b.jobs  # (a tiny tenant may have no completed job)
        if not jobs:
            return
        job = _pick(jobs, r)
        sold = _day_start(job.completed if job.completed is not None else job.created)
        if index < 0:
            sold = _day_start(created)
        elif r() >= MEMBERSHIP_SAME_DAY_SHARE:
            later = sold + (3 + int(r() * 58)) * DAY
            sold = later if later <= END else sold
        ends = sold + 365 * DAY
        cancelled = None
        if index >= 0 and r() < MEMBERSHIP_CANCELED_SHARE:
            status = "Canceled"
            cancelled = sold + DAY + int(r() * max(DAY, min(ends, END) - sold - DAY))
            cancelled = min(cancelled, max(sold, END))
        else:
            status = "Active" if index < 0 or ends > END else "Expired"
        technicians = b.pool(TECHNICIANS)
        kind = _pick(b.membership_types, r) if b.membership_types else None
        data.update(
            {
                "customerId": job.customer.id if job.customer else data.get("customerId"),
                "locationId": job.location.id if job.location else data.get("locationId"),
                "recurringLocationId": job.location.id if job.location else None,
                "businessUnitId": job.unit.id if job.unit else data.get("businessUnitId"),
                "membershipTypeId": kind[0] if kind is not None else data.get("membershipTypeId"),
                "soldById": _pick(technicians, r).id if technicians else None,
                "from": format_ticks(sold),
                "to": format_ticks(ends),
                "duration": 12,
                "status": status,
                "cancellationDate": None if cancelled is None else format_ticks(cancelled),
                "activatedFromId": None,
                "cancellationInvoiceId": None,
                "cancellationBalanceInvoiceId": None,
                "renewedById": None,
                "renewalMembershipTaskId": None,
                "billingTemplateId": None,
            }
        )
        if index >= 0:
            location = job.location.id if job.location else None
            name = kind[1] if kind is not None else None
            b.memberships.append(MembershipFact(data["id"], location, name, sold, ends, status, cancelled))


# -- calls, leads and bookings --------------------------------------------------------------------


class CallRules(Rules):
    """Calls: booked ones name the job they booked (created right after the call)."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        b = self.b
        u = r()
        kind = next(name for name, share in CALL_TYPES if u < share)
        job = b.job_after(created, r) if kind == "Booked" else None
        if job is None and kind == "Booked":
            kind = "Unbooked"
        data["type"] = kind
        data["direction"] = "Inbound" if r() < INBOUND_SHARE else "Outbound"
        data["status"] = "Completed"
        if kind == "Abandoned":
            data["duration"] = "00:00:20"
        if job is not None:
            data["job"] = {"id": job.id, "number": job.number}
            data["customer"] = _named(job.customer)
            data["location"] = _named(job.location)
        else:
            data["job"] = None
            if kind == "Abandoned":
                data["customer"] = None
                data["location"] = None
        data["campaign"] = {"id": (c := _pick(b.campaigns, r))[0], "name": c[1]} if b.campaigns else None
        if job is not None and job.campaign is not None:  # the campaign that brought the job
            data["campaign"] = {"id": job.campaign, "name": b.campaign_names.get(job.campaign)}
        if "lead" in data:
            data["lead"] = None


class LeadRules(Rules):
    """Leads attributed to campaigns, for job types."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        b = self.b
        u = r()
        data["status"] = "Open" if index < 0 else _choose(LEAD_STATUSES, u)
        if b.campaigns:
            data["campaignId"] = _pick(b.campaigns, r)[0]
        if b.job_types:
            data["jobTypeId"] = _pick(b.job_types, r).id
        for name in ("bookingId", "callId", "manualCallId", "dismissingReasonId"):
            if name in data:
                data[name] = None


class BookingRules(Rules):
    """Bookings: converted ones name the job they became."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        b = self.b
        u = r()
        status = "New" if index < 0 else _choose(BOOKING_STATUSES, u)
        job = b.job_after(created, r) if status == "Converted" else None
        if job is None and status == "Converted":
            status = "New"
        data["status"] = status
        data["jobId"] = job.id if job is not None else None
        if job is not None:
            data["businessUnitId"] = job.unit.id if job.unit else data.get("businessUnitId")
            data["jobTypeId"] = job.type.id
            data["start"] = format_ticks(job.created)
        elif b.job_types:
            data["jobTypeId"] = _pick(b.job_types, r).id
        if b.campaigns:
            data["campaignId"] = _pick(b.campaigns, r)[0]
        if "dismissingReasonId" in data:
            data["dismissingReasonId"] = None


# -- dispatch and payroll -------------------------------------------------------------------------


class TechnicianRules(Rules):
    """Technicians are left as generated; their hourly rate is noted (labour cost is paid at it)."""

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        rate = data.get("hourlyRate")
        if index >= 0 and isinstance(rate, (int, float)):
            self.b.hourly_rates[data["id"]] = Decimal(repr(rate)).quantize(CENT, ROUND_HALF_UP)


class CancelReasonRules(Rules):
    """Cancel reasons are left as generated; their ids are noted (canceled jobs' logs name one)."""

    def stored(self, record: StoredRecord, target: RefTarget | None) -> None:
        self.b.cancel_reasons.append(record.id)


class FactRules(Rules):
    """Rules of a dataset whose records stand for facts of other datasets, one record a fact.

    :meth:`facts` lists them (once the datasets they come from are generated); record *i* is
    :meth:`fill`-ed from fact *i*. A tenant with no such fact still gets one record, and a
    record added by a simulated change, like it, is filled by :meth:`fill_new`.
    """

    def __init__(self, business: TenantBusiness, key: str) -> None:
        super().__init__(business, key)
        self.listed: list[Any] = []

    def facts(self) -> list[Any]:
        """The facts, in the order their records are to be created."""
        return []

    def count(self, volume: int) -> int:
        self.listed = self.facts()
        return max(1, len(self.listed))

    def apply(self, data: Record, refs: Refs, index: int, created: int, modified: int, r: Draw) -> None:
        if 0 <= index < len(self.listed):
            self.fill(data, self.listed[index], r)
        else:
            self.fill_new(data, created, r)

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        """Write one fact's business fields into its record."""

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        """Business fields of a record no fact stands for (``created``: its creation time)."""

    def release(self) -> None:
        self.listed = []


def _job_reference(data: Record, job: JobFact) -> None:
    """The job's number, customer, location and business unit, where the record has them."""
    values = {
        "jobNumber": job.number,
        "customerId": job.customer.id if job.customer else None,
        "customerName": job.customer.name if job.customer else None,
        "locationId": job.location.id if job.location else None,
        "locationName": job.location.name if job.location else None,
        "businessUnitName": job.unit.name if job.unit else None,
        "jobTypeName": job.type.name,
    }
    data.update({name: value for name, value in values.items() if name in data})


class AssignmentRules(FactRules):
    """One assignment per appointment and technician of the job's crew (the job's technicians
    are its split technicians), assigned between the job's creation and the visit."""

    def facts(self) -> list[Any]:
        b = self.b
        return [(visit, technician) for visit in b.visits for technician, _ in b.crew(visit[1])]

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        (appointment_id, job, start, _), technician = fact
        self._fill(data, appointment_id, job, technician, job.created + int(r() * (start - job.created)))

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        job_id = data.get("jobId")
        job = None if job_id is None else self.b.job_by_id.get(job_id)
        technicians = self.b.pool(TECHNICIANS)
        if job is not None and job.visits and technicians:
            crew = self.b.crew(job)
            technician = crew[0][0] if crew else _pick(technicians, r)
            self._fill(data, job.visits[0][0], job, technician, created)

    @staticmethod
    def _fill(data: Record, appointment_id: int, job: JobFact, technician: RefTarget, assigned: int) -> None:
        data.update(
            appointmentId=appointment_id,
            jobId=job.id,
            technicianId=technician.id,
            status=ASSIGNMENT_STATUS.get(job.status, "Scheduled"),
            assignedOn=format_ticks(assigned),
            isPaused=False,
        )
        if technician.name is not None and "technicianName" in data:
            data["technicianName"] = technician.name


class SplitRules(FactRules):
    """A completed job's credit split between its crew: its splits add up to 100."""

    def facts(self) -> list[Any]:
        b = self.b
        return [(job, technician, split) for job in b.completed_jobs for technician, split in b.crew(job)]

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        job, technician, split = fact
        data.update(jobId=job.id, technicianId=technician.id, split=float(split))

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        # A simulated new split: the lead's of some completed job again (a correction to sync).
        jobs = self.b.completed_jobs
        if jobs:
            job = _pick(jobs, r)
            crew = self.b.crew(job)
            if crew:
                self.fill(data, (job, crew[0][0], crew[0][1]), r)


class GrossPayRules(FactRules):
    """Labour cost: each crew technician of a completed job is paid for the job's visit hours
    (``TimesheetTime``, at the hourly rate, some of it overtime) on the completion day; on some
    invoiced jobs also a bonus on the invoice (``InvoiceRelatedBonus``), by split."""

    def facts(self) -> list[Any]:
        b = self.b
        r = self.r
        facts: list[Any] = []
        for job in b.completed_jobs:
            assert job.completed is not None
            visits = job.visits or [(0, max(job.created, job.completed - 2 * HOUR), job.completed)]
            seconds = sum(end - start for _, start, end in visits) // TICKS_PER_SECOND
            hours = Decimal(max(1, round(seconds / 900))) / 4  # quarter hours, at least one
            started, ended = min(v[1] for v in visits), max(v[2] for v in visits)
            bonus = job.total > 0 and job.invoice_id is not None and r() < BONUS_SHARE
            percent = Decimal(2 + int(r() * 4))  # 2–5% of the invoice
            for technician, split in b.crew(job):
                overtime = r() < OVERTIME_SHARE
                rate = b.hourly_rate(technician) * (Decimal("1.5") if overtime else 1)
                amount = (rate * hours).quantize(CENT, ROUND_HALF_UP)
                kind = "Overtime" if overtime else "Regular"
                facts.append((job, technician, "TimesheetTime", kind, amount, hours, started, ended))
                if bonus:
                    share = (job.total * percent * split / 10_000).quantize(CENT, ROUND_HALF_UP)
                    if share > 0:
                        facts.append((job, technician, "InvoiceRelatedBonus", "Regular", share, None, None, None))
        return facts

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        job, technician, item_type, time_type, amount, hours, started, ended = fact
        assert job.completed is not None
        bonus = item_type == "InvoiceRelatedBonus"
        data.update(
            employeeId=technician.id,
            employeeType="Technician",
            grossPayItemType=item_type,
            paidTimeType=time_type,
            amount=float(amount),
            amountAdjustment=None,
            paidDurationHours=None if hours is None else float(hours),
            date=format_ticks(_day_start(job.completed)),
            startedOn=None if started is None else format_ticks(started),
            endedOn=None if ended is None else format_ticks(ended),
            jobId=job.id,
            invoiceId=job.invoice_id if bonus else None,
            invoiceNumber=str(job.invoice_id) if bonus else None,
            invoiceItemId=None,
            projectId=None,
            projectNumber=None,
            budgetCodeId=None,
        )
        _job_reference(data, job)

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        b = self.b
        jobs = b.completed_jobs
        job = _pick(jobs, r) if jobs else None
        crew = b.crew(job) if job is not None else ()
        if job is not None and crew:
            technician = crew[0][0]
            amount = b.hourly_rate(technician)
            self.fill(data, (job, technician, "TimesheetTime", "Regular", amount, Decimal(1), None, None), r)


class PurchaseOrderRules(FactRules):
    """Purchase orders for some completed jobs' materials (see :meth:`TenantBusiness.purchases`):
    ordered after the job was created, received before it was completed."""

    def facts(self) -> list[Any]:
        return list(self.b.purchases())

    def ids(self, count: int) -> list[int] | None:
        listed = [purchase.id for purchase in self.listed]
        return listed if len(listed) == count else None

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        purchase: Purchase = fact
        job = purchase.job
        template = (data.get("items") or [{}])[0]
        items = []
        for position, (sku, kind, quantity, cost) in enumerate(purchase.items):
            item = dict(template)
            item.update(
                id=purchase.id * 10 + position + 1 if purchase.id else item.get("id"),
                skuId=SKU_IDS[sku],
                skuName=sku,
                skuCode=str(SKU_IDS[sku]),
                skuType=kind,
                description=sku,
                quantity=float(quantity),
                quantityReceived=float(quantity),
                cost=float(cost),
                total=float(cost * quantity),
                chargeable=True,
                status="Received",
                budgetCodeId=None,
                serialNumbers=[],
            )
            items.append(item)
        crew = self.b.crew(job)
        data.update(
            number=str(purchase.id),
            jobId=job.id,
            invoiceId=job.invoice_id,
            projectId=None,
            budgetCodeId=None,
            technicianId=crew[0][0].id if crew else None,
            businessUnitId=job.unit.id if job.unit else data.get("businessUnitId"),
            status="Received",
            date=format_ticks(purchase.date),
            sentOn=format_ticks(purchase.date),
            requiredOn=format_ticks(_day_start(job.created) + DAY),
            receivedOn=format_ticks(purchase.received),
            items=items,
            tax=float(purchase.tax),
            shipping=float(purchase.shipping),
            total=float(purchase.total),
        )

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        # A new order not tied to a job yet (stock): its money at least adds up.
        cost = _cents(500 + int(r() * 20_000))
        items = data.get("items") or []
        for item in items:
            item.update(quantity=1.0, cost=float(cost), total=float(cost))
        data.update(jobId=None, invoiceId=None, projectId=None, tax=0.0, shipping=0.0, status="Pending")
        data["total"] = float(cost * len(items))
        data["date"] = format_ticks(created)


class ApBillRules(FactRules):
    """Vendors' bills for the purchase orders, received after the goods: same job, same money."""

    def facts(self) -> list[Any]:
        return [purchase for purchase in self.b.purchases() if purchase.billed is not None]

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        purchase: Purchase = fact
        assert purchase.billed is not None
        job = purchase.job
        total = money(purchase.total)
        data.update(
            jobId=job.id,
            jobNumber=job.number,
            purchaseOrderId=purchase.id,
            billDate=format_ticks(purchase.billed),
            postDate=format_ticks(purchase.billed),
            dueDate=format_ticks(purchase.billed + 30 * DAY),
            billAmount=total,
            vendorInvoiceTotal=total,
            taxAmount=money(purchase.tax),
            shippingAmount=money(purchase.shipping),
            otherAmount=money(ZERO),
            referenceNumber=str(purchase.id),
            dateCanceled=None,
            budgetCodeId=None,
            items=[],
            expenseItems=[],
        )
        if job.unit is not None:
            data["businessUnit"] = _named(job.unit)

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        amount = money(_cents(2_000 + int(r() * 50_000)))
        data.update(jobId=None, jobNumber=None, purchaseOrderId=None, billDate=format_ticks(created))
        data.update(billAmount=amount, vendorInvoiceTotal=amount, taxAmount="0.00", shippingAmount="0.00")
        data.update(otherAmount="0.00", items=[], expenseItems=[])


class CampaignCostRules(FactRules):
    """What each campaign cost per day, for every month of the history (some cost nothing)."""

    def facts(self) -> list[Any]:
        r = self.r
        months = _months(REFERENCE_START_TICKS, END)
        facts = []
        for campaign_id, name in self.b.campaigns:
            free = name.split(" ")[0] in FREE_CAMPAIGNS
            base = 10 + int(r() * 240)
            for year, month in months:
                factor = Decimal(70 + int(r() * 61)) / 100
                cost = ZERO if free else (Decimal(base) * factor).quantize(CENT, ROUND_HALF_UP)
                facts.append((campaign_id, year, month, cost))
        return facts

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        campaign_id, year, month, cost = fact
        data.update(campaignId=campaign_id, year=year, month=month, dailyCost=float(cost))

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        if self.b.campaigns:
            stamp = format_ticks(created)
            data.update(campaignId=_pick(self.b.campaigns, r)[0], year=int(stamp[:4]), month=int(stamp[5:7]))
            data["dailyCost"] = float(_cents(1_000 + int(r() * 20_000)))


class StatusChangeRules(FactRules):
    """Each membership's status history: Active → Canceled on its cancellation date, Active →
    Expired at its end; a few were Suspended for a while (and Active again) before that."""

    def facts(self) -> list[Any]:
        r = self.r
        changes = []
        for membership in self.b.memberships:
            last = min(membership.ends, END, membership.cancelled or END)
            if r() < SUSPENDED_SHARE and last - membership.sold > 60 * DAY:
                suspended = membership.sold + DAY + int(r() * (last - membership.sold - 45 * DAY))
                resumed = suspended + 7 * DAY + int(r() * 30 * DAY)
                changes.append((suspended, membership.id, "Active", "Suspended"))
                changes.append((resumed, membership.id, "Suspended", "Active"))
            if membership.status == "Canceled" and membership.cancelled is not None:
                changes.append((membership.cancelled, membership.id, "Active", "Canceled"))
            elif membership.status == "Expired":
                changes.append((membership.ends, membership.id, "Active", "Expired"))
        changes.sort(key=lambda change: (change[0], change[1]))
        return changes

    def created_ticks(self, ticks: list[int]) -> list[int]:
        if len(self.listed) != len(ticks):
            return ticks
        return [change[0] for change in self.listed]

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        when, membership_id, old, new = fact
        data.update(createdOn=format_ticks(when), membershipId=membership_id, oldStatus=old, newStatus=new)

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        memberships = self.b.memberships
        if memberships:
            data["membershipId"] = _pick(memberships, r).id


class ServiceEventRules(FactRules):
    """A membership's recurring service, twice a year of its term: past events were won (a job
    at the location completed before the next event: ``jobId``), or contacted, unreachable or
    dismissed; those after a cancellation dismissed; future ones not attempted."""

    def facts(self) -> list[Any]:
        r = self.r
        by_location: dict[int | None, list[JobFact]] = {}
        for job in self.b.completed_jobs:
            by_location.setdefault(job.location.id if job.location else None, []).append(job)
        for jobs in by_location.values():
            jobs.sort(key=lambda job: job.completed or 0)
        events = []
        for membership in self.b.memberships:
            jobs = by_location.get(membership.location, [])
            completions = [job.completed or 0 for job in jobs]
            date = _day_start(membership.sold) + 14 * DAY
            while date < membership.ends:
                won: JobFact | None = None
                if membership.cancelled is not None and date > membership.cancelled:
                    status = "Dismissed"
                elif date > END:
                    status = "NotAttempted"
                else:
                    at = bisect_left(completions, date)
                    if at < len(jobs) and completions[at] <= date + SERVICE_JOB_WINDOW:
                        status, won = "Won", jobs[at]
                    else:
                        status = _choose(SERVICE_OUTCOMES, r())
                events.append((membership, date, status, won))
                date += SERVICE_EVERY
        return events

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        membership, date, status, job = fact
        data.update(
            membershipId=membership.id,
            membershipName=membership.name,
            date=format_ticks(date),
            status=status,
            jobId=None if job is None else job.id,
        )

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        data.update(status="NotAttempted", jobId=None, date=format_ticks(created + 30 * DAY))
        if self.b.memberships:
            membership = _pick(self.b.memberships, r)
            data.update(membershipId=membership.id, membershipName=membership.name)


class CanceledLogRules(FactRules):
    """One log per canceled job: when (after its creation) and why (one of the cancel reasons)."""

    def facts(self) -> list[Any]:
        r = self.r
        logs = []
        for job in self.b.jobs:
            if job.status == "Canceled":
                when = job.created + int(r() * min(3 * DAY, max(0, END - job.created)))
                reason = _pick(self.b.cancel_reasons, r) if self.b.cancel_reasons else None
                logs.append((when, job, reason))
        logs.sort(key=lambda log: (log[0], log[1].id))
        return logs

    def created_ticks(self, ticks: list[int]) -> list[int]:
        if len(self.listed) != len(ticks):
            return ticks
        return [log[0] for log in self.listed]

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        when, job, reason = fact
        data.update(createdOn=format_ticks(when), jobId=job.id)
        if reason is not None:
            data["reasonId"] = reason

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        canceled = [job for job in self.b.jobs if job.status == "Canceled"]
        if canceled:
            data["jobId"] = _pick(canceled, r).id  # logged again
        if self.b.cancel_reasons:
            data["reasonId"] = _pick(self.b.cancel_reasons, r)


class ShiftRules(FactRules):
    """A technician's shift on each day of an appointment they are assigned to: 08:00–17:00 UTC,
    longer if that day's visits start earlier or end later (so they are always covered)."""

    def facts(self) -> list[Any]:
        b = self.b
        days: dict[tuple[int, int], list[int]] = {}
        for _, job, start, end in b.visits:
            for technician, _ in b.crew(job):
                key = (technician.id, _day_start(start))
                span = days.get(key)
                if span is None:
                    days[key] = [start, end]
                else:
                    span[0], span[1] = min(span[0], start), max(span[1], end)
        shifts = []
        for (technician_id, day), (first, last) in days.items():
            begins = min(day + SHIFT_START, first - first % HOUR)
            ends = max(day + SHIFT_END, last if last % HOUR == 0 else last - last % HOUR + HOUR)
            shifts.append((begins, ends, technician_id))
        shifts.sort()
        return shifts

    def fill(self, data: Record, fact: Any, r: Draw) -> None:
        begins, ends, technician_id = fact
        data.update(
            technicianId=technician_id,
            start=format_ticks(begins),
            end=format_ticks(ends),
            shiftType="Normal",
            title="Shift",
            timesheetCodeId=None,
        )

    def fill_new(self, data: Record, created: int, r: Draw) -> None:
        technicians = self.b.pool(TECHNICIANS)
        day = _day_start(created) + DAY
        if technicians:
            data["technicianId"] = _pick(technicians, r).id
        data.update(start=format_ticks(day + SHIFT_START), end=format_ticks(day + SHIFT_END), shiftType="Normal")


def _months(start: int, end: int) -> list[tuple[int, int]]:
    """(year, month) of every month from the one of ``start`` to the one before ``end``."""
    first, last = format_ticks(start), format_ticks(end - 1)
    year, month = int(first[:4]), int(first[5:7])
    stop = (int(last[:4]), int(last[5:7]))
    months = []
    while (year, month) <= stop:
        months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


RULES: dict[str, Callable[[TenantBusiness, str], Rules]] = {
    BUSINESS_UNITS: BusinessUnitRules,
    JOB_TYPES: JobTypeRules,
    CAMPAIGNS: CampaignRules,
    MEMBERSHIP_TYPES: MembershipTypeRules,
    JOBS: JobRules,
    APPOINTMENTS: AppointmentRules,
    INVOICES: InvoiceRules,
    INVOICE_ITEMS: InvoiceItemRules,
    PAYMENTS: PaymentRules,
    ESTIMATES: EstimateRules,
    ESTIMATE_ITEMS: EstimateItemRules,
    MEMBERSHIPS: MembershipRules,
    CALLS: CallRules,
    LEADS: LeadRules,
    BOOKINGS: BookingRules,
    ASSIGNMENTS: AssignmentRules,
    SPLITS: SplitRules,
    TECHNICIANS: TechnicianRules,
    CANCEL_REASONS: CancelReasonRules,
    GROSS_PAY: GrossPayRules,
    PURCHASE_ORDERS: PurchaseOrderRules,
    AP_BILLS: ApBillRules,
    CAMPAIGN_COSTS: CampaignCostRules,
    STATUS_CHANGES: StatusChangeRules,
    SERVICE_EVENTS: ServiceEventRules,
    CANCELED_LOGS: CanceledLogRules,
    SHIFTS: ShiftRules,
}
