"""The code location loads and shows one tenant-partitioned raw asset per core dataset."""

from __future__ import annotations

import dagster as dg

from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME
from st_pipeline.definitions import defs
from st_pipeline.servicetitan.catalogue import CORE_DATASETS


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_one_partitioned_raw_asset_per_core_dataset() -> None:
    graph = defs.resolve_asset_graph()
    raw_keys = {key.to_user_string() for key in graph.get_all_asset_keys() if key.path[:2] == ["servicetitan", "raw"]}
    expected = {"servicetitan/raw/" + key.replace("-", "_") for key in CORE_DATASETS}
    assert raw_keys == expected
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        assert partitions.name == TENANT_PARTITIONS_NAME
    assert graph.get(dg.AssetKey(["servicetitan", "raw", "crm", "customers"])).group_name == "servicetitan_crm"
