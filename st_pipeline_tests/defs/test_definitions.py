"""The code location loads and shows one tenant-partitioned raw asset per extracted dataset, each with
its table's columns and its record's fields, under a name that fits the asset graph."""

from __future__ import annotations

import dagster as dg
import pytest

from st_pipeline.definitions import build_definitions, defs
from st_pipeline.defs.marketing_reports import MARKETING_REPORT_KEYS
from st_pipeline.defs.models import TENANT_MODELS_KEY
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME
from st_pipeline.defs.raw_assets import MAX_NAME_LENGTH, SHORT_NAMES, TENANT_SYNC_KEY, raw_asset_key
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import SettingsError, load_settings
from st_pipeline.warehouse.tables import raw_table_name


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_one_partitioned_raw_asset_per_extracted_dataset() -> None:
    graph = defs.resolve_asset_graph()
    raw_keys = {key for key in graph.get_all_asset_keys() if key.path[:2] == ["servicetitan", "raw"]}
    extracted = load_catalogue().extracted_datasets()
    assert raw_keys == {raw_asset_key(d) for d in extracted}
    assert len(raw_keys) == len(extracted) >= 130
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        if isinstance(partitions, dg.MultiPartitionsDefinition):  # the reports and marketing reports: by tenant and day
            dimensions = {d.name: d.partitions_def for d in partitions.partitions_defs}
            assert (key.path[:2] == ["servicetitan", "reports"] or key in MARKETING_REPORT_KEYS) and set(
                dimensions
            ) == {
                "tenant",
                "day",
            }
            partitions = dimensions["tenant"]
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        assert partitions.name == TENANT_PARTITIONS_NAME
    assert graph.get(dg.AssetKey(["servicetitan", "raw", "crm", "customers"])).group_name == "servicetitan_crm"
    assert (
        graph.get(dg.AssetKey(["servicetitan", "raw", "payroll", "gross_pay_items"])).group_name
        == "servicetitan_payroll"
    )


def _columns(key: dg.AssetKey) -> dict[str, dg.TableColumn]:
    schema = defs.resolve_asset_graph().get(key).metadata["dagster/column_schema"]
    return {column.name: column for column in schema.columns}


def test_raw_assets_show_their_table_columns_then_the_fields_of_the_record_in_payload() -> None:
    catalogue = load_catalogue()
    customers = _columns(raw_asset_key(catalogue.dataset("crm/customers")))
    assert list(customers)[:8] == [
        "tenant_id",
        "id",
        "modified_on",
        "active",
        "payload",
        "extracted_at",
        "run_id",
        "deleted_at",
    ]
    for name in ("tenant_id", "id"):
        assert customers[name].constraints.nullable is False
        assert customers[name].constraints.other == ["primary key (tenant_id, id)"]
    assert customers["deleted_at"].constraints.nullable and customers["modified_on"].type == "timestamp (UTC)"
    assert {
        name: customers[name].type
        for name in (
            "payload.id",
            "payload.name",
            "payload.balance",
            "payload.modifiedOn",
            "payload.doNotMail",
            "payload.address",
            "payload.customFields",
        )
    } == {
        "payload.id": "integer",
        "payload.name": "string",
        "payload.balance": "number",
        "payload.modifiedOn": "date-time",
        "payload.doNotMail": "boolean",
        "payload.address": "object",
        "payload.customFields": "array",
    }
    assert all(column.description for column in customers.values())
    assert all(
        "payload" in (column.description or "") for name, column in customers.items() if name.startswith("payload.")
    )
    # Records without an id are keyed by their content.
    business_hours = _columns(raw_asset_key(catalogue.dataset("dispatch/business-hours")))
    assert business_hours["id"].description is not None and "hash" in business_hours["id"].description
    for dataset in catalogue.extracted_datasets():  # every dataset with a record schema lists its fields
        if catalogue.record_schema(dataset):
            assert any(name.startswith("payload.") for name in _columns(raw_asset_key(dataset))), dataset.key


def test_long_resource_names_get_a_short_asset_name_and_keep_their_table() -> None:
    catalogue = load_catalogue()
    segments = catalogue.dataset("jpm/work-breakdown-structure/segments")
    key = raw_asset_key(segments)
    assert key == dg.AssetKey(["servicetitan", "raw", "jpm", "work_breakdown_segments"])
    assert defs.resolve_asset_graph().get(key).metadata["dagster/table_name"] == raw_table_name(segments)
    assert raw_table_name(segments) == "raw_jpm_work_breakdown_structure_segments"
    # A short name only where the resource's own name does not fit, and only for an extracted dataset.
    extracted = {d.key: d for d in catalogue.extracted_datasets()}
    assert all(len(extracted[k].resource_slug) > MAX_NAME_LENGTH >= len(name) for k, name in SHORT_NAMES.items())


@pytest.mark.parametrize(
    ("variable", "cron"), [("ST_PIPELINE_SYNC_CRON", "every hour"), ("ST_PIPELINE_MAINTENANCE_CRON", "61 * * * *")]
)
def test_a_cron_dagster_refuses_names_its_variable(variable: str, cron: str) -> None:
    settings = load_settings({"SERVICETITAN_APP_KEY": "ak1.not-used", variable: cron})
    with pytest.raises(SettingsError, match=f"^{variable} is not a cron expression"):
        build_definitions(settings)


def test_each_layers_owners_are_on_its_assets_for_the_catalogues_owner_filter() -> None:
    settings = load_settings(
        {
            "ST_PIPELINE_RAW_OWNERS": "team:data-platform",
            "ST_PIPELINE_HUB_OWNERS": " team:data-platform , hubs@example.com",
            "ST_PIPELINE_MART_OWNERS": "team:analytics,ana@example.com",
        }
    )
    graph = build_definitions(settings).resolve_asset_graph()
    owners = {key: tuple(graph.get(key).owners) for key in graph.get_all_asset_keys()}
    layers = {key: graph.get(key).tags.get("layer") for key in graph.get_all_asset_keys()}
    expected = {
        "raw": ("team:data-platform",),
        "hub": ("team:data-platform", "hubs@example.com"),
        "mart": ("team:analytics", "ana@example.com"),
    }
    assert all(owners[key] == expected[layer] for key, layer in layers.items() if layer)
    assert owners[TENANT_SYNC_KEY] == expected["raw"] and owners[TENANT_MODELS_KEY] == expected["hub"]
    marts = dg.AssetSelection.from_string('owner:"team:analytics"').resolve(graph)
    assert marts == {key for key, layer in layers.items() if layer == "mart"} and len(marts) >= 8
    assert len(dg.AssetSelection.from_string('owner:"team:data-platform"').resolve(graph)) == len(owners) - len(marts)
    # None configured (the default): no owners, the asset graph as it is.
    unowned = defs.resolve_asset_graph()
    assert not any(unowned.get(key).owners for key in unowned.get_all_asset_keys())


@pytest.mark.parametrize("owners", ["data-platform", "team:", "team:analytics,ana@", "ana@example"])
def test_an_owner_dagster_would_refuse_names_its_variable(owners: str) -> None:
    with pytest.raises(SettingsError, match="^ST_PIPELINE_MART_OWNERS holds an owner that is neither"):
        load_settings({"ST_PIPELINE_MART_OWNERS": owners})
