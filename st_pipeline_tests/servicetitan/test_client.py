"""Export feeds followed to the end and paged lists read page by page, over real HTTP."""

from __future__ import annotations

import math

import pytest
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import MissingScopeError
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import Simulator
from st_pipeline_tests.conftest import TENANT_A


def _client(sim: Simulator, tenant_id: int = TENANT_A.tenant_id) -> ServiceTitanClient:
    settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
    credentials = TenantCredentials(tenant_id, TENANT_A.client_id, SecretStr(TENANT_A.client_secret))
    return ServiceTitanClient(settings, credentials)


def test_test_data_spans_several_export_batches(simulator: Simulator) -> None:
    assert len(simulator.ground_truth(TENANT_A.tenant_id, "crm/customers")) > 2 * simulator.config.export_batch_size


@pytest.mark.parametrize("dataset_key", CORE_DATASETS)
def test_export_feed_is_followed_to_its_end(simulator: Simulator, dataset_key: str) -> None:
    dataset = load_catalogue().dataset(dataset_key)
    assert dataset.export is not None
    truth = simulator.ground_truth(TENANT_A.tenant_id, dataset_key)
    with _client(simulator) as client:
        pages = list(client.iter_export(dataset.export))
    received = [record for page in pages for record in page.records]
    assert sorted(received, key=lambda r: r["id"]) == truth
    assert not pages[-1].has_more and all(page.has_more for page in pages[:-1])
    assert len(pages) == max(1, math.ceil(len(truth) / simulator.config.export_batch_size))
    assert all(page.continue_from for page in pages)


def test_export_resumes_from_a_continuation_token(simulator: Simulator) -> None:
    dataset = load_catalogue().dataset("crm/customers")
    assert dataset.export is not None
    with _client(simulator) as client:
        pages = client.iter_export(dataset.export)
        first = next(pages)
        rest = [r for page in client.iter_export(dataset.export, from_token=first.continue_from) for r in page.records]
    ids = [r["id"] for r in first.records] + [r["id"] for r in rest]
    assert sorted(ids) == [r["id"] for r in simulator.ground_truth(TENANT_A.tenant_id, "crm/customers")]


@pytest.mark.parametrize("dataset_key", ["crm/customers", "accounting/invoices", "jpm/jobs"])
def test_paged_list_reads_every_page_until_has_more_is_false(simulator: Simulator, dataset_key: str) -> None:
    dataset = load_catalogue().dataset(dataset_key)
    assert dataset.list is not None
    truth = simulator.ground_truth(TENANT_A.tenant_id, dataset_key)
    page_size = 17
    with _client(simulator) as client:
        pages = list(client.iter_list(dataset.list, page_size=page_size, include_total=True))
    assert [page.number for page in pages] == list(range(1, len(pages) + 1))
    assert len(pages) == math.ceil(len(truth) / page_size)
    assert all(page.has_more for page in pages[:-1]) and not pages[-1].has_more
    assert pages[0].total_count == len(truth)
    received = sorted((r for page in pages for r in page.records), key=lambda r: r["id"])
    # Inactive rows come too (active=Any / activeState=All), projected to the list schema.
    assert [r["id"] for r in received] == [r["id"] for r in truth]
    for got, expected in zip(received, truth, strict=True):
        assert all(expected[key] == value for key, value in got.items() if key in expected)


def test_list_without_inactive_filter_misses_inactive_rows(simulator: Simulator) -> None:
    dataset = load_catalogue().dataset("crm/customers")
    assert dataset.list is not None
    truth = simulator.ground_truth(TENANT_A.tenant_id, "crm/customers")
    inactive = [r for r in truth if not r["active"]]
    assert inactive, "test data should contain inactive customers"
    with _client(simulator) as client:
        received = [r for p in client.iter_list(dataset.list, include_inactive=False) for r in p.records]
    assert len(received) == len(truth) - len(inactive)


def test_another_tenants_path_is_refused_with_a_clear_error(simulator: Simulator) -> None:
    dataset = load_catalogue().dataset("crm/customers")
    assert dataset.list is not None
    # Tenant A's client credentials, but a client aimed at tenant 999999 (a wrong tenant id).
    with _client(simulator, tenant_id=999999) as client:
        with pytest.raises(MissingScopeError) as raised:
            next(client.iter_list(dataset.list))
    assert "tenant 999999" in str(raised.value)
    assert dataset.list.path in str(raised.value)
