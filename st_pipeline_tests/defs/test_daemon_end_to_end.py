"""End to end: dagster-daemon against a real instance launches scheduled runs for two tenants, one
run is killed mid-sync (marked failed, alerted, and the tenant's next run syncs), and the onboarding
sensor picks up a third tenant added through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import dagster as dg
import pytest

from st_pipeline.demo import LOCAL_DAGSTER_YAML
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.warehouse.schema import upgrade
from st_pipeline_tests.alerts.conftest import HttpReceiver
from st_pipeline_tests.killing import KILL_AT_VARIABLE, KILL_ONCE_FILE_VARIABLE
from st_pipeline_tests.support import REPO_ROOT

BIN = Path(sys.executable).parent
TENANTS = [
    SimulatedTenant(tenant_id=9901 + i, client_id=f"cid.daemon{i}", client_secret=f"cs1.daemon-secret-{i}")
    for i in range(3)
]
DEADLINE_S = 240


def _wait_for(condition: Callable[[], bool], what: str, daemon: subprocess.Popen[str]) -> None:
    """Poll an observable condition (runs in the instance) until it holds; fail with the daemon's log."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        assert daemon.poll() is None, "dagster-daemon exited"
        time.sleep(1)  # polling another process's progress, not synchronising threads
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture()
def environment(tmp_path: Path, local_env: Path, receiver: HttpReceiver) -> Iterator[tuple[dict[str, str], Simulator]]:
    config = SimulatorConfig(tenants=TENANTS, seed=12, scale=0.01)
    with Simulator(config) as sim:
        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text(LOCAL_DAGSTER_YAML)  # the demo's: monitored, queued per tenant
        kill_once = tmp_path / "kill-once"
        kill_once.touch()
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "SERVICETITAN_ENVIRONMENT": "custom",
            "SERVICETITAN_API_URL": sim.url,
            "SERVICETITAN_AUTH_URL": sim.auth_url,
            "SERVICETITAN_APP_KEY": config.app_key,
            "ST_PIPELINE_SYNC_CRON": "* * * * *",
            # The first run to commit a page dies there, by SIGKILL (the code location of `_workspace`).
            KILL_AT_VARIABLE: "page_committed:1",
            KILL_ONCE_FILE_VARIABLE: str(kill_once),
        }
        import sqlalchemy as sa

        upgrade(sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}"))
        yield env, sim


def _workspace(directory: Path) -> Path:
    """A workspace of the project's code location with the killing sync (``st_pipeline_tests.killing_location``)."""
    workspace = directory / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: st_pipeline_tests.killing_location\n"
        "      location_name: st_pipeline\n"
        f"      working_directory: {json.dumps(str(REPO_ROOT))}\n"
    )
    return workspace


def _add_tenant(env: dict[str, str], tenant: SimulatedTenant) -> None:
    added = subprocess.run(
        [
            str(BIN / "st-pipeline"),
            "tenant",
            "add",
            "--tenant",
            str(tenant.tenant_id),
            "--name",
            "Daemon Co",
            "--client-id",
            tenant.client_id,
        ],
        input=tenant.client_secret + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert added.returncode == 0, added.stderr


def test_daemon_runs_schedules_survives_a_killed_run_and_onboards_a_new_tenant(
    environment: tuple[dict[str, str], Simulator], receiver: HttpReceiver
) -> None:
    env, _ = environment
    first, second, third = TENANTS
    _add_tenant(env, first)
    _add_tenant(env, second)
    daemon = subprocess.Popen(
        [
            shutil.which("dagster-daemon", path=str(BIN)) or "dagster-daemon",
            "run",
            "-w",
            str(_workspace(Path(env["DAGSTER_HOME"]))),
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    try:
        with dg.DagsterInstance.get() as instance:

            def succeeded(partition: str, tag: str, value_prefix: str) -> bool:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition}))
                return any(
                    r.status == dg.DagsterRunStatus.SUCCESS and r.tags.get(tag, "").startswith(value_prefix)
                    for r in runs
                )

            for tenant in (first, second):
                _wait_for(
                    partial(succeeded, str(tenant.tenant_id), "dagster/schedule_name", "tenant_sync_schedule"),
                    f"a scheduled run of tenant {tenant.tenant_id}",
                    daemon,
                )
            # One run was killed: it is marked failed (not left STARTED), alerted, and its tenant synced since.
            [killed] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            killed_tenant = killed.tags["dagster/partition"]
            alerts: list[dict] = []

            def alerted() -> bool:
                alerts.extend(json.loads(r.body) for r in receiver.drain())
                return any(a["kind"] == "run_failure" and a["run_id"] == killed.run_id for a in alerts)

            _wait_for(alerted, "the run-failure alert of the killed run", daemon)
            later = instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/partition": killed_tenant}, statuses=[dg.DagsterRunStatus.SUCCESS])
            )
            assert any(run.run_id != killed.run_id for run in later)

            # A third tenant registered without touching Dagster: the onboarding sensor adds it.
            no_dagster = {k: v for k, v in env.items() if k != "DAGSTER_HOME"}
            _add_tenant(no_dagster, third)
            # Only the onboarding sensor adds partitions; whichever of its run or the next scheduled
            # run gets there first syncs the new tenant.
            _wait_for(
                lambda: str(third.tenant_id) in instance.get_dynamic_partitions("tenants"),
                "the onboarding sensor to add the third tenant's partition",
                daemon,
            )
            _wait_for(
                lambda: (
                    succeeded(str(third.tenant_id), "dagster/run_key", "onboard:")
                    or succeeded(str(third.tenant_id), "dagster/schedule_name", "tenant_sync_schedule")
                ),
                "a successful run of the third tenant",
                daemon,
            )
            onboarding = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": str(third.tenant_id)}))
            assert any(r.tags.get("dagster/run_key", "").startswith("onboard:") for r in onboarding)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
