"""The simulated Reporting API: shapes (against reporting-v2.json), paging, errors, the per-report
rate limit, changed definitions, and figures checked against the simulator's own records."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from st_pipeline.simulator import ReportField, SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline_tests.servicetitan.specs import require_spec_dir

from .conftest import authorize

UTC_TENANT = SimulatorConfig.demo_tenant(7101, seed=5)
LA_TENANT = SimulatedTenant(7102, "cid.sim7102", "cs1.sim-reports-la", time_zone="America/Los_Angeles")
SOURCES = (
    "jpm/jobs",
    "jpm/job-types",
    "accounting/invoices",
    "sales/estimates",
    "settings/business-units",
    "settings/technicians",
    "payroll/jobs/splits",
    "dispatch/appointment-assignments",
    "jpm/appointments",
    "dispatch/technician-shifts",
    "telecom/calls",
    "accounting/payments",
    "reporting/report-categories",
)
REPORTS = {1001: "operations", 1002: "technician", 1003: "marketing", 1004: "accounting", 1005: "custom"}
RETRY_TITLE = re.compile(r"Rate limit is exceeded\. Try again in (\d+) seconds\.")
Schemas = dict[str, Any]


def base(tenant_id: int) -> str:
    return f"/reporting/v2/tenant/{tenant_id}"


def data_path(tenant_id: int, report_id: int) -> str:
    return f"{base(tenant_id)}/report-category/{REPORTS[report_id]}/reports/{report_id}/data"


def days(first: str, last: str | None = None) -> dict[str, Any]:
    return {"parameters": [{"name": "From", "value": first}, {"name": "To", "value": last or first}]}


def decoded(response: httpx.Response) -> Any:
    """The body with its numbers as exact decimals (integers stay int)."""
    return json.loads(response.content, parse_float=Decimal)


def config(tenants: list[SimulatedTenant], **overrides: Any) -> SimulatorConfig:
    settings: dict[str, Any] = {"tenants": tenants, "seed": 5, "scale": 0.05, "datasets": SOURCES}
    settings.update(overrides)
    return SimulatorConfig(**settings)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Simulator, httpx.Client]]:
    """Two tenants (UTC and Los Angeles), limits high enough for every test here."""
    with Simulator(config([UTC_TENANT, LA_TENANT], report_requests_per_window=10_000)) as sim:
        with httpx.Client(base_url=sim.url, timeout=10) as http:
            authorize(http, sim, UTC_TENANT)
            yield sim, http


@pytest.fixture()
def limited() -> Iterator[tuple[Simulator, httpx.Client]]:
    """A simulator of its own with the default limit (5 per report per 60 s) and little data."""
    small = ("telecom/calls", "accounting/payments")
    with Simulator(config([UTC_TENANT, LA_TENANT], datasets=small, scale=0.02)) as sim:
        with httpx.Client(base_url=sim.url, timeout=10) as http:
            authorize(http, sim, UTC_TENANT)
            yield sim, http


# -- a small validator of the spec's JSON schemas (the subset reporting-v2.json uses) -----------


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    spec = json.loads((require_spec_dir() / "reporting-v2.json").read_text(encoding="utf-8"))
    schemas: Schemas = spec["components"]["schemas"]
    return schemas


_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float, Decimal)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def problems(schema: dict[str, Any], value: Any, schemas: Schemas, where: str = "$") -> list[str]:
    if "$ref" in schema:
        return problems(schemas[schema["$ref"].rsplit("/", 1)[-1]], value, schemas, where)
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not problems(s, value, schemas, where)]
        return [] if len(matching) == 1 else [f"{where}: {value!r} matches {len(matching)} of oneOf"]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[kind](value) for kind in kinds):
            return [f"{where}: {value!r} is not {kinds}"]
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found += [f"{where}: {name} missing" for name in schema.get("required", ()) if name not in value]
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                found += problems(properties[name], item, schemas, f"{where}.{name}")
            elif extra is False:
                found.append(f"{where}: unexpected {name}")
            elif isinstance(extra, dict):
                found += problems(extra, item, schemas, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += problems(schema["items"], item, schemas, f"{where}[{index}]")
    return found


def conforms(name: str, value: Any, schemas: Schemas) -> None:
    assert problems({"$ref": name}, value, schemas) == []


def test_the_validator_catches_what_it_checks(schemas: Schemas) -> None:
    good = {"page": 1, "pageSize": 50, "hasMore": False, "totalCount": None, "data": [{"id": "x", "name": "X"}]}
    conforms("PaginatedResponse_Of_Reporting.V2.ReportCategoryListItem", good, schemas)
    for bad in ({**good, "extra": 1}, {**good, "data": [{"id": 1, "name": "X"}]}, {**good, "hasMore": None}):
        assert problems({"$ref": "PaginatedResponse_Of_Reporting.V2.ReportCategoryListItem"}, bad, schemas)


# -- shapes ----------------------------------------------------------------------------------------


def test_categories_report_lists_and_definitions_match_the_spec(
    served: tuple[Simulator, httpx.Client], schemas: Schemas
) -> None:
    sim, http = served
    # The catalogued report-categories dataset is served like every other list (its records' ids are
    # numbers there: the raw tables key records by a numeric id); the reports are listed per category.
    categories = http.get(f"{base(7101)}/report-categories", params={"includeTotal": "true"})
    assert categories.status_code == 200

    for report_id, category in REPORTS.items():
        listed = http.get(f"{base(7101)}/report-category/{category}/reports")
        assert listed.status_code == 200
        conforms("PaginatedResponse_Of_Reporting.V2.ReportListItem", listed.json(), schemas)
        assert report_id in [report["id"] for report in listed.json()["data"]]
        definition = http.get(f"{base(7101)}/report-category/{category}/reports/{report_id}")
        assert definition.status_code == 200
        conforms("Reporting.V2.ReportResponse", definition.json(), schemas)
        parameters = {p["name"]: p for p in definition.json()["parameters"]}
        assert set(parameters) == {"From", "To"}
        assert all(p["dataType"] == "Date" and p["isRequired"] and not p["isArray"] for p in parameters.values())
        answer = http.post(data_path(7101, report_id), json=days("2024-03-01", "2024-03-31"))
        assert answer.status_code == 200
        conforms("Reporting.V2.ReportDataResponse", decoded(answer), schemas)
        fields = [field["name"] for field in definition.json()["fields"]]
        assert [field["name"] for field in answer.json()["fields"]] == fields
        assert all(len(row) == len(fields) for row in answer.json()["data"])
    bu = http.get(f"{base(7101)}/report-category/operations/reports/1001").json()
    assert [(f["name"], f["dataType"]) for f in bu["fields"]] == [
        ("BusinessUnitId", "Number"),
        ("BusinessUnitName", "String"),
        ("CompletedRevenue", "Number"),
        ("CompletedJobs", "Number"),
        ("Opportunities", "Number"),
        ("ConvertedJobs", "Number"),
        ("SalesOpportunities", "Number"),
        ("ClosedOpportunities", "Number"),
    ]


def test_data_pages_of_one_row_add_up_to_the_whole(served: tuple[Simulator, httpx.Client]) -> None:
    _sim, http = served
    whole = http.post(data_path(7101, 1005), json=days("2023-01-01", "2025-12-31"), params={"includeTotal": "true"})
    assert whole.status_code == 200
    body = whole.json()
    assert body["page"] == 1 and body["pageSize"] == 1000 and body["hasMore"] is False
    rows = body["data"]
    assert len(rows) >= 3 and body["totalCount"] == len(rows)
    pages = []
    for page in range(1, len(rows) + 2):
        answer = http.post(
            data_path(7101, 1005), json=days("2023-01-01", "2025-12-31"), params={"page": page, "pageSize": 1}
        ).json()
        assert answer["pageSize"] == 1 and answer["page"] == page and answer["totalCount"] is None
        assert answer["hasMore"] is (page < len(rows))
        pages.append(answer["data"])
    assert [row for page in pages for row in page] == rows
    assert pages[-1] == []  # past the end: no rows
    counted = http.post(
        data_path(7101, 1005), json=days("2023-01-01", "2025-12-31"), params={"pageSize": 2, "includeTotal": "true"}
    ).json()
    assert counted["totalCount"] == len(rows) and counted["data"] == rows[:2] and counted["hasMore"] is True


@pytest.mark.parametrize(
    ("body", "params", "field"),
    [
        (days("2024-03-01")["parameters"][:1], {}, "To"),
        ([{"name": "From", "value": "2024-02-30"}, {"name": "To", "value": "2024-03-01"}], {}, "From"),
        ([{"name": "From", "value": "yesterday"}, {"name": "To", "value": "2024-03-01"}], {}, "From"),
        ([{"name": "From", "value": 20240301}, {"name": "To", "value": "2024-03-01"}], {}, "From"),
        (days("2024-03-02", "2024-03-01")["parameters"], {}, "To"),
        ([*days("2024-03-01")["parameters"], {"name": "BusinessUnit", "value": 1}], {}, "BusinessUnit"),
        (None, {}, "parameters"),
        (days("2024-03-01")["parameters"], {"pageSize": "25001"}, "pageSize"),
        (days("2024-03-01")["parameters"], {"pageSize": "0"}, "pageSize"),
        (days("2024-03-01")["parameters"], {"page": "x"}, "page"),
    ],
)
def test_bad_data_requests_are_400_with_the_error_body(
    served: tuple[Simulator, httpx.Client],
    schemas: Schemas,
    body: list[dict[str, Any]] | None,
    params: dict[str, str],
    field: str,
) -> None:
    _sim, http = served
    answer = http.post(data_path(7101, 1001), json={"parameters": body} if body is not None else {}, params=params)
    assert answer.status_code == 400, answer.text
    conforms("ApiErrorResponse", answer.json(), schemas)
    assert answer.json()["status"] == 400 and set(answer.json()["errors"]) == {field}


def test_the_largest_page_size_is_allowed(served: tuple[Simulator, httpx.Client]) -> None:
    _sim, http = served
    answer = http.post(data_path(7101, 1003), json=days("2024-03-01"), params={"pageSize": "25000"})
    assert answer.status_code == 200 and answer.json()["pageSize"] == 25000


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/report-category/nowhere/reports"),
        ("GET", "/report-category/operations/reports/9999"),
        ("GET", "/report-category/technician/reports/1001"),  # a report of another category
        ("GET", "/report-category/operations/reports/bu"),
        ("POST", "/report-category/operations/reports/9999/data"),
        ("POST", "/report-category/custom/reports/1001/data"),
    ],
)
def test_unknown_categories_and_reports_are_404(
    served: tuple[Simulator, httpx.Client], schemas: Schemas, method: str, path: str
) -> None:
    _sim, http = served
    answer = http.request(method, base(7101) + path, json=days("2024-03-01"))
    assert answer.status_code == 404
    conforms("ApiErrorResponse", answer.json(), schemas)


def test_data_takes_post_and_definitions_get(served: tuple[Simulator, httpx.Client]) -> None:
    _sim, http = served
    assert http.get(data_path(7101, 1001)).status_code == 405
    assert http.post(f"{base(7101)}/report-category/operations/reports/1001", json={}).status_code == 405


# -- the per-report rate limit ------------------------------------------------------------------


def assert_report_throttled(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    body = response.json()
    assert body["status"] == 429 and body["traceId"] and body["type"]
    match = RETRY_TITLE.fullmatch(body["title"])
    assert match is not None and int(match.group(1)) == retry_after >= 1
    return retry_after


def test_the_sixth_request_for_a_report_in_a_window_gets_429(limited: tuple[Simulator, httpx.Client]) -> None:
    sim, http = limited
    now = [1000.0]
    sim.report_limiter.clock = lambda: now[0]  # no admission depends on how fast the test runs
    assert [http.post(data_path(7101, 1003), json=days("2024-03-01")).status_code for _ in range(5)] == [200] * 5
    assert sim.stats.report_throttled_for(7101, 1003) == 0
    assert assert_report_throttled(http.post(data_path(7101, 1003), json=days("2024-03-01"))) == 60
    assert sim.stats.report_throttled_for(7101, 1003) == 1 and sim.stats.report_requests_for(7101, 1003) == 5
    assert sim.stats.throttled == 0  # the per-second limit's count is apart
    # Another report, and the same report of another tenant, have windows of their own.
    assert http.post(data_path(7101, 1004), json=days("2024-03-01")).status_code == 200
    with httpx.Client(base_url=sim.url) as other:
        authorize(other, sim, LA_TENANT)
        assert other.post(data_path(7102, 1003), json=days("2024-03-01")).status_code == 200
    # The lists and definitions are not limited.
    assert http.get(f"{base(7101)}/report-category/marketing/reports/1003").status_code == 200
    now[0] += 59.5  # still inside the window: the wait shrinks, rounded up
    assert assert_report_throttled(http.post(data_path(7101, 1003), json=days("2024-03-01"))) == 1
    now[0] += 0.5  # the five (all at one instant) leave the window together: five more fit
    statuses = [http.post(data_path(7101, 1003), json=days("2024-03-01")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert sim.stats.report_throttled_for(7101, 1003) == 3
    assert sim.stats.snapshot()["tenants"]["7101"]["reports"]["1003"] == {"requests": 10, "throttled": 3}


def test_after_retry_after_on_the_simulator_clock_the_report_answers(limited: tuple[Simulator, httpx.Client]) -> None:
    sim, http = limited
    for _ in range(5):
        assert http.post(data_path(7101, 1004), json=days("2024-03-01")).status_code == 200
    retry_after = assert_report_throttled(http.post(data_path(7101, 1004), json=days("2024-03-01")))
    assert retry_after <= 60
    sim.advance_clock(retry_after)  # instead of sleeping: the window runs on the simulator's clock
    assert http.post(data_path(7101, 1004), json=days("2024-03-01")).status_code == 200
    assert sim.stats.report_throttled_for(7101, 1004) == 1


# -- changed definitions -------------------------------------------------------------------------


def test_changed_fields_change_the_definition_and_the_rows(served: tuple[Simulator, httpx.Client]) -> None:
    sim, http = served
    path = f"{base(7102)}/report-category/accounting/reports/1004"
    with httpx.Client(base_url=sim.url) as other:
        authorize(other, sim, LA_TENANT)
        before = other.get(path).json()
        rows_before = decoded(other.post(path + "/data", json=days("2023-01-01", "2025-12-31")))["data"]
        modified = sim.change_report_fields(
            7102,
            1004,
            [
                ReportField("CollectedAmount", "Amount Collected", source="Collected"),
                ReportField("Payments", "Payments"),
                ReportField("Region", "Region", "String"),
            ],
        )
        after = other.get(path).json()
        rows_after = decoded(other.post(path + "/data", json=days("2023-01-01", "2025-12-31")))
    assert after["modifiedOn"] == modified > before["modifiedOn"]
    assert [(f["name"], f["dataType"]) for f in after["fields"]] == [
        ("CollectedAmount", "Number"),
        ("Payments", "Number"),
        ("Region", "String"),
    ]
    assert [f["name"] for f in rows_after["fields"]] == ["CollectedAmount", "Payments", "Region"]
    (payments, collected), (renamed, count, region) = rows_before[0], rows_after["data"][0]
    assert (renamed, count, region) == (collected, payments, None) and payments > 0
    # Only that tenant's report changed.
    assert http.get(f"{base(7101)}/report-category/accounting/reports/1004").json()["fields"] == before["fields"]
    with pytest.raises(ValueError):
        sim.change_report_fields(7102, 1004, [ReportField("A", "A", "Money")])


# -- figures --------------------------------------------------------------------------------------


def money(value: Any) -> Decimal:
    return Decimal(str(value))


def local_day(stamp: str, zone: str) -> date:
    moment = datetime.fromisoformat(stamp[:19]).replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(zone)).date()


def expected_bu_performance(sim: Simulator, tenant_id: int, first: date, last: date, zone: str) -> dict[Any, dict]:
    """BU Performance written from the README's definitions over the ground truth, job by job."""

    def truth(key: str) -> list[dict[str, Any]]:
        return [record for record in sim.ground_truth(tenant_id, key) if record.get("active") is not False]

    types = {t["id"]: t for t in sim.ground_truth(tenant_id, "jpm/job-types")}
    own_invoices: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for invoice in truth("accounting/invoices"):
        if invoice["job"] and invoice["adjustmentToId"] is None:
            own_invoices[invoice["job"]["id"]].append(invoice)
    estimates: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for estimate in truth("sales/estimates"):
        estimates[estimate["jobId"]].append(estimate)
    rows: dict[Any, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(MEASURES, 0))
    for job in truth("jpm/jobs"):
        if job["jobStatus"] != "Completed" or not job["completedOn"]:
            continue
        if not first <= local_day(job["completedOn"], zone) <= last:
            continue
        job_type = types.get(job["jobTypeId"], {})
        threshold = money(job_type.get("soldThreshold") or 0)
        no_charge = bool(job["noCharge"]) or bool(job_type.get("noCharge"))
        invoiced = sum((money(i["subTotal"]) for i in own_invoices[job["id"]]), Decimal(0))
        sold = sum((money(e["subtotal"]) for e in estimates[job["id"]] if e["status"]["name"] == "Sold"), Decimal(0))
        converted = invoiced > 0 and invoiced >= threshold
        closed = bool(estimates[job["id"]]) and sold > 0 and sold >= threshold
        unit = rows[job["businessUnitId"]]
        unit["CompletedJobs"] += 1
        unit["Opportunities"] += int(not no_charge or converted)
        unit["ConvertedJobs"] += int(converted)
        unit["SalesOpportunities"] += int(bool(estimates[job["id"]]) and (not no_charge or closed))
        unit["ClosedOpportunities"] += int(closed)
        for invoice in own_invoices[job["id"]]:
            for item in invoice["items"]:
                if (item["generalLedgerAccount"] or {}).get("type") == "Income":
                    credited = (item["businessUnit"] or {}).get("id") or job["businessUnitId"]
                    rows[credited]["CompletedRevenue"] += money(item["total"])
    return {unit: sums for unit, sums in rows.items() if any(sums.values())}


