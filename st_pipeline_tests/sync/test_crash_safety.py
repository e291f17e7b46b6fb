"""Kill the syncing process with SIGKILL at many points; a re-run always ends exact."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.state import INTERRUPTED, SUCCEEDED
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import sync_log_table, sync_state_table
from st_pipeline_tests.support import assert_warehouse_equals_ground_truth
from st_pipeline_tests.sync.crash_child import EXTRA_DATASETS

TENANT = SimulatedTenant(tenant_id=9101, client_id="cid.crash", client_secret="cs1.crash-secret")
DATASETS = [load_catalogue().dataset(key) for key in (*CORE_DATASETS, *EXTRA_DATASETS)]
# (point, n): the n-th time the sync reaches the point. Between pages, mid-page (rows written,
# not committed), during the commit (cursor written, not committed), after commits, between datasets.
KILL_POINTS = [
    ("page_received", 1),
    ("page_received", 9),
    ("rows_written", 2),
    ("rows_written", 14),
    ("cursor_written", 1),
    ("cursor_written", 6),
    ("cursor_written", 17),
    ("page_committed", 4),
    ("page_committed", 20),
    ("dataset_finished", 1),
    ("dataset_finished", 5),
]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        tenants=[TENANT], seed=4, scale=0.03, export_batch_size=8, datasets=(*CORE_DATASETS, *EXTRA_DATASETS)
    )
    with Simulator(config) as simulator:
        yield simulator


def _sync(sim: Simulator, warehouse_url: str, run_id: str, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "st_pipeline_tests.sync.crash_child",
            sim.url,
            str(TENANT.tenant_id),
            TENANT.client_id,
            warehouse_url,
            run_id,
            *([kill_at] if kill_at else []),
        ],
        input=TENANT.client_secret + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(("point", "nth"), KILL_POINTS, ids=[f"{p}-{n}" for p, n in KILL_POINTS])
def test_sigkill_then_rerun_is_exact(sim: Simulator, tmp_path: Path, point: str, nth: int) -> None:
    warehouse_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(warehouse_url)
    upgrade(engine)

    crashed = _sync(sim, warehouse_url, "run-crashed", f"{point}:{nth}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    with engine.connect() as conn:
        cursors_after_crash = conn.execute(sa.select(sa.func.count()).select_from(sync_state_table)).scalar_one()

    rerun = _sync(sim, warehouse_url, "run-rerun", None)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_warehouse_equals_ground_truth(warehouse_url, sim, TENANT.tenant_id, DATASETS)

    log = sync_log_table.c
    with engine.connect() as conn:
        statuses = {
            (row.run_id, row.status)
            for row in conn.execute(sa.select(log.run_id, log.status).where(log.tenant_id == TENANT.tenant_id))
        }
        rerun_rows = list(conn.execute(sa.select(sync_log_table).where(log.run_id == "run-rerun")))
    # The crashed run is recorded as interrupted (or finished datasets as succeeded); the re-run succeeded.
    assert ("run-crashed", INTERRUPTED) in statuses
    assert {row.status for row in rerun_rows} == {SUCCEEDED} and len(rerun_rows) == len(DATASETS)
    if cursors_after_crash:
        # The re-run resumed: at least one dataset started from a cursor committed before the crash.
        assert any(row.cursor_before for row in rerun_rows)
    engine.dispose()
