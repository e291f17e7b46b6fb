"""Tenants as dynamic partitions: one partition per ServiceTitan tenant id."""

from __future__ import annotations

import dagster as dg

from st_pipeline.tenants.validation import InvalidTenantInput, tenant_id

TENANT_PARTITIONS_NAME = "tenants"

tenant_partitions = dg.DynamicPartitionsDefinition(name=TENANT_PARTITIONS_NAME)


def add_tenant_partition(instance: dg.DagsterInstance, tenant: int) -> bool:
    """Add the tenant's partition; False if it already existed."""
    key = str(tenant_id(tenant))
    if instance.has_dynamic_partition(TENANT_PARTITIONS_NAME, key):
        return False
    instance.add_dynamic_partitions(TENANT_PARTITIONS_NAME, [key])
    return True


def remove_tenant_partition(instance: dg.DagsterInstance, tenant: int) -> bool:
    """Remove the tenant's partition (its run history stays); False if there was none."""
    key = str(tenant_id(tenant))
    if not instance.has_dynamic_partition(TENANT_PARTITIONS_NAME, key):
        return False
    instance.delete_dynamic_partition(TENANT_PARTITIONS_NAME, key)
    return True


def tenant_id_of(partition_key: str) -> int:
    """The tenant id of a partition key, with a clear error for anything that is not one."""
    try:
        return tenant_id(partition_key)
    except InvalidTenantInput as exc:
        raise dg.Failure(
            f"partition {partition_key!r} is not a ServiceTitan tenant: {exc}; tenant partitions are added by "
            "`st-pipeline tenant add`"
        ) from None