MEASURES = (
    "CompletedRevenue",
    "CompletedJobs",
    "Opportunities",
    "ConvertedJobs",
    "SalesOpportunities",
    "ClosedOpportunities",
)


def reported(http: httpx.Client, tenant_id: int, first: date, last: date) -> dict[Any, dict[str, Any]]:
    answer = http.post(data_path(tenant_id, 1001), json=days(first.isoformat(), last.isoformat()))
    assert answer.status_code == 200, answer.text
    body = decoded(answer)
    names = [field["name"] for field in body["fields"]]
    return {row[0]: dict(zip(names, row, strict=True)) for row in body["data"]}


def test_bu_performance_equals_what_the_records_add_up_to(served: tuple[Simulator, httpx.Client]) -> None:
    sim, http = served
    completed = Counter(
        job["completedOn"][:10] for job in sim.ground_truth(7101, "jpm/jobs") if job["jobStatus"] == "Completed"
    )
    busiest = [date.fromisoformat(day) for day, _ in completed.most_common(3)]
    month = (date(2024, 2, 1), date(2024, 3, 31))
    ranges = [(day, day) for day in busiest] + [month, (date(2023, 1, 1), date(2025, 12, 31))]
    names = {unit["id"]: unit["name"] for unit in sim.ground_truth(7101, "settings/business-units")}
    checked = Counter[str]()
    for first, last in ranges:
        expected = expected_bu_performance(sim, 7101, first, last, "UTC")
        rows = reported(http, 7101, first, last)
        assert set(rows) == set(expected), (first, last)
        for unit, sums in expected.items():
            assert {name: rows[unit][name] for name in MEASURES} == sums, (first, last, unit)
            assert rows[unit]["BusinessUnitName"] == names.get(unit)
            checked.update(name for name in MEASURES if sums[name])
    # The ranges exercised every figure (none was compared as zero only).
    assert set(checked) == set(MEASURES)
    assert reported(http, 7101, date(2019, 1, 1), date(2019, 12, 31)) == {}


