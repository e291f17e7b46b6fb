"""The generated data: deterministic, consistent references, ServiceTitan's value formats."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from st_pipeline.servicetitan.catalogue import CORE_DATASETS, Endpoint, load_catalogue
from st_pipeline.simulator import Simulator, SimulatorConfig
from st_pipeline.simulator.data import BASE_VOLUMES, MIN_VOLUMES

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z")
MONEY = re.compile(r"-?\d+\.\d{2}")
TENANT = 3001


def config(**overrides: Any) -> SimulatorConfig:
    settings: dict[str, Any] = {"tenants": [SimulatorConfig.demo_tenant(TENANT)], "scale": 0.1}
    settings.update(overrides)
    return SimulatorConfig(**settings)


@pytest.fixture(scope="module")
def core() -> dict[str, list[dict]]:
    """The core datasets of one tenant (generated without starting a server)."""
    simulator = Simulator(config(datasets=CORE_DATASETS))
    return {key: simulator.ground_truth(TENANT, key) for key in CORE_DATASETS}


def by_id(records: list[dict]) -> dict[int, dict]:
    return {record["id"]: record for record in records}


def test_same_config_gives_identical_data() -> None:
    first = Simulator(config(datasets=("jpm/jobs", "pricebook/services")))
    second = Simulator(config(datasets=("jpm/jobs", "pricebook/services")))
    for key in ("jpm/jobs", "pricebook/services"):
        assert first.ground_truth(TENANT, key) == second.ground_truth(TENANT, key)


def test_seed_and_tenant_change_the_data() -> None:
    base = Simulator(config(datasets=("crm/customers",))).ground_truth(TENANT, "crm/customers")
    reseeded = Simulator(config(seed=2, datasets=("crm/customers",)))
    assert reseeded.ground_truth(TENANT, "crm/customers") != base
    other = Simulator(config(tenants=[SimulatorConfig.demo_tenant(3002)], datasets=("crm/customers",)))
    assert other.ground_truth(3002, "crm/customers") != base


def test_a_dataset_does_not_depend_on_which_others_are_served(core: dict[str, list[dict]]) -> None:
    alone = Simulator(config(datasets=("accounting/payments",)))
    assert alone.ground_truth(TENANT, "accounting/payments") == core["accounting/payments"]
    assert set(alone.record_counts(TENANT)) == {"accounting/payments"}


def test_ground_truth_is_a_deep_copy() -> None:
    simulator = Simulator(config(datasets=("crm/customers",)))
    records = simulator.ground_truth(TENANT, "crm/customers")
    records[0]["address"]["city"] = "Changed"
    records.pop()
    again = simulator.ground_truth(TENANT, "crm/customers")
    assert again[0]["address"]["city"] != "Changed" and len(again) == len(records) + 1


def test_volumes_follow_the_scale() -> None:
    counts = Simulator(config(scale=0.5)).record_counts(TENANT)
    for key, base in BASE_VOLUMES.items():
        assert counts[key] == max(MIN_VOLUMES.get(key, 1), round(base * 0.5))
    assert counts["pricebook/materials"] == 10
    tiny = Simulator(config(scale=0.0001, datasets=("crm/customers", "jpm/job-types", "pricebook/materials")))
    assert tiny.record_counts(TENANT) == {"crm/customers": 3, "jpm/job-types": 4, "pricebook/materials": 1}


def test_ids_are_unique_and_sorted(core: dict[str, list[dict]]) -> None:
    for key, records in core.items():
        ids = [record["id"] for record in records]
        assert ids == sorted(set(ids)), key


def test_references_point_at_existing_records(core: dict[str, list[dict]]) -> None:
    customers, locations = by_id(core["crm/customers"]), by_id(core["crm/locations"])
    jobs, invoices = by_id(core["jpm/jobs"]), by_id(core["accounting/invoices"])
    units, technicians = by_id(core["settings/business-units"]), by_id(core["settings/technicians"])
    for location in locations.values():
        assert location["customerId"] in customers
    for job in jobs.values():
        assert job["customerId"] in customers
        assert job["customerId"] == locations[job["locationId"]]["customerId"]
        assert job["businessUnitId"] in units
    for appointment in core["jpm/appointments"]:
        assert appointment["customerId"] == jobs[appointment["jobId"]]["customerId"]
    for technician in technicians.values():
        assert technician["businessUnitId"] in units
    for invoice in invoices.values():
        assert invoice["customer"]["id"] in customers
        assert invoice["location"]["id"] in locations
        assert len(invoice["items"]) <= 5
        if invoice["job"] is None:  # a counter sale
            continue
        job = jobs[invoice["job"]["id"]]
        assert invoice["customer"]["id"] == job["customerId"]
        assert invoice["customer"]["name"] == customers[job["customerId"]]["name"]
        assert invoice["location"]["id"] == job["locationId"]
        assert invoice["businessUnit"]["id"] == job["businessUnitId"]
    applied_payments = 0
    for payment in core["accounting/payments"]:
        assert payment["customer"]["id"] in customers
        if not payment["appliedTo"]:  # not (yet) applied to an invoice
            continue
        applied_payments += 1
        applied = {entry["appliedTo"] for entry in payment["appliedTo"]}
        assert len(applied) == 1
        invoice = invoices[applied.pop()]
        assert payment["customer"]["id"] == invoice["customer"]["id"]
    assert applied_payments > len(core["accounting/payments"]) / 2


def test_accounting_money_is_decimal_strings(core: dict[str, list[dict]]) -> None:
    def amounts(record: dict, names: tuple[str, ...]) -> list[Any]:
        return [record[name] for name in names if record.get(name) is not None]

    seen = 0
    for invoice in core["accounting/invoices"]:
        values = amounts(invoice, ("subTotal", "salesTax", "total", "balance", "discountTotal"))
        for item in invoice["items"]:
            values += amounts(item, ("quantity", "cost", "totalCost", "price", "total", "memberPrice"))
        for value in values:
            assert isinstance(value, str) and MONEY.fullmatch(value), value
        seen += len(values)
    for payment in core["accounting/payments"]:
        for value in amounts(payment, ("total", "unappliedAmount")):
            assert isinstance(value, str) and MONEY.fullmatch(value), value
    assert seen > 1000
    # Elsewhere money is a JSON number.
    assert any(isinstance(job["total"], float) for job in core["jpm/jobs"])


def test_timestamps_have_seven_fractional_digits(core: dict[str, list[dict]]) -> None:
    for key, records in core.items():
        for record in records:
            assert TIMESTAMP.fullmatch(record["createdOn"]), key
            assert TIMESTAMP.fullmatch(record["modifiedOn"]), key
            assert record["createdOn"] <= record["modifiedOn"], key
    nested = [item["createdOn"] for i in core["accounting/invoices"] for item in i["items"]]
    assert all(TIMESTAMP.fullmatch(stamp) for stamp in nested if stamp is not None)


def test_some_records_share_a_modified_on(core: dict[str, list[dict]]) -> None:
    stamps = Counter(job["modifiedOn"] for job in core["jpm/jobs"] + core["jpm/appointments"])
    assert any(count > 1 for count in stamps.values())


def test_about_five_percent_are_inactive(core: dict[str, list[dict]]) -> None:
    records = [r for key in ("crm/customers", "jpm/jobs", "accounting/invoices") for r in core[key]]
    share = sum(not record["active"] for record in records) / len(records)
    assert 0.02 < share < 0.09


def test_nullable_fields_are_sometimes_null(core: dict[str, list[dict]]) -> None:
    nulls = Counter(key for job in core["jpm/jobs"] for key, value in job.items() if value is None)
    assert 0.1 < nulls["projectId"] / len(core["jpm/jobs"]) < 0.3
    assert nulls["customerId"] == 0


def test_unknown_datasets_are_rejected() -> None:
    with pytest.raises(ValueError, match="no/such"):
        Simulator(config(datasets=("no/such",)))


@pytest.fixture(scope="module")
def everything() -> Iterator[tuple[Simulator, httpx.Client]]:
    """A running simulator serving every catalogue dataset, and an authorized client."""
    tenant = SimulatorConfig.demo_tenant(3003)
    with Simulator(SimulatorConfig(tenants=[tenant], scale=0.05)) as simulator:
        with httpx.Client(base_url=simulator.url) as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": tenant.client_id,
                "client_secret": tenant.client_secret,
            }
            token = http.post(simulator.auth_url, data=form).json()["access_token"]
            http.headers["ST-App-Key"] = simulator.config.app_key
            http.headers["Authorization"] = token
            yield simulator, http


def read_everything(http: httpx.Client, endpoint: Endpoint) -> list[dict]:
    """All records of an endpoint, inactive ones included, in one request."""
    params = dict([endpoint.inactive_filter] if endpoint.inactive_filter else [])
    if endpoint.kind == "list":
        params["pageSize"] = str(int(endpoint.page_size_max or 5000))
    response = http.get(endpoint.url_path(3003), params=params)
    assert response.status_code == 200, (endpoint.path, response.text)
    body = response.json()
    if endpoint.kind == "lookup":
        return body
    assert body["hasMore"] is False
    return body["data"]


def test_every_catalogue_dataset_is_served_by_its_extraction_endpoint(
    everything: tuple[Simulator, httpx.Client],
) -> None:
    simulator, http = everything
    catalogue = load_catalogue()
    assert set(simulator.unsupported_datasets) == {
        "equipmentsystems/installed-equipment/attachments",
        "findings/assets",
        "pricebook/images",
        "marketing/campaign-cost-summary",  # the date-range reports: figures, not records
        "marketingads/performance",
        "marketingads/attributed-leads",
    }
    served = set(simulator.datasets)
    assert served | set(simulator.unsupported_datasets) == set(catalogue.datasets)
    counts = simulator.record_counts(3003)
    for key in simulator.datasets:
        endpoint = catalogue.dataset(key).extraction_endpoint
        records = read_everything(http, endpoint)
        truth = simulator.ground_truth(3003, key)
        assert len(records) == len(truth) == counts[key] >= 1, key
        canonical = sorted(json.dumps(r, sort_keys=True) for r in records)
        assert canonical == sorted(json.dumps(r, sort_keys=True) for r in truth), key
        assert endpoint.record_schema is not None
        schema = catalogue.schemas(endpoint.module)[endpoint.record_schema]
        assert set(truth[0]) == set(schema["properties"]), key


def test_other_endpoints_serve_the_same_records_in_their_own_shape(
    everything: tuple[Simulator, httpx.Client],
) -> None:
    simulator, http = everything
    catalogue = load_catalogue()
    checked = 0
    for endpoint in catalogue.endpoints:
        dataset = catalogue.datasets[endpoint.dataset_key]
        served = endpoint.dataset_key in simulator.datasets
        if not served or endpoint is dataset.extraction_endpoint:
            continue
        assert endpoint.record_schema is not None
        properties = catalogue.schemas(endpoint.module)[endpoint.record_schema]["properties"]
        truth = simulator.ground_truth(3003, endpoint.dataset_key)
        records = read_everything(http, endpoint)  # without an active filter, lists return all
        assert len(records) == len(truth), endpoint.path
        assert all(set(record) == set(properties) for record in records), endpoint.path
        if "id" in properties:
            assert sorted(r["id"] for r in records) == [r["id"] for r in truth], endpoint.path
        checked += 1
    assert checked >= 40


def test_package_does_not_depend_on_dagster() -> None:
    code = (
        "import sys, st_pipeline.simulator; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'dagster' or "
        "(m.startswith('st_pipeline.') and m.split('.')[1] not in ('simulator', 'servicetitan'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
