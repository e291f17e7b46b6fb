"""Export feeds, paged lists and lookups of the simulator, compared with its ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from st_pipeline.simulator import Simulator, SimulatorConfig

TENANT = SimulatorConfig.demo_tenant(2001)
BATCH = 37
CUSTOMERS_EXPORT = "/crm/v2/tenant/2001/export/customers"
CUSTOMERS_LIST = "/crm/v2/tenant/2001/customers"
INVOICES_LIST = "/accounting/v2/tenant/2001/invoices"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        tenants=[TENANT],
        scale=0.2,
        export_batch_size=BATCH,
        datasets=(
            "crm/customers",
            "accounting/invoices",
            "sales/proposal-types",
            "jpm/job-notes",
            "jpm/job-types",
        ),
    )
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture()
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url) as client:
        token = client.post(
            sim.auth_url,
            data={
                "grant_type": "client_credentials",
                "client_id": TENANT.client_id,
                "client_secret": TENANT.client_secret,
            },
        ).json()["access_token"]
        client.headers["ST-App-Key"] = sim.config.app_key
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def follow_export(http: httpx.Client, path: str, start: str | None = None) -> tuple[list[dict], list[dict]]:
    """Every record of a feed from ``start``, and the envelopes of every response."""
    records: list[dict] = []
    envelopes: list[dict] = []
    params = {} if start is None else {"from": start}
    while True:
        response = http.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"hasMore", "continueFrom", "data"}
        envelopes.append(body)
        records.extend(body["data"])
        params = {"from": body["continueFrom"]}
        if not body["hasMore"]:
            return records, envelopes


def all_pages(http: httpx.Client, path: str, **params: Any) -> list[dict]:
    records: list[dict] = []
    page = 1
    while True:
        body = http.get(path, params={**params, "page": page}).json()
        records.extend(body["data"])
        if not body["hasMore"]:
            return records
        page += 1


def test_export_followed_to_the_end_equals_ground_truth(http: httpx.Client, sim: Simulator) -> None:
    records, envelopes = follow_export(http, CUSTOMERS_EXPORT)
    truth = sim.ground_truth(2001, "crm/customers")
    assert len(truth) == 200
    assert sorted(records, key=lambda r: r["id"]) == truth
    assert len(envelopes) == -(-200 // BATCH)
    assert all(len(e["data"]) == BATCH and e["hasMore"] for e in envelopes[:-1])
    keys = [(r["modifiedOn"], r["id"]) for r in records]
    assert keys == sorted(keys), "a feed is ordered by (modifiedOn, id)"
    assert any(not r["active"] for r in records), "export feeds include inactive records"


def test_caught_up_feed_returns_nothing_and_keeps_its_position(http: httpx.Client) -> None:
    _, envelopes = follow_export(http, CUSTOMERS_EXPORT)
    last = envelopes[-1]["continueFrom"]
    body = http.get(CUSTOMERS_EXPORT, params={"from": last}).json()
    assert body == {"hasMore": False, "continueFrom": last, "data": []}


def test_export_from_a_date_returns_records_modified_since(http: httpx.Client, sim: Simulator) -> None:
    truth = sim.ground_truth(2001, "crm/customers")
    day = sorted(r["modifiedOn"] for r in truth)[len(truth) // 2][:10]
    records, _ = follow_export(http, CUSTOMERS_EXPORT, start=day)
    assert {r["id"] for r in records} == {r["id"] for r in truth if r["modifiedOn"] >= day}
    assert 0 < len(records) < len(truth)


def test_export_from_an_exact_timestamp_is_inclusive(http: httpx.Client, sim: Simulator) -> None:
    truth = sim.ground_truth(2001, "crm/customers")
    stamp = sorted(r["modifiedOn"] for r in truth)[-5]
    records, _ = follow_export(http, CUSTOMERS_EXPORT, start=stamp)
    assert {r["id"] for r in records} == {r["id"] for r in truth if r["modifiedOn"] >= stamp}


def test_invalid_from_is_400(http: httpx.Client) -> None:
    response = http.get(CUSTOMERS_EXPORT, params={"from": "garbage"})
    assert response.status_code == 400
    body = response.json()
    assert "from" in body["title"] and "from" in body["errors"]


def test_list_with_active_any_equals_ground_truth(http: httpx.Client, sim: Simulator) -> None:
    records = all_pages(http, CUSTOMERS_LIST, active="Any", pageSize=37)
    assert records == sim.ground_truth(2001, "crm/customers")


def test_list_returns_active_records_by_default(http: httpx.Client, sim: Simulator) -> None:
    truth = sim.ground_truth(2001, "crm/customers")
    assert all_pages(http, CUSTOMERS_LIST, pageSize=50) == [r for r in truth if r["active"]]
    inactive = all_pages(http, CUSTOMERS_LIST, active="false", pageSize=50)
    assert inactive == [r for r in truth if not r["active"]] and inactive


def test_list_envelope_and_total_count(http: httpx.Client, sim: Simulator) -> None:
    active = [r for r in sim.ground_truth(2001, "crm/customers") if r["active"]]
    params: dict[str, str | int] = {"page": 2, "pageSize": 10, "includeTotal": "true"}
    body = http.get(CUSTOMERS_LIST, params=params).json()
    assert list(body) == ["page", "pageSize", "hasMore", "totalCount", "data"]
    assert (body["page"], body["pageSize"], body["hasMore"]) == (2, 10, True)
    assert body["totalCount"] == len(active)
    assert body["data"] == active[10:20]
    assert http.get(CUSTOMERS_LIST).json()["totalCount"] is None
    assert len(http.get(CUSTOMERS_LIST).json()["data"]) == 50  # default page size
    beyond = http.get(CUSTOMERS_LIST, params={"page": 99}).json()
    assert beyond["data"] == [] and beyond["hasMore"] is False


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageSize": "5001"}, "pageSize"),
        ({"pageSize": "0"}, "pageSize"),
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"active": "maybe"}, "active"),
        ({"modifiedOnOrAfter": "yesterday"}, "modifiedOnOrAfter"),
        ({"ids": ",".join(str(n) for n in range(51))}, "ids"),
    ],
)
def test_bad_list_parameters_are_400(http: httpx.Client, params: dict, field: str) -> None:
    response = http.get(CUSTOMERS_LIST, params=params)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_list_filters(http: httpx.Client, sim: Simulator) -> None:
    truth = sim.ground_truth(2001, "crm/customers")
    stamps = sorted(r["modifiedOn"] for r in truth)
    low, high = stamps[40], stamps[120]
    records = all_pages(http, CUSTOMERS_LIST, active="Any", modifiedOnOrAfter=low, modifiedBefore=high, pageSize=20)
    assert records == [r for r in truth if low <= r["modifiedOn"] < high]
    ids = [truth[3]["id"], truth[7]["id"], truth[11]["id"]]
    body = http.get(CUSTOMERS_LIST, params={"ids": ",".join(map(str, ids)), "active": "Any"}).json()
    assert [r["id"] for r in body["data"]] == ids
    newest_first = all_pages(http, CUSTOMERS_LIST, active="Any", sort="-ModifiedOn", pageSize=100)
    assert [r["modifiedOn"] for r in newest_first] == sorted(stamps, reverse=True)


def test_accounting_lists_use_active_state(http: httpx.Client, sim: Simulator) -> None:
    truth = sim.ground_truth(2001, "accounting/invoices")
    assert all_pages(http, INVOICES_LIST, activeState="All", pageSize=100) == truth
    assert all_pages(http, INVOICES_LIST, pageSize=100) == [r for r in truth if r["active"]]
    inactive = all_pages(http, INVOICES_LIST, activeState="InactiveOnly", pageSize=100)
    assert inactive == [r for r in truth if not r["active"]]


def test_other_export_feeds_serve_their_dataset(http: httpx.Client, sim: Simulator) -> None:
    records, _ = follow_export(http, "/jpm/v2/tenant/2001/export/job-notes")
    assert sorted(records, key=lambda r: r["id"]) == sim.ground_truth(2001, "jpm/job-notes")


def test_list_only_dataset_is_served_by_its_list(http: httpx.Client, sim: Simulator) -> None:
    truth = sim.ground_truth(2001, "jpm/job-types")
    assert len(truth) == 4  # 20 at scale 1
    assert all_pages(http, "/jpm/v2/tenant/2001/job-types", active="Any") == truth


def test_lookup_returns_an_array(http: httpx.Client, sim: Simulator) -> None:
    truth = sim.ground_truth(2001, "sales/proposal-types")
    response = http.get("/sales/v2/tenant/2001/proposal-types", params={"active": "Any"})
    assert response.status_code == 200
    assert response.json() == truth


def test_changes_appear_at_the_end_of_the_feed(http: httpx.Client, sim: Simulator) -> None:
    _, envelopes = follow_export(http, CUSTOMERS_EXPORT)
    position = envelopes[-1]["continueFrom"]
    changes = sim.apply_changes(2001, "crm/customers", created=2, updated=3, deactivated=1)
    assert [len(changes[k]) for k in ("created", "updated", "deactivated")] == [2, 3, 1]
    records, _ = follow_export(http, CUSTOMERS_EXPORT, start=position)
    assert sorted(r["id"] for r in records) == sorted(sum(changes.values(), []))
    truth = {r["id"]: r for r in sim.ground_truth(2001, "crm/customers")}
    assert len(truth) == 202
    assert all(truth[r["id"]] == r for r in records)
    assert truth[changes["deactivated"][0]]["active"] is False
    oldest_change = min(r["modifiedOn"] for r in records)
    assert all(r["modifiedOn"] < oldest_change for i, r in truth.items() if i not in {r["id"] for r in records})


def test_injected_faults_answer_before_data(http: httpx.Client, sim: Simulator) -> None:
    sim.inject_faults(429, count=2, retry_after_s=3)
    sim.inject_faults(503)
    for status in (429, 429, 503):
        response = http.get(CUSTOMERS_LIST)
        assert response.status_code == status
        assert response.json()["status"] == status
    assert http.get(CUSTOMERS_LIST).status_code == 200
    sim.inject_faults(429)
    response = http.get(CUSTOMERS_LIST)
    assert response.headers["Retry-After"] == "1"
    assert "1 seconds" in response.json()["title"]


def test_control_endpoints_expose_ground_truth(http: httpx.Client, sim: Simulator) -> None:
    anonymous = httpx.Client(base_url=sim.url)
    with anonymous:
        counts = anonymous.get("/_simulator/tenants/2001/counts").json()
        assert counts == sim.record_counts(2001)
        assert set(counts) == set(sim.datasets)
        records = anonymous.get("/_simulator/tenants/2001/datasets/accounting.invoices").json()
        assert records == sim.ground_truth(2001, "accounting/invoices")
        assert anonymous.get("/_simulator/tenants/2001/datasets/jpm.jobs").status_code == 404
        assert anonymous.get("/_simulator/tenants/9/counts").status_code == 404
