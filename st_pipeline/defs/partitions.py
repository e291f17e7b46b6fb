"""Tenants as dynamic partitions: one partition per ServiceTitan tenant id."""

from __future__ import annotations

import warnings

import dagster as dg

from st_pipeline.tenants.validation import InvalidTenantInput, tenant_id

TENANT_PARTITIONS_NAME = "tenants"

tenant_partitions = dg.DynamicPartitionsDefinition(name=TENANT_PARTITIONS_NAME)


def tenant_check_spec(name: str, asset: dg.AssetKey, description: str, *, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check of a tenant-partitioned asset, partitioned the same way: each tenant's result is its own.

    (A check without partitions shows one status for the asset, the latest tenant's, so tenant B
    passing would hide tenant A failing.) Dagster 1.13 marks partitioned checks as a preview and warns
    once per spec at load; the warning says nothing a user can act on, so it is not shown.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=tenant_partitions
        )


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
