"""The code location loads and shows one tenant-partitioned raw asset per extracted dataset."""

from __future__ import annotations

import dagster as dg

from st_pipeline.definitions import defs
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME
from st_pipeline.defs.raw_assets import raw_asset_key
from st_pipeline.servicetitan.catalogue import load_catalogue


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
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        assert partitions.name == TENANT_PARTITIONS_NAME
    assert graph.get(dg.AssetKey(["servicetitan", "raw", "crm", "customers"])).group_name == "servicetitan_crm"
    assert graph.get(dg.AssetKey(["servicetitan", "raw", "payroll", "gross_pay_items"])).group_name == "servicetitan_payroll"
