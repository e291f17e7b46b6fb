"""The daily reports schedule: per enabled tenant with a partition, one run per trailing day of its
calendar, each selecting that tenant's enabled reports whose window reaches the day and whose asset
the code location has."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
from pydantic import SecretStr

from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.reports import build_reports_schedule, report_asset_key, report_partition_key
from st_pipeline.defs.resources import TenantRegistryResource
from st_pipeline.settings import load_settings
from st_pipeline.tenants.registry import Change, TenantRegistry

CHANGE = Change("test")


def test_each_tenant_gets_its_trailing_days_with_the_reports_whose_window_reaches_them(local_env: Path) -> None:
    registry = TenantRegistry.open(load_settings())
    tenants = {  # tenant id: (time zone, enabled, has a partition)
        9721: ("America/Chicago", True, True),
        9722: (None, True, True),
        9723: (None, True, False),  # not onboarded yet
        9724: (None, False, True),  # disabled
        9725: (None, True, True),  # no reports
    }
    for tenant_id, (zone, enabled, _) in tenants.items():
        registry.add(
            tenant_id, f"t{tenant_id}", f"cid.{tenant_id}", SecretStr("cs1.x"), change=CHANGE, enabled=enabled,
            time_zone=zone,
        )  # fmt: skip
    declare = registry.declare_report
    declare(9721, "bu_performance", "operations", 1001, window_days=3, change=CHANGE)
    declare(9721, "technician_hours", "custom", 1005, window_days=1, change=CHANGE)
    declare(9721, "collections", "accounting", 1004, window_days=5, change=CHANGE)
    registry.set_report_enabled(9721, "collections", False, change=CHANGE)
    declare(9722, "bu_performance", "operations", 1001, window_days=2, change=CHANGE)
    declare(9722, "declared_after_load", "custom", 1005, window_days=4, change=CHANGE)
    for tenant_id in (9723, 9724):
        declare(tenant_id, "bu_performance", "operations", 1001, change=CHANGE)
    registry.close()

    # The code location loaded before `declared_after_load` was declared.
    schedule = build_reports_schedule(["bu_performance", "technician_hours", "collections"])
    at = datetime(2024, 3, 10, 3, 0, tzinfo=UTC)  # still the 9th in Chicago
    with dg.instance_for_test() as instance:
        for tenant_id, (_, _, partition) in tenants.items():
            if partition:
                add_tenant_partition(instance, tenant_id)
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=at, resources={"tenant_registry": TenantRegistryResource()}
        ) as context:
            evaluation = schedule(context)
    assert isinstance(evaluation, list)
    requests = [(r.partition_key, sorted(k.path[-1] for k in r.asset_selection or ())) for r in evaluation]
    assert requests == [
        (report_partition_key(9721, date(2024, 3, 8)), ["bu_performance", "technician_hours"]),
        (report_partition_key(9721, date(2024, 3, 7)), ["bu_performance"]),
        (report_partition_key(9721, date(2024, 3, 6)), ["bu_performance"]),
        (report_partition_key(9722, date(2024, 3, 9)), ["bu_performance"]),
        (report_partition_key(9722, date(2024, 3, 8)), ["bu_performance"]),
    ]
    assert all(key == report_asset_key(key.path[-1]) for r in evaluation for key in r.asset_selection or ())
    assert len({r.run_key for r in evaluation}) == len(evaluation)  # one run per tenant, day and tick
