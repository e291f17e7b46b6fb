"""The committed catalogue is exactly what the generator makes of the official specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from st_pipeline.servicetitan import spec_import
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline_tests.servicetitan.specs import require_spec_dir, spec_dir


def test_committed_catalogue_matches_the_specs() -> None:
    regenerated = spec_import.render(spec_import.build_catalogue(require_spec_dir()))
    assert regenerated == spec_import.CATALOGUE_PATH.read_text(), "run `make catalogue` and commit the result"


def test_missing_specs_fail_in_ci_and_skip_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ST_PIPELINE_SPEC_DIR", raising=False)
    assert spec_dir() == Path(__file__).resolve().parents[3] / "shared" / "servicetitan-specs"
    nowhere = tmp_path / "no-specs"
    monkeypatch.setenv("ST_PIPELINE_SPEC_DIR", str(nowhere))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not found at .*no-specs.*CI must run the spec tests"):
        require_spec_dir()
    for unset in ("", "false"):
        monkeypatch.setenv("CI", unset)
        with pytest.raises(pytest.skip.Exception, match="not found at .*no-specs"):
            require_spec_dir()
    nowhere.mkdir()
    monkeypatch.setenv("CI", "true")
    assert require_spec_dir() == nowhere


def test_catalogue_holds_facts_not_prose() -> None:
    document = json.loads(spec_import.CATALOGUE_PATH.read_text())
    endpoints = document["endpoints"]
    assert {e["kind"] for e in endpoints} == {"export", "list", "lookup"}
    assert sum(e["kind"] == "export" for e in endpoints) == 53
    assert sum(e["kind"] == "list" for e in endpoints) == 125

    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            found = set(node)
            for name, value in node.items():
                # Below "properties" the keys are field names, which may be called "description".
                found |= set().union(*(keys(v) for v in value.values())) if name == "properties" else keys(value)
            return found
        if isinstance(node, list):
            return set().union(set(), *(keys(v) for v in node))
        return set()

    schema_keywords = keys(document["modules"])
    assert not schema_keywords & {"description", "example", "examples", "summary", "x-enumNames"}


def test_core_datasets_read_their_export_feeds() -> None:
    catalogue = load_catalogue()
    for key in CORE_DATASETS:
        dataset = catalogue.dataset(key)
        assert dataset.extraction_endpoint.kind == "export", key
        assert dataset.list is not None, key
    invoices = catalogue.dataset("accounting/invoices").list
    assert invoices is not None
    assert invoices.inactive_filter == ("activeState", "All")
    customers = catalogue.dataset("crm/customers")
    assert customers.list is not None and customers.export is not None
    assert customers.list.inactive_filter == ("active", "Any")
    assert customers.export.path == "/crm/v2/tenant/{tenant}/export/customers"