def a_completed_job_far_from(sim: Simulator, tenant_id: int, around: date) -> dict[str, Any]:
    """A live completed job with an invoice, completed more than a week away from ``around``."""
    invoiced = {
        invoice["job"]["id"]
        for invoice in sim.ground_truth(tenant_id, "accounting/invoices")
        if invoice["job"] and invoice["adjustmentToId"] is None and invoice["active"]
    }
    return next(
        job
        for job in sim.ground_truth(tenant_id, "jpm/jobs")
        if job["jobStatus"] == "Completed"
        and job["active"]
        and job["id"] in invoiced
        and abs((date.fromisoformat(job["completedOn"][:10]) - around).days) > 7
    )


@pytest.mark.parametrize(
    ("tenant", "zone", "counted_on"), [(LA_TENANT, "America/Los_Angeles", 31), (UTC_TENANT, "UTC", 1)]
)
def test_report_days_are_the_tenants_calendar_days(
    served: tuple[Simulator, httpx.Client], tenant: SimulatedTenant, zone: str, counted_on: int
) -> None:
    sim, _ = served
    tenant_id = tenant.tenant_id
    march_31, april_1 = date(2024, 3, 31), date(2024, 4, 1)
    job = a_completed_job_far_from(sim, tenant_id, april_1)
    unit = job["businessUnitId"]
    with httpx.Client(base_url=sim.url) as http:
        authorize(http, sim, tenant)
        before = {day: reported(http, tenant_id, day, day) for day in (march_31, april_1)}

        def late_in_the_evening(record: dict[str, Any]) -> None:
            record["completedOn"] = "2024-04-01T05:30:00.0000000Z"  # 22:30 on 31 March in Los Angeles

        sim.tamper_records(tenant_id, "jpm/jobs", {job["id"]: late_in_the_evening})
        after = {day: reported(http, tenant_id, day, day) for day in (march_31, april_1)}
    on, off = (march_31, april_1) if counted_on == 31 else (april_1, march_31)
    assert after[on][unit]["CompletedJobs"] == before[on].get(unit, {}).get("CompletedJobs", 0) + 1
    assert after[off] == before[off]
    for day in (march_31, april_1):
        expected = expected_bu_performance(sim, tenant_id, day, day, zone)
        assert {u: {n: row[n] for n in MEASURES} for u, row in after[day].items()} == expected


