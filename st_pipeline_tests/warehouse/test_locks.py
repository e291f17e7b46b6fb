"""The per-tenant sync lock on SQLite and the real PostgreSQL: one holder per tenant, a clear refusal
naming the holder, and a lock that dies with its process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from st_pipeline.warehouse.engine import create_warehouse_engine
from st_pipeline.warehouse.locks import TenantBusyError, lock_holder, lock_is_held, tenant_lock
from st_pipeline.warehouse.schema import upgrade

HOLDER = """
import sys
from st_pipeline.warehouse.engine import create_warehouse_engine
from st_pipeline.warehouse.locks import tenant_lock
with tenant_lock(create_warehouse_engine(sys.argv[1]), 7, "run-in-child"):
    print("held", flush=True)
    sys.stdin.read()  # until the parent kills it
"""


def _holder_run_id(engine: sa.Engine, tenant_id: int) -> str:
    """The run recorded as holding the tenant's lock; fails the test if none is recorded."""
    holder = lock_holder(engine, tenant_id)
    assert holder is not None, f"no holder recorded for tenant {tenant_id}"
    return holder[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'w.db'}" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres")()
    engine = create_warehouse_engine(url)
    upgrade(engine)
    yield url, engine
    engine.dispose()


def test_one_holder_per_tenant_and_a_refusal_that_names_it(warehouse: tuple[str, sa.Engine]) -> None:
    _, engine = warehouse
    with tenant_lock(engine, 7, "run-a"):
        assert lock_is_held(engine, 7) and _holder_run_id(engine, 7) == "run-a"
        with pytest.raises(TenantBusyError, match="tenant 7 is being synced by run run-a .*changed nothing"):
            with tenant_lock(engine, 7, "run-b", wait_s=0):
                pass  # pragma: no cover
        with tenant_lock(engine, 8, "run-c"):  # another tenant is not held up
            assert lock_is_held(engine, 8)
    assert not lock_is_held(engine, 7) and lock_holder(engine, 7) is None
    with tenant_lock(engine, 7, "run-b"):
        assert _holder_run_id(engine, 7) == "run-b"


def test_the_lock_dies_with_its_process_and_its_record_stays(warehouse: tuple[str, sa.Engine]) -> None:
    url, engine = warehouse
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert lock_is_held(engine, 7)
        with pytest.raises(TenantBusyError, match="run-in-child"):
            with tenant_lock(engine, 7, "run-b", wait_s=0):
                pass  # pragma: no cover
    finally:
        child.kill()
        child.wait(timeout=30)
    # Killed: the lock went with the process; the record of the holder is what tells it died.
    assert not lock_is_held(engine, 7) and _holder_run_id(engine, 7) == "run-in-child"
    with tenant_lock(engine, 7, "run-b"):
        assert _holder_run_id(engine, 7) == "run-b"
