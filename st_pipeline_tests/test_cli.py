"""The commands a user types: `st-pipeline tenant add`, then `dagster asset materialize` (one dataset,
then the whole tenant)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.simulator import Simulator
from st_pipeline.warehouse.schema import HEAD_REVISION, current_revision
from st_pipeline.warehouse.tables import sync_log_table
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A
from st_pipeline_tests.support import assert_warehouse_equals_ground_truth

BIN = Path(sys.executable).parent
CUSTOMERS = load_catalogue().dataset("crm/customers")


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture()
def cli_env(local_env: Path, api_env: Simulator) -> dict[str, str]:
    dagster_home = local_env / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, "DAGSTER_HOME": str(dagster_home)}


def test_tenant_add_then_dagster_materialize(cli_env: dict[str, str], api_env: Simulator, local_env: Path) -> None:
    st_pipeline = str(BIN / "st-pipeline")
    added = _run(
        [
            st_pipeline,
            "tenant",
            "add",
            "--tenant",
            str(TENANT_A.tenant_id),
            "--name",
            "Tenant A",
            "--client-id",
            TENANT_A.client_id,
        ],
        cli_env,
        stdin=CANARY_SECRET + "\n",
    )
    assert added.returncode == 0, added.stderr
    assert f"Dagster partition {TENANT_A.tenant_id} added" in added.stdout
    listed = _run([st_pipeline, "tenant", "list"], cli_env)
    assert str(TENANT_A.tenant_id) in listed.stdout and "Tenant A" in listed.stdout

    # No `st-pipeline db upgrade`: the first run creates the empty warehouse's schema. It syncs one
    # dataset, as a user re-syncing one would: that dataset exactly, and nothing else.
    assert not (local_env / "warehouse.db").exists()
    dagster = shutil.which("dagster", path=str(BIN))
    assert dagster is not None, BIN
    one = _run(
        [
            dagster,
            "asset",
            "materialize",
            "-m",
            "st_pipeline.definitions",
            "--select",
            "servicetitan/raw/crm/customers",
            "--partition",
            str(TENANT_A.tenant_id),
        ],
        cli_env,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    warehouse_url = f"sqlite:///{local_env / 'warehouse.db'}"
    assert_warehouse_equals_ground_truth(warehouse_url, api_env, TENANT_A.tenant_id, [CUSTOMERS])
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        synced = set(conn.execute(sa.select(sync_log_table.c.dataset)).scalars())
    engine.dispose()
    assert synced == {CUSTOMERS.key}
    materialized = _run(
        [
            dagster,
            "asset",
            "materialize",
            "-m",
            "st_pipeline.definitions",
            "--select",
            "servicetitan/tenant_sync",
            "--partition",
            str(TENANT_A.tenant_id),
        ],
        cli_env,
    )
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    engine = sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}")
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()
    assert_warehouse_equals_ground_truth(f"sqlite:///{local_env / 'warehouse.db'}", api_env, TENANT_A.tenant_id)
    for output in (added, listed, one, materialized):
        assert CANARY_SECRET not in output.stdout + output.stderr


def test_tenant_add_with_wrong_secret_is_clear_and_stores_nothing(cli_env: dict[str, str]) -> None:
    st_pipeline = str(BIN / "st-pipeline")
    wrong = "cs1.WRONG-" + CANARY_SECRET
    env = {**cli_env, "TENANT_SECRET": wrong}
    added = _run(
        [
            st_pipeline,
            "tenant",
            "add",
            "--tenant",
            str(TENANT_A.tenant_id),
            "--name",
            "Tenant A",
            "--client-id",
            TENANT_A.client_id,
            "--client-secret-env",
            "TENANT_SECRET",
        ],
        env,
    )
    assert added.returncode == 1
    assert "rejected client id" in added.stderr and "nothing was stored" in added.stderr
    assert added.stderr.count("\n") == 1 and "Traceback" not in added.stderr
    assert wrong not in added.stdout + added.stderr
    listed = _run([st_pipeline, "tenant", "list"], cli_env)
    assert "no tenants registered" in listed.stdout


def test_tenant_add_without_encryption_key_stores_nothing(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "ST_PIPELINE_SECRET_KEYS"}
    added = _run(
        [str(BIN / "st-pipeline"), "tenant", "add", "--tenant", "1", "--name", "x", "--client-id", "cid.x"],
        env,
        stdin="cs1.secret\n",
    )
    assert added.returncode == 1 and "ST_PIPELINE_SECRET_KEYS" in added.stderr


def test_endpoints_lists_the_catalogue_and_flags_change_it(cli_env: dict[str, str]) -> None:
    st_pipeline = str(BIN / "st-pipeline")
    listed = _run([st_pipeline, "endpoints"], cli_env)
    assert listed.returncode == 0, listed.stderr
    assert "coverage: 134 of 147 datasets extracted" in listed.stdout
    customers = next(line for line in listed.stdout.splitlines() if line.split()[:2] == ["crm", "customers"])
    assert "export token" in customers and customers.rstrip().endswith("yes")
    images = next(line for line in listed.stdout.splitlines() if line.split()[:2] == ["pricebook", "images"])
    assert "not extracted" in images

    disabled = _run(
        [st_pipeline, "endpoints", "disable", "payroll", "--tenant", "42", "--reason", "no scopes"], cli_env
    )
    assert disabled.returncode == 0 and "payroll disabled for tenant 42" in disabled.stdout
    for_tenant = _run([st_pipeline, "endpoints", "--tenant", "42", "--module", "payroll"], cli_env)
    assert all("no scopes" in line for line in for_tenant.stdout.splitlines()[1:] if line.startswith("payroll"))
    other_tenant = _run([st_pipeline, "endpoints", "--tenant", "43", "--module", "payroll"], cli_env)
    assert "no scopes" not in other_tenant.stdout

    wrong = _run([st_pipeline, "endpoints", "disable", "payrol"], cli_env)
    assert wrong.returncode == 1 and "neither a module nor a dataset" in wrong.stderr
