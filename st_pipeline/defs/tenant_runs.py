"""What the two tenant steps (the sync and the models build) do alike: read a run's flag tag, and
hold the tenant's lock or fail the run saying which run holds it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import dagster as dg
import sqlalchemy as sa

from st_pipeline.warehouse.locks import TenantBusyError, tenant_lock


def run_flag(context: dg.AssetExecutionContext, tag: str) -> bool:
    """Whether the run carries ``tag`` set to ``true`` (any case), as a launcher or sensor sets it."""
    return context.run.tags.get(tag, "").lower() == "true"


@contextmanager
def holding_tenant_lock(
    context: dg.AssetExecutionContext, engine: sa.Engine, tenant_id: int, wait_s: float
) -> Iterator[None]:
    """The tenant's lock for the block; a ``dg.Failure`` naming the run in the way if it stays taken."""
    with ExitStack() as held:
        try:
            held.enter_context(tenant_lock(engine, tenant_id, context.run.run_id, wait_s=wait_s))
        except TenantBusyError as exc:
            raise dg.Failure(str(exc), metadata={"error_type": "TenantBusyError", "tenant_id": tenant_id}) from None
        yield
