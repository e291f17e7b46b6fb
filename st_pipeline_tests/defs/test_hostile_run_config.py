"""Whoever can launch a run cannot send a secret, a token or the data anywhere else.

Runs are launched with hostile run config and tags pointing the token URL, the API URL and the
warehouse and registry at a local listener of the test, through Dagster's GraphQL API (a real
``dagster-webserver`` with its code server) and through ``dagster asset materialize
--config-json``. The listener must hear nothing; a legitimate run launched with hostile tags
still goes where the deployment says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY
from st_pipeline.defs.schedules import TENANT_SYNC_OP
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.simulator import Simulator
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import raw_table
from st_pipeline_tests.conftest import CANARY_SECRET, TENANT_A
from st_pipeline_tests.support import REPO_ROOT, TrapListener, free_port, register_tenants, wait_for

BIN = Path(sys.executable).parent
DEADLINE_S = 180
DATASETS = ["crm/customers", "settings/business-units"]

LAUNCH = """
mutation($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}"""
RUN_STATUS = """query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"""
LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


@pytest.fixture()
def deployment_env(local_env: Path, api_env: Simulator, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The deployment: simulator, registry with tenant A, upgraded SQLite warehouse, a Dagster home."""
    register_tenants(None, TENANT_A)
    upgrade(sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}"))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # Runs launch at once (no daemon to drain a queue).
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        add_tenant_partition(instance, TENANT_A.tenant_id)
    yield {**os.environ, "DAGSTER_HOME": str(dagster_home)}


def _hostile_configs(trap: str) -> list[dict[str, Any]]:
    return [
        {"resources": {"servicetitan": {"config": {"auth_url": f"{trap}/connect/token"}}}},
        {"resources": {"servicetitan": {"config": {"api_url": trap, "environment": "custom"}}}},
        {"resources": {"warehouse": {"config": {"url": f"postgresql://x:y@{trap.removeprefix('http://')}/w"}}}},
        {"resources": {"tenant_registry": {"config": {"url": f"postgresql://{trap.removeprefix('http://')}/r"}}}},
        {"resources": {"alerting": {"config": {"ui_url": trap}}}},
    ]


def test_hostile_run_config_and_tags_send_nothing_elsewhere(
    deployment_env: dict[str, str], api_env: Simulator, local_env: Path
) -> None:
    trap = TrapListener()
    port = free_port()
    webserver = subprocess.Popen(
        [
            shutil.which("dagster-webserver", path=str(BIN)) or "dagster-webserver",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=deployment_env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    graphql = f"http://127.0.0.1:{port}/graphql"
    try:
        with httpx.Client(timeout=30) as http:

            def query(document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
                answer = http.post(graphql, json={"query": document, "variables": variables or {}})
                answer.raise_for_status()
                return answer.json()["data"]

            def location_loaded() -> bool:
                try:
                    entries = query(LOCATIONS)["workspaceOrError"]["locationEntries"]
                except httpx.HTTPError:
                    return False
                return any(
                    e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                    for e in entries
                )

            wait_for(location_loaded, "the code location to load", [webserver], DEADLINE_S)

            def launch(run_config: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
                params = {
                    "selector": {
                        "repositoryLocationName": "st_pipeline",
                        "repositoryName": "__repository__",
                        "pipelineName": "servicetitan_sync",
                    },
                    "runConfigData": run_config,
                    "mode": "default",
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                }
                return query(LAUNCH, {"executionParams": params})["launchPipelineExecution"]

            partition = {"dagster/partition": str(TENANT_A.tenant_id)}
            for hostile in _hostile_configs(trap.url):
                refused = launch(hostile, partition)
                assert refused["__typename"] == "RunConfigValidationInvalid", (hostile, refused)

            # Allowed run config, hostile tags: the run goes where the deployment says, nowhere else.
            tags = {
                **partition,
                "SERVICETITAN_AUTH_URL": f"{trap.url}/connect/token",
                "st_pipeline/auth_url": f"{trap.url}/connect/token",
                "st_pipeline/warehouse_url": f"sqlite:///{local_env / 'stolen.db'}",
                "dagster-k8s/config": json.dumps(
                    {"container_config": {"env": [{"name": "SERVICETITAN_AUTH_URL", "value": trap.url}]}}
                ),
            }
            launched = launch({"ops": {TENANT_SYNC_OP: {"config": {"full_refresh": True, "datasets": DATASETS}}}}, tags)
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]
            status = wait_for(
                lambda: (
                    (s := query(RUN_STATUS, {"runId": run_id})["runOrError"].get("status"))
                    in ("SUCCESS", "FAILURE", "CANCELED")
                    and s
                ),
                "the launched run to finish",
                [webserver],
                DEADLINE_S,
            )
            assert status == "SUCCESS"
    finally:
        webserver.terminate()
        webserver.wait(timeout=60)

    # The same through the command line.
    for hostile in _hostile_configs(trap.url)[:4]:
        materialized = subprocess.run(
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                "-m",
                "st_pipeline.definitions",
                "--select",
                TENANT_SYNC_KEY.to_user_string(),
                "--partition",
                str(TENANT_A.tenant_id),
                "--config-json",
                json.dumps({**hostile, "ops": {TENANT_SYNC_OP: {"config": {"datasets": DATASETS}}}}),
            ],
            env=deployment_env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert materialized.returncode != 0
        assert "DagsterInvalidConfigError" in materialized.stderr or "Error in config" in materialized.stderr
        assert CANARY_SECRET not in materialized.stdout + materialized.stderr
    trap.close()

    assert trap.received == []
    assert not (local_env / "stolen.db").exists()
    engine = sa.create_engine(f"sqlite:///{local_env / 'warehouse.db'}")
    with engine.connect() as conn:
        table = raw_table(load_catalogue().dataset("crm/customers"))
        rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    engine.dispose()
    assert rows == len(api_env.ground_truth(TENANT_A.tenant_id, "crm/customers"))
