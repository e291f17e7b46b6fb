"""Many tenants' first runs arrive together (onboarding a fleet): their builds create the hub and mart
tables once between them, and all succeed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from st_pipeline.transform.build import build_tenant
from st_pipeline.transform.hubs import HUB_TABLES
from st_pipeline.warehouse.engine import create_warehouse_engine
from st_pipeline.warehouse.schema import upgrade


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_first_builds_of_several_tenants_at_once_all_succeed(
    kind: str, tmp_path: Path, fresh_postgres: Callable[[], str]
) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}" if kind == "sqlite" else fresh_postgres()
    upgrade(create_warehouse_engine(url))
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def first_build(tenant_id: int) -> None:
        engine = create_warehouse_engine(url)  # each run has its own process, so its own engine
        try:
            start.wait(timeout=60)
            build_tenant(engine, tenant_id, f"run-{tenant_id}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=first_build, args=(tenant,)) for tenant in (11, 12, 13, 14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    engine = create_warehouse_engine(url)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {spec.table_name for spec in HUB_TABLES} <= tables