def test_call_booking_and_collections_count_the_records(served: tuple[Simulator, httpx.Client]) -> None:
    sim, http = served
    first, last = date(2024, 1, 1), date(2024, 6, 30)

    def within(stamp: str | None) -> bool:
        return stamp is not None and first <= date.fromisoformat(stamp[:10]) <= last

    calls = [
        c
        for c in sim.ground_truth(7101, "telecom/calls")
        if c["active"] and c["direction"] == "Inbound" and within(c["createdOn"])
    ]
    payments = [p for p in sim.ground_truth(7101, "accounting/payments") if p["active"] and within(p["date"])]
    call_rows = decoded(http.post(data_path(7101, 1003), json=days(first.isoformat(), last.isoformat())))["data"]
    pay_rows = decoded(http.post(data_path(7101, 1004), json=days(first.isoformat(), last.isoformat())))["data"]
    booked = sum(c["type"] == "Booked" for c in calls)
    assert call_rows == [[len(calls), sum(c["type"] in ("Booked", "Unbooked") for c in calls), booked]]
    assert pay_rows == [[len(payments), sum((money(p["total"]) for p in payments), Decimal(0))]]
    assert len(calls) > booked > 0 and payments
    # A range with nothing in it is still one row, of zeros.
    assert decoded(http.post(data_path(7101, 1003), json=days("2019-01-01")))["data"] == [[0, 0, 0]]


