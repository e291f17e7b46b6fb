"""Tenants as dynamic partitions: one partition per ServiceTitan tenant id."""

from __future__ import annotations

import dagster as dg

TENANT_PARTITIONS_NAME = "tenants"

tenant_partitions = dg.DynamicPartitionsDefinition(name=TENANT_PARTITIONS_NAME)


def add_tenant_partition(instance: dg.DagsterInstance, tenant_id: int) -> bool:
    """Add the tenant's partition; False if it already existed."""
    key = str(int(tenant_id))
    if instance.has_dynamic_partition(TENANT_PARTITIONS_NAME, key):
        return False
    instance.add_dynamic_partitions(TENANT_PARTITIONS_NAME, [key])
    return True


def tenant_id_of(partition_key: str) -> int:
    """The tenant id of a partition key, with a clear error for anything that is not one."""
    try:
        return int(partition_key)
    except (TypeError, ValueError):
        raise dg.Failure(
            f"partition {partition_key!r} is not a ServiceTitan tenant id (an integer); "
            "tenant partitions are added by `st-pipeline tenant add`"
        ) from None
