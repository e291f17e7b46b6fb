"""One sync of a tenant at a time, whoever launched it: a per-tenant lock in the warehouse.

PostgreSQL: a session-level advisory lock on a connection held for the sync. SQLite: an exclusive
``flock`` on a lock file beside the database. Both vanish with the process that holds them, so a
killed run never blocks its tenant. Who holds a lock is written to ``st_tenant_locks`` so that the
run that has to wait or give up can say which run is in the way.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from st_pipeline.warehouse.tables import tenant_lock_table

# How often a waiting run tries again. The wait itself is bounded by the caller's ``wait_s``.
RETRY_INTERVAL_S = 0.5


class TenantBusyError(RuntimeError):
    """Another run is syncing this tenant; this one changed nothing."""


def advisory_key(tenant_id: int) -> int:
    """A signed 64-bit advisory-lock key for the tenant, unlikely to meet another application's."""
    digest = hashlib.blake2b(f"st_pipeline.tenant:{tenant_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def tenant_lock(engine: sa.Engine, tenant_id: int, run_id: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the tenant's sync lock for the block; ``TenantBusyError`` if another run keeps it past ``wait_s``."""
    if engine.dialect.name == "postgresql":
        acquire = _postgres_lock(engine, advisory_key(tenant_id))
    else:
        acquire = _file_lock(engine, f"tenant-{tenant_id}")
    with acquire as try_lock:
        deadline = time.monotonic() + max(0.0, wait_s)
        while not try_lock():
            if time.monotonic() >= deadline:
                raise TenantBusyError(_busy_message(engine, tenant_id))
            time.sleep(RETRY_INTERVAL_S)  # waiting on another process's lock, bounded by wait_s
        _record_holder(engine, tenant_id, run_id)
        try:
            yield
        finally:
            with engine.begin() as conn:
                conn.execute(tenant_lock_table.delete().where(
                    tenant_lock_table.c.tenant_id == tenant_id, tenant_lock_table.c.run_id == run_id
                ))


@contextmanager
def _postgres_lock(engine: sa.Engine, key: int) -> Iterator[object]:
    conn = engine.connect()
    held = False

    def try_lock() -> bool:
        nonlocal held
        held = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one())
        conn.commit()
        return held

    try:
        yield try_lock
    finally:
        try:
            if held:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
        finally:
            conn.close()


@contextmanager
def _file_lock(engine: sa.Engine, name: str) -> Iterator[object]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield lambda: True  # one process, one connection: nothing to share the tenant with
        return
    path = Path(f"{database}.{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def try_lock() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        yield try_lock
    finally:
        os.close(fd)  # closing releases the lock


def _record_holder(engine: sa.Engine, tenant_id: int, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(tenant_lock_table.delete().where(tenant_lock_table.c.tenant_id == tenant_id))
        conn.execute(tenant_lock_table.insert().values(tenant_id=tenant_id, run_id=run_id, acquired_at=datetime.now(UTC)))


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
        unsigned = advisory_key(tenant_id) & 0xFFFFFFFFFFFFFFFF
        with engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
                "AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1)"
            ), {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}).scalar_one())
    with _file_lock(engine, f"tenant-{tenant_id}") as try_lock:
        return not try_lock()


def forget_holder(engine: sa.Engine, tenant_id: int, run_id: str) -> None:
    """Remove the record of a holder that died without releasing it (its lock went with it)."""
    with engine.begin() as conn:
        conn.execute(tenant_lock_table.delete().where(
            tenant_lock_table.c.tenant_id == tenant_id, tenant_lock_table.c.run_id == run_id
        ))


# One key for every change of the warehouse's tables (creating raw, hub and mart tables on demand).
SCHEMA_CHANGE_KEY = advisory_key(0)
SCHEMA_CHANGE_WAIT_S = 300.0


@contextmanager
def schema_change_lock(
    engine: sa.Engine, wait_s: float = SCHEMA_CHANGE_WAIT_S, *, database: str = "warehouse"
) -> Iterator[None]:
    """Be the only process changing the database's tables for the block (wrap the transaction in it).

    Runs of different tenants create tables on demand, and the first use of an empty warehouse or
    registry creates its schema; without this, two first runs at once both see a table missing and
    the second's CREATE fails. Inspect inside the block. PostgreSQL: an advisory lock (per
    database); SQLite: a lock file beside the database. Waits at most ``wait_s``. ``database``
    names it in the timeout message. Not re-entrant: never call it inside itself.
    """
    if engine.dialect.name == "postgresql":
        acquire = _postgres_lock(engine, SCHEMA_CHANGE_KEY)
    else:
        acquire = _file_lock(engine, "schema")
    with acquire as try_lock:
        deadline = time.monotonic() + wait_s
        while not try_lock():
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"another process kept the {database}'s schema-change lock for {wait_s:.0f} s (creating "
                    "tables); retry the run, and look for a stuck st-pipeline process if it happens again"
                )
            time.sleep(RETRY_INTERVAL_S)  # waiting on another process's lock, bounded by the deadline
        yield