def test_a_tenant_without_the_reporting_module_gets_404(limited: tuple[Simulator, httpx.Client]) -> None:
    sim, http = limited
    sim.hide_modules(7101, {"reporting"})
    assert http.get(f"{base(7101)}/report-categories").status_code == 404
    assert http.post(data_path(7101, 1003), json=days("2024-03-01")).status_code == 404
    assert sim.stats.report_requests_for(7101, 1003) == 0


def test_time_zones_are_checked() -> None:
    with pytest.raises(ValueError, match="time zone"):
        SimulatorConfig(tenants=[SimulatedTenant(1, "c", "s", time_zone="Mars/Olympus_Mons")])


# -- the No Charge rule, Technician Performance and Daily Technician Hours -------------------------
#
# Each expected figure is written here again from the README's definitions over the ground truth;
# the rules the generated data never exercise are exercised by editing a few records (and putting
# them back afterwards, so the module's simulator stays as generated for the other tests).

_CUT = Decimal("0.0001")
_INSTANT = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z?")


def cut4(value: Decimal) -> Decimal:
    return value.quantize(_CUT, rounding=ROUND_DOWN)


def epoch_ms(stamp: str) -> int:
    """A UTC timestamp (up to 7 decimals) as whole milliseconds since 1970, the rest dropped."""
    found = _INSTANT.fullmatch(stamp)
    assert found is not None, stamp
    seconds = datetime.fromisoformat(found.group(1)).replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1000 + int(((found.group(2) or "") + "000")[:3])


def live_truth(sim: Simulator, tenant_id: int, key: str) -> list[dict[str, Any]]:
    return [record for record in sim.ground_truth(tenant_id, key) if record.get("active") is not False]


@contextmanager
def edited(sim: Simulator, tenant_id: int, key: str, edits: dict[int, Any]) -> Iterator[None]:
    """Records of ``key`` edited in place (``tamper_records``) and put back as they were after."""
    originals = {record["id"]: record for record in sim.ground_truth(tenant_id, key) if record["id"] in edits}
    sim.tamper_records(tenant_id, key, edits)
    try:
        yield
    finally:

        def restore(original: dict[str, Any]) -> Any:
            return lambda record: (record.clear(), record.update(original))

        sim.tamper_records(tenant_id, key, {record_id: restore(o) for record_id, o in originals.items()})


def report_rows(
    http: httpx.Client, tenant_id: int, report_id: int, first: date, last: date | None = None
) -> list[dict[str, Any]]:
    answer = http.post(data_path(tenant_id, report_id), json=days(first.isoformat(), (last or first).isoformat()))
    assert answer.status_code == 200, answer.text
    body = decoded(answer)
    names = [field["name"] for field in body["fields"]]
    return [dict(zip(names, row, strict=True)) for row in body["data"]]


