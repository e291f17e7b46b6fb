"""The hub tables ("Hub Plus" records): typed, snake_case, one place to add one.

To add a hub table, append a ``HubTable`` to ``HUB_TABLES``: its source raw dataset, its columns
(JSON path → name and type) and the references it must satisfy. The table, its SQL, its asset,
its column schema in the UI and its checks follow. Field names and types are those of the
ServiceTitan record schemas (``st-pipeline endpoints`` lists the datasets).
"""

from __future__ import annotations

from st_pipeline.transform.spec import Column, ColumnType, HubTable, Reference

T, INT, B, TS, M, D, GEO = (
    ColumnType.TEXT,
    ColumnType.INTEGER,
    ColumnType.BOOLEAN,
    ColumnType.TIMESTAMP,
    ColumnType.MONEY,
    ColumnType.DECIMAL,
    ColumnType.COORDINATE,
)


def _c(name: str, path: str, kind: ColumnType) -> Column:
    return Column(name, path, kind)


def _record(*columns: Column) -> tuple[Column, ...]:
    """A record's columns: ``id`` first, its own, then ``active``, ``created_on``, ``modified_on``."""
    return (
        _c("id", "id", INT),
        *columns,
        _c("active", "active", B),
        _c("created_on", "createdOn", TS),
        _c("modified_on", "modifiedOn", TS),
    )


def _address(prefix: str, path: str, coordinates: bool = True) -> tuple[Column, ...]:
    columns = [
        _c(f"{prefix}street", f"{path}.street", T),
        _c(f"{prefix}unit", f"{path}.unit", T),
        _c(f"{prefix}city", f"{path}.city", T),
        _c(f"{prefix}state", f"{path}.state", T),
        _c(f"{prefix}zip", f"{path}.zip", T),
        _c(f"{prefix}country", f"{path}.country", T),
    ]
    if coordinates:
        columns += [
            _c(f"{prefix}latitude", f"{path}.latitude", GEO),
            _c(f"{prefix}longitude", f"{path}.longitude", GEO),
        ]
    return tuple(columns)


