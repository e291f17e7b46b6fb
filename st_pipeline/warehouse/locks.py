"""One sync of a tenant at a time, whoever launched it: a per-tenant lock in the warehouse.

PostgreSQL: a session-level advisory lock on a connection held for the sync. SQLite: an exclusive
``flock`` on a lock file beside the database. Both vanish with the process that holds them, so a
killed run never blocks its tenant. Who holds a lock is written to ``st_tenant_locks`` so that the
run that has to wait or give up can say which run is in the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.database import advisory_key, exclusive_lock, lock_file_is_held, upsert_state
from st_pipeline.warehouse.tables import tenant_lock_table


class TenantBusyError(RuntimeError):
    """Another run is syncing this tenant; this one changed nothing."""


def _lock_name(tenant_id: int) -> str:
    return f"tenant:{tenant_id}"


@contextmanager
def tenant_lock(engine: sa.Engine, tenant_id: int, run_id: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the tenant's sync lock for the block; ``TenantBusyError`` if another run keeps it past ``wait_s``."""
    with exclusive_lock(
        engine, _lock_name(tenant_id), wait_s=wait_s, busy=lambda: TenantBusyError(_busy_message(engine, tenant_id))
    ):
        _record_holder(engine, tenant_id, run_id)
        try:
            yield
        finally:
            forget_holder(engine, tenant_id, run_id)


def _record_holder(engine: sa.Engine, tenant_id: int, run_id: str) -> None:
    with engine.begin() as conn:
        holder = {"run_id": run_id, "acquired_at": datetime.now(UTC)}
        upsert_state(conn, tenant_lock_table, {"tenant_id": tenant_id}, holder)


def _busy_message(engine: sa.Engine, tenant_id: int) -> str:
    with engine.connect() as conn:
        holder = conn.execute(tenant_lock_table.select().where(tenant_lock_table.c.tenant_id == tenant_id)).first()
    who = f"run {holder.run_id} (since {holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC)" if holder else "another run"
    return (
        f"tenant {tenant_id} is being synced by {who}; this run changed nothing. Runs of one tenant never "
        "overlap: retry when that run has ended"
    )


def lock_holder(engine: sa.Engine, tenant_id: int) -> tuple[str, datetime] | None:
    """The run recorded as holding the tenant's lock, and since when; None if none is."""
    with engine.connect() as conn:
        row = conn.execute(tenant_lock_table.select().where(tenant_lock_table.c.tenant_id == tenant_id)).first()
    return (row.run_id, row.acquired_at) if row is not None else None


def lock_is_held(engine: sa.Engine, tenant_id: int) -> bool:
    """Whether a live process holds the tenant's lock right now.

    PostgreSQL: looked up in ``pg_locks`` without touching the lock. SQLite: the lock file is tried
    and released at once (a run that asks in that instant waits and retries).
    """
    if engine.dialect.name == "postgresql":
        unsigned = advisory_key(_lock_name(tenant_id)) & 0xFFFFFFFFFFFFFFFF
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
                        "AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1)"
                    ),
                    {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
                ).scalar_one()
            )
    return lock_file_is_held(engine, _lock_name(tenant_id))


def forget_holder(engine: sa.Engine, tenant_id: int, run_id: str) -> None:
    """Remove the record of a holder that died without releasing it (its lock went with it)."""
    with engine.begin() as conn:
        conn.execute(
            tenant_lock_table.delete().where(
                tenant_lock_table.c.tenant_id == tenant_id, tenant_lock_table.c.run_id == run_id
            )
        )