@contextmanager
def client_of(sim: Simulator, tenant: SimulatedTenant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as http:
        authorize(http, sim, tenant)
        yield http


@dataclass(frozen=True)
class JobTruth:
    """A live completed job and what its conversion depends on, from the ground truth."""

    job: dict[str, Any]
    type_no_charge: bool
    threshold: Decimal
    invoiced: Decimal
    revenue: Decimal
    estimates: int
    sold: Decimal

    @property
    def no_charge(self) -> bool:
        return bool(self.job["noCharge"]) or self.type_no_charge

    @property
    def converted(self) -> bool:
        return self.invoiced > 0 and self.invoiced >= self.threshold

    @property
    def closed(self) -> bool:
        return self.estimates > 0 and self.sold > 0 and self.sold >= self.threshold


def completed_job_truths(sim: Simulator, tenant_id: int) -> dict[int, JobTruth]:
    types = {t["id"]: t for t in sim.ground_truth(tenant_id, "jpm/job-types")}
    invoiced: dict[int, Decimal] = defaultdict(Decimal)
    revenue: dict[int, Decimal] = defaultdict(Decimal)
    for invoice in live_truth(sim, tenant_id, "accounting/invoices"):
        if invoice["job"] and invoice["adjustmentToId"] is None:
            invoiced[invoice["job"]["id"]] += money(invoice["subTotal"])
            for item in invoice["items"]:
                if (item["generalLedgerAccount"] or {}).get("type") == "Income":
                    revenue[invoice["job"]["id"]] += money(item["total"])
    estimates: Counter[int] = Counter()
    sold: dict[int, Decimal] = defaultdict(Decimal)
    for estimate in live_truth(sim, tenant_id, "sales/estimates"):
        estimates[estimate["jobId"]] += 1
        if estimate["status"]["name"] == "Sold":
            sold[estimate["jobId"]] += money(estimate["subtotal"])
    truths = {}
    for job in live_truth(sim, tenant_id, "jpm/jobs"):
        if job["jobStatus"] == "Completed" and job["completedOn"]:
            job_type = types.get(job["jobTypeId"], {})
            truths[job["id"]] = JobTruth(
                job,
                bool(job_type.get("noCharge")),
                money(job_type.get("soldThreshold") or 0),
                invoiced[job["id"]],
                revenue[job["id"]],
                estimates[job["id"]],
                sold[job["id"]],
            )
    return truths


def test_no_charge_jobs_are_opportunities_only_when_they_reach_the_threshold(
    served: tuple[Simulator, httpx.Client],
) -> None:
    """Opportunity: a completed job that is not No Charge (its own flag or its job type's), or a No
    Charge job that converted; a sales opportunity likewise, with closed in place of converted."""
    sim, http = served
    truths = list(completed_job_truths(sim, 7101).values())

    def pick(wanted: Any) -> JobTruth:
        return next(t for t in truths if wanted(t))

    charged = [t for t in truths if not t.no_charge]
    assert charged and any(t.no_charge for t in truths)
    # (the job, its noCharge flag from now on, the change in its business unit's Opportunities and
    # SalesOpportunities on its completion day; nothing else changes)
    cases = [
        (pick(lambda t: t in charged and t.threshold > 0 and t.converted and not t.estimates), True, 0, 0),
        (pick(lambda t: t in charged and not t.converted and not t.estimates), True, -1, 0),
        (pick(lambda t: t in charged and t.threshold > 0 and t.converted and t.closed), True, 0, 0),
        (pick(lambda t: t in charged and not t.converted and t.estimates and not t.closed), True, -1, -1),
        # a No Charge job type: the job is No Charge whatever its own flag says
        (pick(lambda t: t.type_no_charge and not t.converted), False, 0, 0),
    ]
    assert len({case[0].job["id"] for case in cases}) == len(cases)
    for truth, flag, opportunities, sales_opportunities in cases:
        job, unit, day = truth.job, truth.job["businessUnitId"], date.fromisoformat(truth.job["completedOn"][:10])
        before = reported(http, 7101, day, day)[unit]

        def set_flag(record: dict[str, Any], flag: bool = flag) -> None:
            record["noCharge"] = flag

        with edited(sim, 7101, "jpm/jobs", {job["id"]: set_flag}):
            after = reported(http, 7101, day, day)
            expected = expected_bu_performance(sim, 7101, day, day, "UTC")
        change = {name: after[unit][name] - before[name] for name in MEASURES}
        assert change == {
            **dict.fromkeys(MEASURES, 0),
            "Opportunities": opportunities,
            "SalesOpportunities": sales_opportunities,
        }, (job["id"], flag)
        assert {u: {n: row[n] for n in MEASURES} for u, row in after.items()} == expected
        assert reported(http, 7101, day, day)[unit] == before  # put back


TECHNICIAN_MEASURES = ("CompletedJobs", "Revenue", "Opportunities", "ConvertedJobs")


def expected_technician_performance(
    sim: Simulator, tenant_id: int, first: date, last: date, zone: str
) -> dict[Any, dict[str, Any]]:
    """Technician Performance from the ground truth: each completed job credited to the technicians
    with a live split above zero (revenue × split / 100), else, when the job has no live split at
    all, to its live assignees in equal shares (revenue / their number), each share cut to 4 places."""
    shares: dict[int, dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    split_jobs = set()
    for split in live_truth(sim, tenant_id, "payroll/jobs/splits"):
        split_jobs.add(split["jobId"])
        if split["technicianId"] is not None and money(split["split"]) > 0:
            shares[split["jobId"]][split["technicianId"]] += money(split["split"])
    assignees: dict[int, set[int]] = defaultdict(set)
    for assignment in live_truth(sim, tenant_id, "dispatch/appointment-assignments"):
        if assignment["technicianId"] is not None and assignment["jobId"] not in split_jobs:
            assignees[assignment["jobId"]].add(assignment["technicianId"])
    rows: dict[Any, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(TECHNICIAN_MEASURES, 0))
    for job_id, truth in completed_job_truths(sim, tenant_id).items():
        if not first <= local_day(truth.job["completedOn"], zone) <= last:
            continue
        if job_id in split_jobs:
            credited = {tech: cut4(truth.revenue * share / 100) for tech, share in shares[job_id].items()}
        else:
            credited = {tech: cut4(truth.revenue / len(assignees[job_id])) for tech in assignees[job_id]}
        for technician, revenue in credited.items():
            row = rows[technician]
            row["CompletedJobs"] += 1
            row["Revenue"] += revenue
            row["Opportunities"] += int(not truth.no_charge or truth.converted)
            row["ConvertedJobs"] += int(truth.converted)
    return {tech: sums for tech, sums in rows.items() if any(sums.values())}


def technician_rows(http: httpx.Client, tenant_id: int, first: date, last: date) -> dict[Any, dict[str, Any]]:
    rows = report_rows(http, tenant_id, 1002, first, last)
    assert [row["TechnicianId"] for row in rows] == sorted(row["TechnicianId"] for row in rows)
    return {row["TechnicianId"]: row for row in rows}


def busiest_days(stamps: list[str], zone: str, count: int = 3) -> list[date]:
    return [day for day, _ in Counter(local_day(stamp, zone) for stamp in stamps).most_common(count)]


@pytest.mark.parametrize(("tenant", "zone"), [(UTC_TENANT, "UTC"), (LA_TENANT, "America/Los_Angeles")])
def test_technician_performance_equals_what_the_records_add_up_to(
    served: tuple[Simulator, httpx.Client], tenant: SimulatedTenant, zone: str
) -> None:
    sim, _ = served
    tenant_id = tenant.tenant_id
    completed = [t.job["completedOn"] for t in completed_job_truths(sim, tenant_id).values()]
    ranges = [(day, day) for day in busiest_days(completed, zone)]
    ranges += [(date(2024, 2, 1), date(2024, 3, 31)), (date(2023, 1, 1), date(2025, 12, 31))]
    names = {tech["id"]: tech["name"] for tech in sim.ground_truth(tenant_id, "settings/technicians")}
    checked = Counter[str]()
    with client_of(sim, tenant) as http:
        for first, last in ranges:
            expected = expected_technician_performance(sim, tenant_id, first, last, zone)
            rows = technician_rows(http, tenant_id, first, last)
            assert set(rows) == set(expected), (first, last)
            for technician, sums in expected.items():
                assert {name: rows[technician][name] for name in TECHNICIAN_MEASURES} == sums, (first, last)
                assert rows[technician]["TechnicianName"] == names[technician]
                checked.update(name for name in TECHNICIAN_MEASURES if sums[name])
        assert technician_rows(http, tenant_id, date(2019, 1, 1), date(2019, 12, 31)) == {}
    assert set(checked) == set(TECHNICIAN_MEASURES)
    # A job's credits add up to its revenue: the splits of each job sum to 100.
    whole = expected_technician_performance(sim, tenant_id, date(2023, 1, 1), date(2025, 12, 31), zone)
    assert sum(sums["Revenue"] for sums in whole.values()) > 0


def test_technician_performance_credits_splits_above_zero_else_the_assignees(
    served: tuple[Simulator, httpx.Client],
) -> None:
    """The generated splits are all above zero and every completed job has some: a zero split, a job
    whose splits are all zero, and a job without any split (its assignees share it) are made here."""
    sim, http = served
    truths = completed_job_truths(sim, 7101)
    splits: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for split in live_truth(sim, 7101, "payroll/jobs/splits"):
        splits[split["jobId"]].append(split)
    assignees: dict[int, set[int]] = defaultdict(set)
    for assignment in live_truth(sim, 7101, "dispatch/appointment-assignments"):
        if assignment["technicianId"] is not None:
            assignees[assignment["jobId"]].add(assignment["technicianId"])
    with_revenue = sorted(
        (
            t
            for t in truths.values()
            if t.revenue > 0 and len({s["technicianId"] for s in splits[t.job["id"]]}) == len(splits[t.job["id"]]) == 2
        ),
        key=lambda t: t.job["id"],
    )
    # one split of a two-technician job made zero; both splits of another made zero; the splits of
    # a third (the one with the most assignees) moved to a job that does not exist
    unassigned = max(with_revenue, key=lambda t: (len(assignees[t.job["id"]]), -t.job["id"]))
    partly, wholly, thirds = [t for t in with_revenue if t is not unassigned][:3]
    zeroed, kept = splits[partly.job["id"]]
    edits: dict[int, Any] = {zeroed["id"]: lambda s: s.update(split=0.0)}
    edits |= {s["id"]: lambda s: s.update(split=0.0) for s in splits[wholly.job["id"]]}
    edits |= {s["id"]: lambda s: s.update(jobId=1) for s in splits[unassigned.job["id"]]}
    # and a fourth split in thirds: its weighted revenue has more than 4 decimals, cut
    one_third, two_thirds = splits[thirds.job["id"]]
    edits |= {one_third["id"]: lambda s: s.update(split=33.3333), two_thirds["id"]: lambda s: s.update(split=66.6667)}
    days_of = {local_day(t.job["completedOn"], "UTC") for t in (partly, wholly, unassigned, thirds)}
    first, last = min(days_of), max(days_of)
    before = technician_rows(http, 7101, first, last)
    with edited(sim, 7101, "payroll/jobs/splits", edits):
        after = technician_rows(http, 7101, first, last)
        expected = expected_technician_performance(sim, 7101, first, last, "UTC")
    assert technician_rows(http, 7101, first, last) == before  # put back

    assert {tech: {n: row[n] for n in TECHNICIAN_MEASURES} for tech, row in after.items()} == expected
    # Worked out by hand: the zero split's technician loses the job and the other keeps their share;
    # both technicians of the all-zero job lose it; the split-less job goes from its split
    # technicians to its assignees, revenue / their number each.
    jobs, revenue = Counter[int](), defaultdict[int, Decimal](Decimal)

    def loses(truth: JobTruth, split: dict[str, Any]) -> None:
        jobs[split["technicianId"]] -= 1
        revenue[split["technicianId"]] -= cut4(truth.revenue * money(split["split"]) / 100)

    loses(partly, zeroed)
    for split, share in ((one_third, Decimal("33.3333")), (two_thirds, Decimal("66.6667"))):
        loses(thirds, split)
        jobs[split["technicianId"]] += 1
        revenue[split["technicianId"]] += cut4(thirds.revenue * share / 100)
    assert cut4(thirds.revenue * Decimal("33.3333") / 100) != thirds.revenue * Decimal("33.3333") / 100
    for split in splits[wholly.job["id"]]:
        loses(wholly, split)
    for split in splits[unassigned.job["id"]]:
        loses(unassigned, split)
    sharers = assignees[unassigned.job["id"]]
    for technician in sharers:
        jobs[technician] += 1
        revenue[technician] += cut4(unassigned.revenue / len(sharers))
    for technician in set(before) | set(after) | set(jobs):
        was, now = before.get(technician, {}), after.get(technician, {})
        assert now.get("CompletedJobs", 0) - was.get("CompletedJobs", 0) == jobs[technician], technician
        assert now.get("Revenue", 0) - was.get("Revenue", 0) == revenue[technician], technician
    assert len(sharers) >= 2 and any(jobs.values()) and kept["split"] > 0


def expected_technician_hours(
    sim: Simulator, tenant_id: int, first: date, last: date, zone: str
) -> dict[Any, dict[str, Any]]:
    """Daily Technician Hours from the ground truth: the minutes of each live Normal shift (to the
    nearest whole minute, halves up; 0 when it ends before it starts) on its start day, summed and
    over 60 cut to 4 places; and the live assignments to live appointments not Canceled, on the
    appointment's start day."""
    minutes: Counter[int] = Counter()
    for shift in live_truth(sim, tenant_id, "dispatch/technician-shifts"):
        if shift["shiftType"] != "Normal" or shift["technicianId"] is None or not shift["start"] or not shift["end"]:
            continue
        if first <= local_day(shift["start"], zone) <= last:
            length = max(epoch_ms(shift["end"]) - epoch_ms(shift["start"]), 0)
            minutes[shift["technicianId"]] += int((Decimal(length) / 60_000).quantize(Decimal(1), ROUND_HALF_UP))
    appointments = {
        appointment["id"]: appointment
        for appointment in live_truth(sim, tenant_id, "jpm/appointments")
        if appointment["status"] != "Canceled" and appointment["start"] and appointment["end"]
    }
    counts: Counter[int] = Counter()
    for assignment in live_truth(sim, tenant_id, "dispatch/appointment-assignments"):
        appointment = appointments.get(assignment["appointmentId"])
        if appointment is not None and assignment["technicianId"] is not None:
            if first <= local_day(appointment["start"], zone) <= last:
                counts[assignment["technicianId"]] += 1
    return {
        technician: {"ShiftHours": cut4(Decimal(minutes[technician]) / 60), "AppointmentCount": counts[technician]}
        for technician in set(minutes) | set(counts)
        if minutes[technician] or counts[technician]
    }


def hours_rows(http: httpx.Client, tenant_id: int, first: date, last: date) -> dict[Any, dict[str, Any]]:
    rows = report_rows(http, tenant_id, 1005, first, last)
    assert [row["TechnicianId"] for row in rows] == sorted(row["TechnicianId"] for row in rows)
    return {row.pop("TechnicianId"): row for row in rows}


@pytest.mark.parametrize(("tenant", "zone"), [(UTC_TENANT, "UTC"), (LA_TENANT, "America/Los_Angeles")])
def test_daily_technician_hours_equal_what_the_records_add_up_to(
    served: tuple[Simulator, httpx.Client], tenant: SimulatedTenant, zone: str
) -> None:
    sim, _ = served
    tenant_id = tenant.tenant_id
    shifts = [shift["start"] for shift in live_truth(sim, tenant_id, "dispatch/technician-shifts")]
    ranges = [(day, day) for day in busiest_days(shifts, zone)]
    ranges += [(date(2024, 2, 1), date(2024, 3, 31)), (date(2023, 1, 1), date(2025, 12, 31))]
    checked = Counter[str]()
    with client_of(sim, tenant) as http:
        for first, last in ranges:
            expected = expected_technician_hours(sim, tenant_id, first, last, zone)
            assert hours_rows(http, tenant_id, first, last) == expected, (first, last)
            checked.update(name for sums in expected.values() for name, value in sums.items() if value)
        assert hours_rows(http, tenant_id, date(2019, 1, 1), date(2019, 12, 31)) == {}
    assert set(checked) == {"ShiftHours", "AppointmentCount"}


def test_daily_technician_hours_round_each_shift_and_skip_what_does_not_count(
    served: tuple[Simulator, httpx.Client],
) -> None:
    """The generated shifts are all Normal and last whole hours: here one gets 30 more seconds (a
    half minute rounds up: 1 minute more), one becomes OnCall (left out), one ends before it starts
    (0 minutes), and an appointment is canceled (its assignments no longer count)."""
    sim, http = served
    shifts = sorted(
        (s for s in live_truth(sim, 7101, "dispatch/technician-shifts") if s["shiftType"] == "Normal"),
        key=lambda s: s["id"],
    )
    longer = shifts[0]
    technician = longer["technicianId"]
    theirs = [s for s in shifts if s["technicianId"] == technician]
    on_call, backwards = [s for s in theirs if s is not longer][:2]
    assert epoch_ms(longer["end"]) % 60_000 == epoch_ms(longer["start"]) % 60_000 == 0
    assigned = Counter(
        a["appointmentId"]
        for a in live_truth(sim, 7101, "dispatch/appointment-assignments")
        if a["technicianId"] == technician
    )
    canceled = next(
        ap
        for ap in live_truth(sim, 7101, "jpm/appointments")
        if ap["status"] != "Canceled" and assigned[ap["id"]] and ap["start"] and ap["end"]
    )
    overnight = next(
        ap
        for ap in live_truth(sim, 7101, "jpm/appointments")
        if ap["status"] != "Canceled"
        and assigned[ap["id"]]
        and ap["start"]
        and ap["end"]
        and ap["id"] != canceled["id"]
    )
    evening = date.fromisoformat(overnight["start"][:10])
    first, last = date(2023, 1, 1), date(2025, 12, 31)

    def shift_minutes(shift: dict[str, Any]) -> int:
        return (epoch_ms(shift["end"]) - epoch_ms(shift["start"])) // 60_000

    before = hours_rows(http, 7101, first, last)
    later = datetime.fromisoformat(longer["end"][:19]) + timedelta(seconds=30)
    edits = {
        longer["id"]: lambda s: s.update(end=later.isoformat() + ".0000000Z"),
        on_call["id"]: lambda s: s.update(shiftType="OnCall"),
        backwards["id"]: lambda s: s.update(start=s["end"], end=s["start"]),
    }
    with edited(sim, 7101, "dispatch/technician-shifts", edits):
        appointment_edits = {
            canceled["id"]: lambda ap: ap.update(status="Canceled"),
            overnight["id"]: lambda ap: ap.update(
                start=f"{evening}T23:30:00.0000000Z", end=f"{evening + timedelta(days=1)}T01:00:00.0000000Z"
            ),
        }
        with edited(sim, 7101, "jpm/appointments", appointment_edits):
            after = hours_rows(http, 7101, first, last)
            expected = expected_technician_hours(sim, 7101, first, last, "UTC")
            for day in (evening, evening + timedelta(days=1)):
                assert hours_rows(http, 7101, day, day) == expected_technician_hours(sim, 7101, day, day, "UTC")
            evening_count = hours_rows(http, 7101, evening, evening)[technician]["AppointmentCount"]
    assert hours_rows(http, 7101, first, last) == before  # put back
    assert after == expected
    assert evening_count >= assigned[overnight["id"]] >= 1
    # Worked out by hand for the technician: +1 minute, minus the two shifts' minutes; every
    # assignment of the canceled appointment gone (another technician's too).
    generated = sum(shift_minutes(s) for s in theirs)
    assert before[technician]["ShiftHours"] == Decimal(generated) / 60  # whole hours
    total = generated + 1 - shift_minutes(on_call) - shift_minutes(backwards)
    assert after[technician]["ShiftHours"] == cut4(Decimal(total) / 60) != round(Decimal(total) / 60, 4)
    assert after[technician]["AppointmentCount"] == before[technician]["AppointmentCount"] - assigned[canceled["id"]]