HUB_TABLES: tuple[HubTable, ...] = (
    HubTable(
        "business_units",
        "settings/business-units",
        "Business units (the departments revenue is credited to), with their division and trade.",
        _record(
            _c("name", "name", T),
            _c("official_name", "officialName", T),
            _c("division_id", "division.id", INT),
            _c("division_name", "division.name", T),
            _c("trade_id", "trade.id", INT),
            _c("trade_name", "trade.name", T),
            _c("currency", "currency", T),
            _c("default_tax_rate", "defaultTaxRate", D),
        ),
    ),
    HubTable(
        "technicians",
        "settings/technicians",
        "Technicians: field staff who are assigned to appointments and credited with jobs.",
        _record(
            _c("name", "name", T),
            _c("first_name", "firstName", T),
            _c("last_name", "lastName", T),
            _c("business_unit_id", "businessUnitId", INT),
            _c("email", "email", T),
            _c("team", "team", T),
            _c("status", "status", T),
            _c("hourly_rate", "hourlyRate", M),
            _c("burden_rate", "burdenRate", M),
            _c("start_date", "startDate", TS),
        ),
        references=(Reference("business_unit_id", "hub_business_units"),),
    ),
    HubTable(
        "employees",
        "settings/employees",
        "Office employees (dispatchers, CSRs, managers): users who are not technicians.",
        _record(
            _c("name", "name", T),
            _c("first_name", "firstName", T),
            _c("last_name", "lastName", T),
            _c("role", "role", T),
            _c("business_unit_id", "businessUnitId", INT),
            _c("email", "email", T),
            _c("manager_id", "managerId", INT),
            _c("start_date", "startDate", TS),
            _c("termination_date", "terminationDate", TS),
        ),
    ),
    HubTable(
        "customers",
        "crm/customers",
        "Customers (residential or commercial accounts), with their billing address flattened.",
        _record(
            _c("name", "name", T),
            _c("type", "type", T),
            _c("balance", "balance", M),
            _c("do_not_mail", "doNotMail", B),
            _c("do_not_service", "doNotService", B),
            _c("tax_exempt", "taxExempt", B),
            _c("national_account", "nationalAccount", B),
            _c("merged_to_id", "mergedToId", INT),
            *_address("address_", "address"),
        ),
    ),
    HubTable(
        "locations",
        "crm/locations",
        "Service locations (where the work happens), each of one customer, address flattened.",
        _record(
            _c("customer_id", "customerId", INT),
            _c("name", "name", T),
            _c("zone_id", "zoneId", INT),
            _c("tax_zone_id", "taxZoneId", INT),
            _c("merged_to_id", "mergedToId", INT),
            *_address("address_", "address"),
        ),
        references=(Reference("customer_id", "hub_customers"),),
    ),
    HubTable(
        "customer_contacts",
        "crm/customers/contacts",
        "Contact methods of customers (phone, email, …): one row per method.",
        _record(
            _c("customer_id", "customerId", INT), _c("type", "type", T), _c("value", "value", T), _c("memo", "memo", T)
        ),
        references=(Reference("customer_id", "hub_customers"),),
    ),
    HubTable(
        "location_contacts",
        "crm/locations/contacts",
        "Contact methods of locations (phone, email, …): one row per method.",
        _record(
            _c("location_id", "locationId", INT), _c("type", "type", T), _c("value", "value", T), _c("memo", "memo", T)
        ),
        references=(Reference("location_id", "hub_locations"),),
    ),
    HubTable(
        "job_types",
        "jpm/job-types",
        "Job types, with the sold threshold and no-charge flag that decide conversion.",
        _record(
            _c("name", "name", T),
            _c("class", "class", T),
            _c("sold_threshold", "soldThreshold", M),
            _c("no_charge", "noCharge", B),
            _c("priority", "priority", T),
            _c("duration", "duration", INT),
        ),
    ),
    HubTable(
        "campaigns",
        "marketing/campaigns",
        "Marketing campaigns calls, leads and jobs are attributed to.",
        _record(
            _c("name", "name", T),
            _c("category_id", "category.id", INT),
            _c("category_name", "category.name", T),
            _c("source", "source", T),
            _c("medium", "medium", T),
            _c("is_default", "isDefaultCampaign", B),
        ),
    ),
    HubTable(
        "jobs",
        "jpm/jobs",
        "Jobs: a unit of work at a location, with its status, type, business unit and completion time.",
        _record(
            _c("job_number", "jobNumber", T),
            _c("customer_id", "customerId", INT),
            _c("location_id", "locationId", INT),
            _c("business_unit_id", "businessUnitId", INT),
            _c("job_type_id", "jobTypeId", INT),
            _c("job_status", "jobStatus", T),
            _c("completed_on", "completedOn", TS),
            _c("campaign_id", "campaignId", INT),
            _c("booking_id", "bookingId", INT),
            _c("lead_call_id", "leadCallId", INT),
            _c("invoice_id", "invoiceId", INT),
            _c("membership_id", "membershipId", INT),
            _c("sold_by_id", "soldById", INT),
            _c("no_charge", "noCharge", B),
            _c("priority", "priority", T),
            _c("total", "total", M),
            _c("recall_for_id", "recallForId", INT),
            _c("warranty_id", "warrantyId", INT),
        ),
        references=(
            Reference("customer_id", "hub_customers"),
            Reference("location_id", "hub_locations"),
            Reference("business_unit_id", "hub_business_units"),
            Reference("job_type_id", "hub_job_types"),
        ),
    ),
    HubTable(
        "appointments",
        "jpm/appointments",
        "Appointments: the visits of a job, with their scheduled window and status.",
        _record(
            _c("job_id", "jobId", INT),
            _c("customer_id", "customerId", INT),
            _c("appointment_number", "appointmentNumber", T),
            _c("status", "status", T),
            _c("start_at", "start", TS),
            _c("end_at", "end", TS),
            _c("arrival_window_start", "arrivalWindowStart", TS),
            _c("arrival_window_end", "arrivalWindowEnd", TS),
            _c("is_confirmed", "isConfirmed", B),
        ),
        references=(Reference("job_id", "hub_jobs"),),
    ),
    HubTable(
        "appointment_assignments",
        "dispatch/appointment-assignments",
        "Which technician was assigned to which appointment (and job), and when.",
        _record(
            _c("appointment_id", "appointmentId", INT),
            _c("job_id", "jobId", INT),
            _c("technician_id", "technicianId", INT),
            _c("technician_name", "technicianName", T),
            _c("status", "status", T),
            _c("assigned_on", "assignedOn", TS),
            _c("is_paused", "isPaused", B),
        ),
        references=(
            Reference("appointment_id", "hub_appointments"),
            Reference("job_id", "hub_jobs"),
            Reference("technician_id", "hub_technicians"),
        ),
    ),
    HubTable(
        "invoices",
        "accounting/invoices",
        "Invoices, with their job, customer, location and business unit; money exact.",
        _record(
            _c("reference_number", "referenceNumber", T),
            _c("invoice_date", "invoiceDate", TS),
            _c("due_date", "dueDate", TS),
            _c("job_id", "job.id", INT),
            _c("job_number", "job.number", T),
            _c("customer_id", "customer.id", INT),
            _c("location_id", "location.id", INT),
            _c("business_unit_id", "businessUnit.id", INT),
            _c("adjustment_to_id", "adjustmentToId", INT),
            _c("membership_id", "membershipId", INT),
            _c("sub_total", "subTotal", M),
            _c("sales_tax", "salesTax", M),
            _c("total", "total", M),
            _c("balance", "balance", M),
            _c("discount_total", "discountTotal", M),
            _c("paid_on", "paidOn", TS),
            _c("sync_status", "syncStatus", T),
            _c("invoice_type", "invoiceType.name", T),
        ),
        references=(
            Reference("job_id", "hub_jobs"),
            Reference("customer_id", "hub_customers"),
            Reference("location_id", "hub_locations"),
        ),
        money_totals=("sub_total", "sales_tax", "total", "balance"),
    ),
    HubTable(
        "invoice_items",
        "accounting/invoices",
        "Invoice items, exploded from their invoices: the item's own business unit and GL account type "
        "decide revenue credit.",
        (
            _c("invoice_id", "parent.id", INT),
            _c("id", "id", INT),
            _c("position", "#", INT),
            _c("sku_id", "skuId", INT),
            _c("sku_name", "skuName", T),
            _c("display_name", "displayName", T),
            _c("type", "type", T),
            _c("quantity", "quantity", D),
            _c("price", "price", M),
            _c("total", "total", M),
            _c("cost", "cost", M),
            _c("total_cost", "totalCost", M),
            _c("business_unit_id", "businessUnit.id", INT),
            _c("gl_account_type", "generalLedgerAccount.type", T),
            _c("gl_account_name", "generalLedgerAccount.name", T),
            _c("technician_id", "technicianId", INT),
            _c("membership_type_id", "membershipTypeId", INT),
            _c("is_chargeable", "isChargeable", B),
            _c("taxable", "taxable", B),
            _c("add_on", "addOn", B),
            _c("service_date", "serviceDate", TS),
            _c("active", "parent.active", B),
            _c("modified_on", "modifiedOn", TS),
        ),
        key=("invoice_id", "position"),
        explode="items",
        references=(Reference("invoice_id", "hub_invoices"),),
        money_totals=("total",),
    ),
    HubTable(
        "payments",
        "accounting/payments",
        "Payments received from customers, by payment date; money exact.",
        _record(
            _c("payment_date", "date", TS),
            _c("customer_id", "customer.id", INT),
            _c("type", "type", T),
            _c("total", "total", M),
            _c("unapplied_amount", "unappliedAmount", M),
            _c("reference_number", "referenceNumber", T),
            _c("business_unit_id", "businessUnit.id", INT),
            _c("refunded_payment_id", "refundedPaymentId", INT),
        ),
        references=(Reference("customer_id", "hub_customers"),),
        money_totals=("total",),
    ),
    HubTable(
        "payment_applications",
        "accounting/payments",
        "How each payment was applied to invoices, exploded from the payments.",
        (
            _c("payment_id", "parent.id", INT),
            _c("position", "#", INT),
            _c("invoice_id", "appliedTo", INT),
            _c("applied_amount", "appliedAmount", M),
            _c("applied_on", "appliedOn", TS),
            _c("applied_by", "appliedBy", T),
            _c("active", "parent.active", B),
            _c("modified_on", "parent.modifiedOn", TS),
        ),
        key=("payment_id", "position"),
        explode="appliedTo",
        references=(Reference("payment_id", "hub_payments"), Reference("invoice_id", "hub_invoices")),
    ),
    HubTable(
        "estimates",
        "sales/estimates",
        "Estimates (quotes) for jobs, with their status and sold date; sales are dated by sold date.",
        _record(
            _c("name", "name", T),
            _c("job_id", "jobId", INT),
            _c("customer_id", "customerId", INT),
            _c("location_id", "locationId", INT),
            _c("business_unit_id", "businessUnitId", INT),
            _c("status", "status.name", T),
            _c("sold_on", "soldOn", TS),
            _c("sold_by_id", "soldBy", INT),
            _c("sub_total", "subtotal", M),
            _c("tax", "tax", M),
            _c("review_status", "reviewStatus", T),
        ),
        references=(Reference("job_id", "hub_jobs"),),
        money_totals=("sub_total",),
    ),
    HubTable(
        "estimate_items",
        "sales/estimates",
        "Estimate items, exploded from their estimates.",
        (
            _c("estimate_id", "parent.id", INT),
            _c("id", "id", INT),
            _c("position", "#", INT),
            _c("sku_id", "sku.id", INT),
            _c("sku_name", "sku.name", T),
            _c("sku_type", "sku.type", T),
            _c("quantity", "qty", D),
            _c("unit_rate", "unitRate", M),
            _c("total", "total", M),
            _c("total_cost", "totalCost", M),
            _c("chargeable", "chargeable", B),
            _c("membership_type_id", "membershipTypeId", INT),
            _c("active", "parent.active", B),
            _c("modified_on", "modifiedOn", TS),
        ),
        key=("estimate_id", "position"),
        explode="items",
        references=(Reference("estimate_id", "hub_estimates"),),
    ),
    HubTable(
        "membership_types",
        "memberships/membership-types",
        "Membership types (service agreements) customers can buy.",
        _record(
            _c("name", "name", T),
            _c("display_name", "displayName", T),
            _c("revenue_recognition_mode", "revenueRecognitionMode", T),
        ),
    ),
    HubTable(
        "memberships",
        "memberships/memberships",
        "Customer memberships, with their type, location, sale date (from) and status.",
        _record(
            _c("customer_id", "customerId", INT),
            _c("location_id", "locationId", INT),
            _c("membership_type_id", "membershipTypeId", INT),
            _c("business_unit_id", "businessUnitId", INT),
            _c("status", "status", T),
            _c("follow_up_status", "followUpStatus", T),
            _c("valid_from", "from", TS),
            _c("valid_to", "to", TS),
            _c("sold_by_id", "soldById", INT),
            _c("cancellation_date", "cancellationDate", TS),
            _c("billing_frequency", "billingFrequency", T),
        ),
        references=(
            Reference("customer_id", "hub_customers"),
            Reference("location_id", "hub_locations"),
            Reference("membership_type_id", "hub_membership_types"),
        ),
    ),
    HubTable(
        "calls",
        "telecom/calls",
        "Phone calls, with direction, call type (booked or not), campaign and the job booked.",
        _record(
            _c("direction", "direction", T),
            _c("call_type", "type", T),
            _c("status", "status", T),
            _c("duration", "duration", T),
            _c("from_number", "from", T),
            _c("to_number", "to", T),
            _c("customer_id", "customer.id", INT),
            _c("location_id", "location.id", INT),
            _c("job_id", "job.id", INT),
            _c("campaign_id", "campaign.id", INT),
            _c("agent_id", "agent.id", INT),
            _c("reason_name", "reason.name", T),
        ),
    ),
    HubTable(
        "leads",
        "crm/leads",
        "Leads: requests for work that may become bookings and jobs.",
        _record(
            _c("status", "status", T),
            _c("customer_id", "customerId", INT),
            _c("location_id", "locationId", INT),
            _c("business_unit_id", "businessUnitId", INT),
            _c("job_type_id", "jobTypeId", INT),
            _c("campaign_id", "campaignId", INT),
            _c("call_id", "callId", INT),
            _c("booking_id", "bookingId", INT),
            _c("priority", "priority", T),
            _c("follow_up_date", "followUpDate", TS),
        ),
    ),
    HubTable(
        "bookings",
        "crm/bookings",
        "Bookings from online and partner booking providers, and the job each became.",
        _record(
            _c("name", "name", T),
            _c("status", "status", T),
            _c("source", "source", T),
            _c("business_unit_id", "businessUnitId", INT),
            _c("job_type_id", "jobTypeId", INT),
            _c("campaign_id", "campaignId", INT),
            _c("job_id", "jobId", INT),
            _c("start_at", "start", TS),
            _c("is_first_time_client", "isFirstTimeClient", B),
            *_address("address_", "address", coordinates=False),
        ),
    ),
    HubTable(
        "job_splits",
        "payroll/jobs/splits",
        "How a job's credit is split between technicians (percent).",
        _record(_c("job_id", "jobId", INT), _c("technician_id", "technicianId", INT), _c("split", "split", D)),
        references=(Reference("job_id", "hub_jobs"), Reference("technician_id", "hub_technicians")),
    ),
)

HUBS_BY_NAME: dict[str, HubTable] = {hub.name: hub for hub in HUB_TABLES}


def hub(name: str) -> HubTable:
    """The hub table spec named ``name`` (``jobs``, or ``hub_jobs``)."""
    return HUBS_BY_NAME[name.removeprefix("hub_")]


def source_datasets() -> tuple[str, ...]:
    """The raw datasets the hub tables are built from, each once."""
    return tuple(dict.fromkeys(h.source for h in HUB_TABLES))
