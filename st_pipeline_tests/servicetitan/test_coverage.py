"""Every export feed and tenant-level list endpoint of the official specs is covered or excluded."""

from __future__ import annotations

import json

from st_pipeline.servicetitan.catalogue import EXCLUDED_DATASETS, load_catalogue
from st_pipeline_tests.servicetitan.specs import require_spec_dir


def _spec_get_operations() -> list[tuple[str, str, list[str]]]:
    """(server path, path, path parameters) of every GET in the 24 specs."""
    found = []
    for spec_file in sorted(require_spec_dir().glob("*.json")):
        spec = json.loads(spec_file.read_text())
        base = "/" + spec["servers"][0]["url"].split("://", 1)[1].split("/", 1)[1]
        for path, item in spec["paths"].items():
            if "get" in item and "/tenant/{tenant}" in path:
                params = [p["name"] for p in item["get"].get("parameters", []) if p["in"] == "path"]
                found.append((base, path, params))
    return found


def test_every_tenant_level_endpoint_is_extracted_or_excluded_with_a_reason() -> None:
    catalogue = load_catalogue()
    by_path = {endpoint.path: endpoint for endpoint in catalogue.endpoints}
    per_parent = {entry["path"] for entry in catalogue.per_parent_endpoints}
    operations = _spec_get_operations()
    assert len(operations) > 300
    tenant_level = 0
    for base, path, params in operations:
        full = base + path
        if params != ["tenant"]:
            assert full in per_parent, f"{full} is neither catalogued nor listed as per-parent"
            continue
        tenant_level += 1
        endpoint = by_path.get(full)
        assert endpoint is not None, f"{full} missing from the catalogue"
        dataset = catalogue.dataset(endpoint.dataset_key)
        extracted_by = dataset.extraction_endpoint
        # Either this endpoint is read, or its dataset is read another way (export preferred),
        # or the dataset is excluded with a written reason.
        assert extracted_by is endpoint or extracted_by.kind == "export" or dataset.excluded_reason, full
        if dataset.excluded_reason:
            assert len(dataset.excluded_reason) > 20
    assert tenant_level == 195  # 53 export feeds, 125 paged lists, 17 lookups


def test_at_least_130_distinct_datasets_are_extracted() -> None:
    catalogue = load_catalogue()
    extracted = catalogue.extracted_datasets()
    assert len(extracted) >= 130
    assert len({d.key for d in extracted}) == len(extracted)  # an export feed and its list twin count once
    exports = [d for d in extracted if d.export is not None]
    assert all(d.extraction_endpoint is d.export for d in exports)
    assert set(EXCLUDED_DATASETS) <= set(catalogue.datasets)


def test_endpoint_facts() -> None:
    catalogue = load_catalogue()
    assert catalogue.dataset("accounting/journal-entries").extraction_endpoint.page_size_max == 500
    assert catalogue.dataset("inventory/return-types").extraction_endpoint.fixed_params == {"activeOnly": "false"}
    assert catalogue.dataset("dispatch/teams").extraction_endpoint.inactive_filter == ("includeInactive", "true")
    assert catalogue.dataset("crm/customers").extraction_endpoint.cursor_kind == "export token"
    assert catalogue.dataset("dispatch/zones").extraction_endpoint.cursor_kind == "modifiedOn watermark"
    assert catalogue.dataset("jpm/project-types").extraction_endpoint.cursor_kind == "full refresh"
    assert catalogue.key_field(catalogue.dataset("dispatch/business-hours")) is None
    assert len(catalogue.per_parent_endpoints) > 100
