"""The sync job brings a tenant's hub tables and marts up to date in the same run: hub and mart
assets reported with their standard metadata, previews, headline figures and checks; a run that
changed nothing reports none of them; a full rebuild is one tag away; the asset graph reads
raw → hub → mart."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from st_pipeline.defs.models import FULL_REBUILD_TAG, TENANT_MODELS_KEY, hub_asset_key, mart_asset_key, tenant_models
from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY, raw_asset_key
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import SYNC_JOB, TENANT_SYNC_OP, sync_job
from st_pipeline.defs.tenant_sync import tenant_sync
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import load_settings
from st_pipeline.simulator import Simulator
from st_pipeline.tenants.registry import Change, TenantRegistry
from st_pipeline.transform.hubs import HUB_TABLES, hub, source_datasets
from st_pipeline.transform.marts import MARTS
from st_pipeline.warehouse.schema import upgrade
from st_pipeline_tests.conftest import TENANT_A, point_at_simulator
from st_pipeline_tests.support import check_evaluations, materializations, metadata_value, register_tenants

SOURCES = list(source_datasets())


def _definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[tenant_sync, tenant_models],
        jobs=[sync_job],
        resources={
            "servicetitan": ServiceTitanResource(),
            "tenant_registry": TenantRegistryResource(),
            "warehouse": WarehouseResource(),
        },
    )


def _run(instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    result = (
        _definitions()
        .resolve_job_def(SYNC_JOB)
        .execute_in_process(
            instance=instance,
            partition_key=str(TENANT_A.tenant_id),
            tags=tags or {},
            run_config={"ops": {TENANT_SYNC_OP: {"config": {"datasets": SOURCES}}}},
        )
    )
    assert result.success
    return result


def _reported(instance: dg.DagsterInstance, run_id: str) -> dict[dg.AssetKey, Mapping[str, dg.MetadataValue]]:
    return {m.asset_key: m.metadata for m in materializations(instance, run_id)}


def test_sync_job_builds_hubs_and_marts_and_reports_only_what_changed(
    local_env: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at_simulator(monkeypatch, simulator)
    register_tenants(None, TENANT_A)
    engine = sa.create_engine(load_settings().warehouse_database_url)
    upgrade(engine)
    hubs = {hub_asset_key(spec) for spec in HUB_TABLES}
    marts = {mart_asset_key(mart) for mart in MARTS}
    with dg.instance_for_test() as instance:
        add_tenant_partition(instance, TENANT_A.tenant_id)
        first = _run(instance)
        reported = _reported(instance, first.run_id)
        first_checks = check_evaluations(instance, first.run_id)
        quiet = _run(instance)
        quiet_reported = _reported(instance, quiet.run_id)
        quiet_events = len(instance.all_logs(quiet.run_id))
        registry = TenantRegistry.open(load_settings())
        registry.set_time_zone(TENANT_A.tenant_id, "America/Chicago", change=Change("test"))
        registry.close()
        rezoned_reported = _reported(instance, _run(instance).run_id)
        rebuilt = _run(instance, tags={FULL_REBUILD_TAG: "true"})
        rebuilt_reported = _reported(instance, rebuilt.run_id)

    assert hubs <= set(reported) and marts <= set(reported)
    invoices = reported[hub_asset_key(hub("invoices"))]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT count(*) FROM hub_invoices WHERE tenant_id = :t"), {"t": TENANT_A.tenant_id}
        ).scalar_one()
        invoice_ids = set(
            conn.execute(
                sa.text("SELECT id FROM hub_invoices WHERE tenant_id = :t"), {"t": TENANT_A.tenant_id}
            ).scalars()
        )
    assert invoices["dagster/row_count"].value == rows > 0
    assert invoices["build"].value == "full" and invoices["share_reprocessed"].value == 1.0
    preview = invoices["preview"]
    assert isinstance(preview, dg.TableMetadataValue)  # a table the UI renders, not Markdown text
    assert preview.schema.columns[0].name == "id" and "tenant_id" not in {c.name for c in preview.schema.columns}
    assert 1 <= len(preview.records) <= 5 and {r.data["id"] for r in preview.records} <= invoice_ids
    revenue = reported[mart_asset_key(next(m for m in MARTS if m.name == "revenue_by_business_unit"))]
    assert metadata_value(revenue, "completed_revenue_last_30_days", float) > 0
    models = reported[TENANT_MODELS_KEY]
    assert models["hubs_changed"].value == len(HUB_TABLES) and models["marts_rebuilt"].value == len(MARTS)
    checked = {(e.asset_key, e.check_name) for e in first_checks}
    assert (hub_asset_key(hub("invoices")), "money_reconciles_with_raw") in checked
    assert (hub_asset_key(hub("payment_applications")), "referential_integrity") in checked
    assert all(e.passed for e in first_checks if e.asset_key in hubs | marts), [
        (e.asset_key, e.check_name, e.description) for e in first_checks if not e.passed
    ]

    # Nothing changed upstream: the tenant was checked, no hub or mart is reported.
    assert set(quiet_reported) == {TENANT_SYNC_KEY, TENANT_MODELS_KEY}
    assert quiet_reported[TENANT_MODELS_KEY]["hubs_changed"].value == 0
    assert quiet_events <= 40  # two steps and their materializations, no per-table events
    # The tenant's time zone changed in the registry: every mart is rebuilt in its new calendar.
    assert marts <= set(rezoned_reported) and not hubs & set(rezoned_reported)
    assert {metadata_value(rezoned_reported[m], "build", str) for m in marts} == {"full"}
    with engine.connect() as conn:
        zones = conn.execute(
            sa.text("SELECT fingerprint FROM st_transform_state WHERE tenant_id = :t AND table_name LIKE 'mart_%'"),
            {"t": TENANT_A.tenant_id},
        ).scalars()
        assert {fingerprint.split("@")[1].split("#")[0] for fingerprint in zones} == {"America/Chicago"}
    # A full rebuild reports every hub table and mart again.
    assert hubs | marts <= set(rebuilt_reported)
    assert rebuilt_reported[TENANT_MODELS_KEY]["build"].value == "full"
    engine.dispose()


def test_asset_graph_reads_raw_to_hub_to_mart() -> None:
    graph = _definitions().resolve_asset_graph()
    catalogue = load_catalogue()
    invoices = hub_asset_key(hub("invoices"))
    # A hub table hangs off its raw table and off the models build that writes it.
    assert graph.get(invoices).parent_keys == {
        raw_asset_key(catalogue.dataset("accounting/invoices")),
        TENANT_MODELS_KEY,
    }
    revenue = mart_asset_key(next(m for m in MARTS if m.name == "revenue_by_business_unit"))
    assert graph.get(revenue).parent_keys == {hub_asset_key(hub("invoice_items")), invoices, hub_asset_key(hub("jobs"))}
    assert graph.get(TENANT_MODELS_KEY).parent_keys == {TENANT_SYNC_KEY}
    schema = graph.get(invoices).metadata["dagster/column_schema"]
    names = [c.name for c in schema.columns]
    assert names[:2] == ["tenant_id", "id"] and "total" in names
    total = next(c for c in schema.columns if c.name == "total")
    assert total.type == "numeric(19,4)" and total.description == "From the raw payload.total."
    assert all(c.description for c in schema.columns)
    # The graph's groups and keys are pinned by the snapshot in test_asset_graph.py.
